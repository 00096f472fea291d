"""Head pruning (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?").

Put a gate xi_h in front of W^O on the output of every head h (xi = 1 is the model as it is):

    MultiHead(X) = Concat(xi_1 head_1, ..., xi_h head_h) W^O

The importance of a head is how much the loss moves when its gate moves, averaged over data:

    I_h = E_x | dL(x) / d xi_h |          (at xi = 1; one backward pass per batch gives every I_h)

normalised per layer by its L2 norm (as Michel et al. do), so layers compare. Pruning removes the
heads of least importance: physically (MultiHeadAttention.prune_heads drops their rows of W^Q, W^K,
W^V and columns of W^O, same outputs as gating them with xi_h = 0, fewer parameters), at least one
head kept per layer. `heads_to_prune` is transformers' {layer: [head, ...]} with heads numbered as built.

Works on any model of EncoderBlocks (BERT: W^O = attention.output.dense) or DecoderBlocks (GPT:
W^O = attn.out_proj); importance and masks are (L, H) tensors over the current heads.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn

from common.errors import ConfigError
from common.nn.attention import MultiHeadAttention
from common.nn.blocks import DecoderBlock, EncoderBlock


def attention_layers(model: nn.Module) -> list[tuple[MultiHeadAttention, nn.Linear]]:
    """(self-attention, its W^O Linear) for every layer of the model, in order."""
    layers = []
    for module in model.modules():
        if isinstance(module, EncoderBlock):
            layers.append((module.attention.self, module.attention.output.dense))
        elif isinstance(module, DecoderBlock):
            layers.append((module.attn, module.attn.out_proj))
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no encoder or decoder blocks whose heads could be pruned")
    return layers


@contextlib.contextmanager
def head_gates(model: nn.Module, gates: torch.Tensor):
    """Within the block, layer l's head h output is multiplied by gates[l, h] before W^O
    (gates (L, H); 0 masks a head, 1 keeps it; requires_grad gives dL/dxi). Hooks, removed on exit."""
    layers = attention_layers(model)
    if gates.dim() != 2 or gates.size(0) != len(layers):
        raise ConfigError(f"gates must be (layers={len(layers)}, heads), got {tuple(gates.shape)}")
    handles = []
    for l, (attention, w_o) in enumerate(layers):
        H, d = attention.num_heads, attention.head_dim

        def gate(module, inputs, l=l, H=H, d=d):
            x = inputs[0]  # (B, T, H d): Concat(head_1, ..., head_H)
            xi = gates[l, :H].to(x.dtype)  # (H,)
            return (x.unflatten(-1, (H, d)) * xi[:, None]).flatten(-2),
        handles.append(w_o.register_forward_pre_hook(gate))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def head_importance(model: nn.Module, batches: Iterable[dict],
                    loss_fn: Optional[Callable] = None, normalize: bool = True) -> torch.Tensor:
    """I[l, h] = sum over batches of |dL/dxi_{l,h}| at xi = 1, per layer divided by its L2 norm
    (normalize=True). loss_fn(model, batch) -> scalar loss; default model(**batch).loss.
    The model's weights get no gradient (their .grad is left as it was). Returns (L, H_max)."""
    layers = attention_layers(model)
    H = max(attention.num_heads for attention, _ in layers)
    gates = torch.ones(len(layers), H, requires_grad=True, device=next(model.parameters()).device)
    loss_fn = loss_fn or (lambda m, batch: m(**batch).loss)
    importance = torch.zeros(len(layers), H, device=gates.device)
    was_training = model.training
    model.eval()
    seen = 0
    with head_gates(model, gates):
        for batch in batches:
            loss = loss_fn(model, batch)
            (grad,) = torch.autograd.grad(loss, gates, allow_unused=False)
            importance += grad.abs()
            seen += 1
    model.train(was_training)
    if seen == 0:
        raise ConfigError("head_importance needs at least one batch of data")
    for l, (attention, _) in enumerate(layers):
        importance[l, attention.num_heads:] = float("inf")  # padding of a narrower (pruned) layer: never chosen
    if normalize:
        finite = torch.where(importance.isfinite(), importance, torch.zeros_like(importance))
        importance = importance / finite.norm(dim=1, keepdim=True).clamp_min(1e-20)
    return importance


def heads_to_prune(model: nn.Module, importance: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """The round(fraction * total) least important heads over the whole model, at least one head kept
    per layer, as {layer: [head numbers as built]} (the current head i of a layer is its i-th unpruned)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the fraction of heads to prune must be in [0, 1), got {fraction}")
    layers = attention_layers(model)
    total = sum(attention.num_heads for attention, _ in layers)
    n = round(fraction * total)
    left = {l: attention.num_heads for l, (attention, _) in enumerate(layers)}
    chosen: dict[int, list[int]] = {}
    order = sorted(((float(importance[l, h]), l, h) for l, (attention, _) in enumerate(layers)
                    for h in range(attention.num_heads)))
    for _, l, h in order:
        if n == 0:
            break
        if left[l] == 1:
            continue
        attention = layers[l][0]
        built = [i for i in range(attention.num_heads + len(attention.pruned_heads)) if i not in attention.pruned_heads]
        chosen.setdefault(l, []).append(built[h])
        left[l] -= 1
        n -= 1
    return {l: sorted(heads) for l, heads in sorted(chosen.items())}


def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> None:
    """Physically remove heads: {layer: [head numbers as built]} (transformers' prune_heads argument)."""
    layers = attention_layers(model)
    for l, layer_heads in heads.items():
        l = int(l)
        if not 0 <= l < len(layers):
            raise ConfigError(f"prune_heads: layer {l} does not exist (the model has {len(layers)} layers)")
        attention, w_o = layers[l]
        try:
            attention.prune_heads(layer_heads, output_linear=w_o)
        except ValueError as e:
            raise ConfigError(f"layer {l}: {e}") from None


def pruned_heads_of(model: nn.Module) -> dict[str, list[int]]:
    """{"layer": [pruned heads]}: what config.json's `pruned_heads` records (transformers' field)."""
    return {str(l): sorted(attention.pruned_heads) for l, (attention, _) in enumerate(attention_layers(model))
            if attention.pruned_heads}
