"""One decode step of a GPT: ONE new token per row through every layer, reusing the KV cache.

GPT's packed fast path (common/generation/packed.py: what it trades, its one rule and switch;
minigpt.generate.use_decode_step counts GPT's steps for the rule).
A decode step computes exactly what GPT.forward computes for one new token, with fewer operations.
For the new token's hidden state x (B, d) at position p, in layer l:

    [q k v] = LN_1(x) W^QKV + b^QKV          one product, W^QKV = [W^Q W^K W^V] (C x (C + 2 C_kv))
    q, k    = RoPE_p(q), RoPE_p(k)           only with position_embedding="rope"
    K, V    = cache_l.append(k, v)           (B, H_kv, L, d_k): the L positions so far, this one last
    a       = softmax(q K^T / sqrt(d_k)) V    a single query sits after every cached key, so the
                                             causal mask is all True: only padding is masked
    x       = x + a W^O + b^O
    x       = x + FFN(LN_2(x))               act(x W_1 + b_1) W_2 + b_2, or SwiGLU with [W_1 W_3] packed
    logits  = LN_f(x) W_te^T                 (B, V)

With grouped-query attention the n_rep = H / H_kv query heads of a group are attended as n_rep
query ROWS of their one key/value head, q (B, H_kv, n_rep, d_k) against K (B, H_kv, L, d_k):
the same scores as repeat_kv, without copying the cache n_rep times every step.

Why a separate path? At batch 1 a step is 4 matrix-vector products per layer plus the head, each
reading its whole weight matrix from memory (4 bytes x about 14M weights for 6 layers, 384 wide,
vocab 8000: more than a CPU's L3 cache holds, so every step streams them from RAM), and the
bookkeeping around them. GPT.forward serves any number of tokens, masks and outputs; for one token that generality
costs many more small operations per step (dropout, the mask and position checks, three
projections, head reshapes). Here the hidden state stays (B, d), and everything that does not
change between steps is done once per generate call by DecodeWeights.from_model:

  * W^Q, W^K, W^V are concatenated into one matrix (one product per layer instead of three);
  * every weight W (out, in) is stored as W^T cut into P blocks of output columns, one per core
    (common/nn/blocked_linear.py says why: a product of a few rows otherwise runs on one core).

This copies the Linear weights once per call (the model's own parameters are not touched).
tests/test_decode_step.py checks the logits against GPT.forward, tests/test_generate.py the tokens
against generation without a cache, tests/test_gpt_parity.py against transformers' generate;
tests/test_llama.py does all three for every combination of the Llama switches.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn as nn

from common.generation.packed import column_blocks
from common.nn.attention import ATTENTION_FUNCTIONS, KVCache
from common.nn.blocked_linear import BlockedLinear, blocked, stacked
from common.nn.masks import padding_mask
from common.nn.rope import apply_rope, rope_cos_sin


@dataclasses.dataclass
class LayerWeights:
    """One DecoderBlock's parameters, packed for a single-token step."""

    ln_1: nn.Module  # LayerNorm or RMSNorm, called as is
    qkv: BlockedLinear  # C -> C + 2 C_kv, [W^Q W^K W^V]
    out: BlockedLinear  # C -> C, W^O
    ln_2: Optional[nn.Module]
    fc: Optional[BlockedLinear]  # C -> I, or C -> 2I = [W_1 W_3] for SwiGLU; None: attention-only
    proj: Optional[BlockedLinear]  # I -> C
    act: Optional[Callable[[torch.Tensor], torch.Tensor]]
    gated: bool  # SwiGLU: act(first half) * second half of fc's output
    attend: Callable  # the block's attention implementation (common/nn/attention.py ATTENTION_FUNCTIONS)

    @classmethod
    def from_block(cls, block, blocks: int) -> "LayerWeights":
        attn, mlp = block.attn, block.mlp
        gated = hasattr(mlp, "gate_proj")
        fc = proj = act = None  # an attention-only block (feed_forward="none") has no mlp
        if mlp is not None:
            fc = stacked([mlp.gate_proj, mlp.up_proj], blocks) if gated else blocked(mlp.c_fc, blocks)
            proj, act = blocked(mlp.down_proj if gated else mlp.c_proj, blocks), mlp.act
        return cls(
            ln_1=block.ln_1, qkv=stacked([attn.query, attn.key, attn.value], blocks),
            out=blocked(attn.out_proj, blocks), ln_2=block.ln_2,
            fc=fc, proj=proj, act=act, gated=gated, attend=ATTENTION_FUNCTIONS[attn.attn_impl],
        )


