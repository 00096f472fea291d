"""One decode step of T5: ONE new target token per row through every decoder layer.

T5's packed fast path (common/generation/packed.py: what it trades, its one rule and switch;
minit5.generate.use_decode_step counts T5's steps for the rule).
A decode step computes exactly what T5ForConditionalGeneration.decode computes for one new token
with the caches, with fewer operations. For the new token's hidden state x (B, d) at target
position p (the self-attention cache holds positions 0 .. p - 1), in decoder layer l:

    [q k v] = RMS_1(x) W^QKV                 one product, W^QKV = [W^Q W^K W^V] (C x 3 H d)
    K, V    = cache_l.append(k, v)           (B, H, p + 1, d): the target so far, this token last
    x       = x + softmax(q K^T + b[p, :p+1]) V W^O      no 1/sqrt(d): T5 (minit5/model.py);
                                             b[p, j] = table[bucket(j - p)], one row of the causal
                                             relative bias; one query after every cached key: no mask
    x       = x + softmax(RMS_2(x) W^Q_x K_x^T + M_src) V_x W^O_x    cross-attention on the source's
                                             K_x, V_x (B, H, S, d_k), computed once per source
    x       = x + FFN(RMS_3(x))              relu(x W_i) W_o, or gelu(x W_i0) * (x W_i1) W_o packed
    logits  = RMS_f(x) (d_model^-0.5 when tied) W_lm^T      (B, V)

Why a separate path? At a few rows a step is about 7 small products per layer plus the head, and the
general decoder (any number of tokens, masks, dropout, the position bias recomputed from buckets
for every step) wraps each in many more small operations. Here the hidden state stays (B, d) and
what does not change between steps is done once per generate call (DecodeWeights.from_model):

  * W^Q, W^K, W^V of each self-attention are one matrix (one product instead of three), and so
    are the gated feed-forward's W_i0, W_i1;
  * every weight is stored as W^T in column blocks, one per core (common/nn/blocked_linear.py);
  * the causal relative bias b (H, L, L) of all target positions is computed once from block 0's
    table, and the source's padding mask once as an additive M_src (0 or the most negative float).
Per step, RMSNorm runs as torch's fused F.rms_norm in float32 (rms below) and the single-query
attention as two batched products (common/generation/packed.py one_query_attention): the same
formulas in fewer kernels.

This copies the weights once per call (the model's parameters are not touched).
tests/test_t5_decode_step.py checks the logits against decode() with the caches and the tokens
(greedy and beam) against the textbook path; tests/test_t5_parity.py checks transformers' tokens.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.generation.packed import column_blocks, one_query_attention
from common.nn.attention import KVCache
from common.nn.blocked_linear import BlockedLinear, blocked, stacked
from common.nn.masks import mask_value


def rms(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight (common/nn/norms.py). In float32 torch's fused
    F.rms_norm computes exactly this in one kernel instead of six small ones; other dtypes keep the
    module, whose cast back before the weight is T5's own."""
    if x.dtype != torch.float32:
        return norm(x)
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.eps)


@dataclasses.dataclass
class LayerWeights:
    """One decoder T5Block packed for a single-token step."""

    norm_self: nn.Module  # RMSNorm before self-attention, called as is
    qkv: BlockedLinear  # C -> 3 H d
    out_self: BlockedLinear  # H d -> C
    norm_cross: nn.Module
    q_cross: BlockedLinear  # C -> H d
    out_cross: BlockedLinear  # H d -> C
    norm_ff: nn.Module
    wi: BlockedLinear  # C -> d_ff, or C -> 2 d_ff = [W_i0 W_i1] when gated
    wo: BlockedLinear  # d_ff -> C
    act: Callable[[torch.Tensor], torch.Tensor]
    gated: bool

    @classmethod
    def from_block(cls, block, blocks: int) -> "LayerWeights":
        self_attn, cross_attn = block.layer[0].SelfAttention, block.layer[1].EncDecAttention
        ff = block.layer[2].DenseReluDense
        gated = hasattr(ff, "wi_0")
        return cls(
            norm_self=block.layer[0].layer_norm,
            qkv=stacked([self_attn.q, self_attn.k, self_attn.v], blocks), out_self=blocked(self_attn.o, blocks),
            norm_cross=block.layer[1].layer_norm,
            q_cross=blocked(cross_attn.q, blocks), out_cross=blocked(cross_attn.o, blocks),
            norm_ff=block.layer[2].layer_norm,
            wi=stacked([ff.wi_0, ff.wi_1], blocks) if gated else blocked(ff.wi, blocks),
            wo=blocked(ff.wo, blocks), act=ff.act, gated=gated)


