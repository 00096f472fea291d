"""The packed fast path of generation, its shared parts in one place: one rule, one switch.

A decode step feeds ONE new token per row through every layer, reading the KV caches. A family's
forward serves any number of tokens, masks and outputs; for one token that generality costs many
small operations per step. The packed step (minigpt/decode_step.py, minit5/decode_step.py: each
family's weights, laid out the same way) computes the same logits with its weights packed once per
generate call: W^Q, W^K, W^V as one matrix, every weight as W^T in column blocks, one per core
(common/nn/blocked_linear.py). What it trades: a copy of the weights per call, repaid after
MIN_STEPS_TO_PACK steps (docs/results/bench.md, item 9), and code a reader must trust; the tests
pin it to the textbook path (tests/test_decode_step.py, tests/test_t5_decode_step.py: logits;
tests/test_generate.py, tests/test_llama.py: tokens with and without it).

The rule (use_packed_step): pack iff the switch is on, the caches are on, no LoRA adapter would be
missed (merge_and_unload first) and at least MIN_STEPS_TO_PACK single-token steps will read the cache.
The switch: GenerationConfig.packed_step (generate(..., packed_step=False)) runs the textbook path
with the caches, so the KV cache can be measured alone; generate(..., return_dict_in_generate=True)
says which path ran (GenerateOutput.decode_path).
"""
from __future__ import annotations

from typing import Optional

import torch

from common.nn.lora import LoRALinear

# Packing copies each weight once, which a few faster steps repay (docs/results/bench.md, item 9).
MIN_STEPS_TO_PACK = 8


def use_packed_step(single_token_steps: int, use_cache: bool, enabled: bool = True,
                    has_adapters: bool = False) -> bool:
    """The one rule: pack iff enabled, cached, without adapters and with >= MIN_STEPS_TO_PACK steps to repay it."""
    return enabled and use_cache and not has_adapters and single_token_steps >= MIN_STEPS_TO_PACK


def has_lora(model) -> bool:
    """Whether a LoRA adapter (common/nn/lora.py) sits in the model: packing would miss its B A."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def column_blocks(device: torch.device, blocks: Optional[int] = None) -> int:
    """Column blocks per packed weight: one per CPU thread (a GPU runs one product on all its cores)."""
    if blocks is not None:
        return blocks
    return torch.get_num_threads() if device.type == "cpu" else 1


def one_query_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        bias: Optional[torch.Tensor] = None, scale: float = 1.0) -> torch.Tensor:
    """softmax(q K^T scale + bias) V for ONE query per row and head: the formula of
    common.nn.attention.scaled_dot_product_attention (a single query after every cached key needs no
    causal mask; padding comes in additively through bias), as two batched products over the B H
    (row, head) pairs on views of the caches (no broadcasting, no copy of K, V).
    q (B, H, 1, d_k); keys, values (B, H, L, d_k); bias broadcastable to (B, H, 1, L) or None -> (B, H, 1, d_k)."""
    B, H, _, d = q.shape
    L = keys.size(2)
    scores = torch.bmm(q.reshape(B * H, 1, d), keys.reshape(B * H, L, d).transpose(1, 2)).view(B, H, 1, L)
    if scale != 1.0:
        scores = scores * scale
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, dim=-1)  # (B, H, 1, L)
    return torch.bmm(weights.view(B * H, 1, L), values.reshape(B * H, L, d)).view(B, H, 1, d)
