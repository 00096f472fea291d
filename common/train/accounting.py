"""What a training step costs, predicted from the shapes: parameters, FLOPs, memory.

FLOPs (docs/notation.md states this once): a matrix product (m x k) @ (k x n) costs 2 m k n
multiply-adds counted as FLOPs. A Linear of fan-in k, fan-out n run on m tokens costs 2 m k n in
the forward pass and twice that in the backward (the gradient of the input, dX = dY W^T, and of
the weight, dW = X^T dY), so 6 m k n per step. Summed over the weight matrices that every token
passes through (N_mat of them, the LM head included, embeddings and norms excluded):

    C_step = 6 N_mat D  +  12 B h T_q T_k d_k per attention layer,   D = B T tokens

the second term being Q K^T and P V (2 B h T_q T_k d_k each forward, 3x that with the backward).
The textbook attention computes the whole T_q x T_k score matrix, masked or not.

Memory of training in float32 (4 bytes a number) with AdamW:

    weights 4 N  +  gradients 4 N  +  AdamW state 8 N (m and v)  +  activations

where the activations are what autograd keeps from the forward pass for the backward, per layer
(each family's accounting.py counts them tensor by tensor). The measured peak of a step
(common/train/measure.py) is compared with this in tests/test_accounting.py.

Each family's `accounting.estimate(config, batch_size, seq_len)` fills a TrainingCost; this module
holds the parts every family shares.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from common.errors import UserError

FLOAT_BYTES = 4  # float32


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    """6 m k n: a Linear's forward (2 m k n) and backward (dX and dW, 2 m k n each)."""
    return 6 * tokens * fan_in * fan_out


def attention_flops(batch: int, heads: int, T_q: int, T_k: int, head_dim: int) -> int:
    """12 B h T_q T_k d_k: Q K^T and P V, forward and backward."""
    return 12 * batch * heads * T_q * T_k * head_dim


@dataclass
class TrainingCost:
    """One training step's predicted cost. Memory in bytes; `activations` maps a part of the model
    ("embeddings", "layer 1", ..., "head") to the bytes autograd keeps for it."""

    model_type: str
    parameters: int
    flops: int  # per step, forward + backward
    activations: dict[str, int] = field(default_factory=dict)
    transient: int = 0  # bytes beside the activations at the start of the backward pass
    bytes_per_number: int = FLOAT_BYTES

    @property
    def weights(self) -> int:
        return self.bytes_per_number * self.parameters

    @property
    def gradients(self) -> int:
        return self.bytes_per_number * self.parameters

    @property
    def adamw_state(self) -> int:
        return 2 * self.bytes_per_number * self.parameters  # exp_avg and exp_avg_sq

    @property
    def activation_bytes(self) -> int:
        return sum(self.activations.values())

    @property
    def peak(self) -> int:
        """weights + AdamW state + max(activations + transient, gradients).

        The peak comes at the start of the backward pass: every activation is still kept, and the
        first gradients of the largest tensors (the loss's (B, T, V) or attention's (B, h, T, T))
        exist beside them (`transient`, each family's count); gradients of the weights then grow
        as activations are freed, which is the peak only when the weights outweigh the activations."""
        return self.weights + self.adamw_state + max(self.activation_bytes + self.transient, self.gradients)

    def checkpointed(self, kept: dict[str, int], block_transient: int, forward_flops: int) -> "TrainingCost":
        """The same step with gradient checkpointing: each block named in `kept` keeps only the bytes
        given there (its input, B T d numbers), and the backward pass recomputes one block at a time
        (forward_flops more in all), so the largest block's activations come back, with its first
        gradients (`block_transient`), beside everything kept."""
        recomputed = max(self.activations[name] for name in kept)
        activations = {name: kept.get(name, nbytes) for name, nbytes in self.activations.items()}
        return TrainingCost(self.model_type, self.parameters, self.flops + forward_flops, activations,
                            max(self.transient, recomputed + block_transient), self.bytes_per_number)

    def table(self) -> str:
        mib = 2.0**20
        lines = [f"{self.model_type}: {self.parameters:,} parameters, "
                 f"{self.flops / 1e9:,.3f} GFLOP per step (forward + backward)",
                 f"  weights       {self.weights / mib:10.1f} MiB",
                 f"  gradients     {self.gradients / mib:10.1f} MiB",
                 f"  AdamW state   {self.adamw_state / mib:10.1f} MiB",
                 f"  activations   {self.activation_bytes / mib:10.1f} MiB"]
        lines += [f"    {name:12s}{nbytes / mib:10.1f} MiB" for name, nbytes in self.activations.items()]
        lines.append(f"  peak (predicted) {self.peak / mib:7.1f} MiB")
        return "\n".join(lines)


def count_parameters(model: torch.nn.Module) -> int:
    """The parameters the optimizer updates: each tensor once (tied weights count once)."""
    return sum(p.numel() for p in model.parameters())


def unknown_model_type(model_type, known, where: str = "") -> UserError:
    """The one-line error for a model type no family accounts for."""
    prefix = f"{where}: " if where else ""
    return UserError(f"{prefix}no cost accounting for model type {model_type!r}; known: {', '.join(sorted(known))}")