@dataclasses.dataclass
class DecodeWeights:
    """The decoder of a T5ForConditionalGeneration packed for decode steps, for one batch of sources."""

    embed: nn.Embedding  # the shared table
    layers: list[LayerWeights]
    final_norm: nn.Module
    head: BlockedLinear  # C -> V
    head_scale: Optional[float]  # d_model^-0.5 with tied embeddings, else None
    position_bias: torch.Tensor  # (1, H, L, L): b[p, j] of query position p and key position j
    source_bias: Optional[torch.Tensor]  # (B, 1, 1, S): 0 for a source token, most negative for padding
    num_heads: int

    @classmethod
    def from_model(cls, model, max_length: int, attention_mask: Optional[torch.Tensor] = None,
                   blocks: Optional[int] = None) -> "DecodeWeights":
        """model: T5ForConditionalGeneration, under no_grad / inference_mode; max_length: target
        positions the steps will reach (the start token included); attention_mask (B, S) of the
        sources, 1 = token, 0 = padding, or None. blocks: column blocks per weight, default
        torch.get_num_threads() on the CPU."""
        decoder, c = model.decoder, model.config
        weight = model.shared.weight
        blocks = column_blocks(weight.device, blocks)
        table = decoder.block[0].layer[0].SelfAttention
        position_bias = table.compute_bias(max_length, max_length, device=weight.device)  # (1, H, L, L)
        source_bias = None
        if attention_mask is not None and not bool(attention_mask.all()):
            source_bias = torch.zeros(attention_mask.shape, dtype=weight.dtype, device=weight.device)
            source_bias = source_bias.masked_fill(attention_mask == 0, mask_value(weight.dtype))[:, None, None]
        return cls(embed=model.shared, layers=[LayerWeights.from_block(b, blocks) for b in decoder.block],
                   final_norm=decoder.final_layer_norm, head=blocked(model.lm_head, blocks),
                   head_scale=c.d_model ** -0.5 if c.tie_word_embeddings else None,
                   position_bias=position_bias, source_bias=source_bias, num_heads=c.num_heads)

    def step(self, input_ids: torch.Tensor, caches: list[KVCache],
             cross_key_values: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """input_ids (B, 1): the newest target token, at position p = caches[0].length (its K, V
        get appended); cross_key_values: each layer's (K_x, V_x) of the source, (B, H, S, d_k).
        Returns the next-token logits (B, V)."""
        B = input_ids.size(0)
        p = caches[0].length
        H = self.num_heads
        x = self.embed(input_ids).view(B, -1)  # (B, d); no dropout: eval
        bias = self.position_bias[:, :, p:p + 1, :p + 1]  # (1, H, 1, p + 1), the row of position p
        for layer, cache, (k_x, v_x) in zip(self.layers, caches, cross_key_values):
            q, k, v = layer.qkv(rms(layer.norm_self, x)).view(B, 3, H, 1, -1).unbind(1)  # (B, H, 1, d_k) each
            keys, values = cache.append(k, v)  # (B, H, p + 1, d)
            a = one_query_attention(q, keys, values, bias)  # (B, H, 1, d_k); T5: no 1/sqrt(d)
            x = x + layer.out_self(a.view(B, -1))  # heads concatenated in order: (B, d)
            q = layer.q_cross(rms(layer.norm_cross, x)).view(B, H, 1, -1)  # (B, H, 1, d_k)
            a = one_query_attention(q, k_x, v_x, self.source_bias)  # (B, H, 1, d_k): source padding masked additively
            x = x + layer.out_cross(a.view(B, -1))
            h = layer.wi(rms(layer.norm_ff, x))  # (B, d_ff), or (B, 2 d_ff) when gated
            if layer.gated:
                gate, up = h.chunk(2, dim=1)
                h = layer.act(gate) * up
            else:
                h = layer.act(h)
            x = x + layer.wo(h)  # (B, d)
        x = rms(self.final_norm, x)
        if self.head_scale is not None:
            x = x * self.head_scale  # tied: E has unit-variance rows
        return self.head(x)  # (B, V)