@dataclasses.dataclass
class DecodeWeights:
    """The whole GPT packed for decode steps; build it once per generate call (copies the weights)."""

    wte: nn.Embedding
    wpe: Optional[nn.Embedding]  # None with RoPE
    layers: list[LayerWeights]
    ln_f: nn.Module
    head: BlockedLinear  # C -> V, W_lm_head (= W_te when tied)
    num_heads: int
    num_kv_heads: int
    rope_theta: Optional[float]  # set with RoPE

    @classmethod
    def from_model(cls, model, blocks: Optional[int] = None) -> "DecodeWeights":
        """model: a GPT (decoder blocks without cross-attention); call under no_grad/inference_mode.
        blocks: column blocks per weight; default torch.get_num_threads() on the CPU (one per core)."""
        stack = model.transformer
        blocks = column_blocks(stack.wte.weight.device, blocks)
        c = model.config
        return cls(wte=stack.wte, wpe=stack.wpe, layers=[LayerWeights.from_block(b, blocks) for b in stack.h],
                   ln_f=stack.ln_f, head=blocked(model.lm_head, blocks), num_heads=c.n_head,
                   num_kv_heads=c.n_kv_head, rope_theta=c.rope_theta if stack.wpe is None else None)

    def step(self, input_ids: torch.Tensor, caches: list[KVCache],
             attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids (B, 1): the newest token, at position L - 1 after the L - 1 positions the
        caches hold (its K, V get appended); attention_mask (B, L), 1 = token, 0 = left padding,
        or None. Returns the next-token logits (B, V)."""
        B = input_ids.size(0)
        if attention_mask is None:
            mask, position = None, input_ids.new_full((B, 1), caches[0].length)  # (B, 1)
        else:  # p = (number of real tokens so far) - 1, as position_ids_from_attention_mask
            mask = padding_mask(attention_mask)  # (B, 1, 1, L)
            position = attention_mask.sum(-1, keepdim=True) - 1  # (B, 1)
        x = self.wte(input_ids).view(B, -1)  # (B, d); no dropout: eval
        H, H_kv = self.num_heads, self.num_kv_heads
        d = x.size(1) // H
        if self.wpe is not None:
            x = x + self.wpe(position).view(B, -1)
        else:
            cos, sin = rope_cos_sin(position, d, self.rope_theta, x.dtype)  # (B, 1, d_k) each
        for layer, cache in zip(self.layers, caches):
            qkv = layer.qkv(layer.ln_1(x))  # (B, C + 2 C_kv)
            q, k, v = qkv.split([H * d, H_kv * d, H_kv * d], dim=1)
            q, k, v = q.view(B, H, 1, d), k.view(B, H_kv, 1, d), v.view(B, H_kv, 1, d)
            if self.wpe is None:
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            keys, values = cache.append(k, v)  # (B, H_kv, L, d_k)
            q = q.view(B, H_kv, H // H_kv, d)  # a group's query heads as rows of its kv head
            a, _ = layer.attend(q, keys, values, mask)  # (B, H_kv, H / H_kv, d_k)
            x = x + layer.out(a.reshape(B, -1))  # heads concatenated in order h: (B, d)
            if layer.fc is None:  # feed_forward="none"
                continue
            h = layer.fc(layer.ln_2(x))  # (B, I), or (B, 2I) for SwiGLU
            if layer.gated:
                gate, up = h.chunk(2, dim=1)
                h = layer.act(gate) * up  # silu(x W_1) * (x W_3)
            else:
                h = layer.act(h)
            x = x + layer.proj(h)  # (B, d)
        return self.head(self.ln_f(x))  # (B, V)
