"""One decode step of GPT-2: ONE new token per row through every layer, reusing the KV cache.

A decode step computes exactly what GPT.forward computes for one new token, with fewer operations.
For the new token's hidden state x (B, C), in layer l:

    [q k v] = LN_1(x) W^QKV + b^QKV          one (C x 3C) product, W^QKV = [W^Q W^K W^V]
    K, V    = cache_l.append(k, v)           (B, H, L, d_k): the L positions so far, this one last
    a       = softmax(q K^T / sqrt(d_k)) V    a single query sits after every cached key, so the
                                             causal mask is all True: only padding is masked
    x       = x + a W^O + b^O
    x       = x + act(LN_2(x) W_1 + b_1) W_2 + b_2
    logits  = LN_f(x) W_te^T                 (B, V)

Why a separate path? At batch 1 a step is 4 matrix-vector products per layer plus the head, each
reading its whole weight matrix from memory, and the bookkeeping around them. GPT.forward serves
any number of tokens, masks and outputs; for one token that generality costs ~60 more small
operations per step (dropout, the mask and position checks, three projections, head reshapes).
Here the hidden state stays (B, C), and everything that does not change between steps is done
once per generate call by DecodeWeights.from_model:

  * W^Q, W^K, W^V are concatenated into one matrix (one product per layer instead of three);
  * every weight is stored as the (in, out) matrix W^T, contiguous (GPT-2's Conv1D layout):
    PyTorch's CPU kernel multiplies a row vector by it faster than by nn.Linear's (out, in)
    (measured on 2 EPYC cores: ~28 vs ~16 GB/s of weights streamed from memory).

This copies the Linear weights once per call (the model's own parameters are not touched).
tests/test_decode_step.py checks the logits against GPT.forward, tests/test_generate.py the tokens
against generation without a cache, tests/test_gpt_parity.py against transformers' generate.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.attention import KVCache, scaled_dot_product_attention, sdpa_attention
from common.masks import padding_mask


def transposed(linear: nn.Linear) -> torch.Tensor:
    """nn.Linear's W (out, in) -> W^T (in, out), contiguous, so that y = x W^T is x @ it."""
    return linear.weight.detach().t().contiguous()


def affine(x: torch.Tensor, weight_t: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x W^T + b with W^T stored (in, out): (B, in) -> (B, out); one addmm kernel."""
    return x @ weight_t if bias is None else torch.addmm(bias, x, weight_t)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@dataclasses.dataclass
class LayerWeights:
    """One DecoderBlock's parameters, packed for a single-token step."""

    ln_1: nn.LayerNorm
    qkv_weight: torch.Tensor  # (C, 3C) = [W^Q W^K W^V]^T
    qkv_bias: Optional[torch.Tensor]  # (3C,)
    out_weight: torch.Tensor  # (C, C), W^O^T
    out_bias: Optional[torch.Tensor]
    ln_2: nn.LayerNorm
    fc_weight: torch.Tensor  # (C, 4C)
    fc_bias: Optional[torch.Tensor]
    proj_weight: torch.Tensor  # (4C, C)
    proj_bias: Optional[torch.Tensor]
    act: Callable[[torch.Tensor], torch.Tensor]
    sdpa: bool  # the block's attn_impl is "sdpa" (opt-in fused kernel)

    @classmethod
    def from_block(cls, block) -> "LayerWeights":
        attn, mlp = block.attn, block.mlp
        biases = (attn.query.bias, attn.key.bias, attn.value.bias)
        return cls(
            ln_1=block.ln_1,
            qkv_weight=torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]).t().contiguous(),
            qkv_bias=None if biases[0] is None else torch.cat(biases),
            out_weight=transposed(attn.out_proj), out_bias=attn.out_proj.bias,
            ln_2=block.ln_2,
            fc_weight=transposed(mlp.c_fc), fc_bias=mlp.c_fc.bias,
            proj_weight=transposed(mlp.c_proj), proj_bias=mlp.c_proj.bias,
            act=mlp.act, sdpa=attn.attn_impl == "sdpa",
        )


@dataclasses.dataclass
class DecodeWeights:
    """The whole GPT packed for decode steps; build it once per generate call (copies the weights)."""

    wte: nn.Embedding
    wpe: nn.Embedding
    layers: list[LayerWeights]
    ln_f: nn.LayerNorm
    head_weight: torch.Tensor  # (C, V), W_lm_head^T (= W_te^T when tied)
    num_heads: int

    @classmethod
    def from_model(cls, model) -> "DecodeWeights":
        """model: a GPT (decoder blocks without cross-attention); call under no_grad/inference_mode."""
        stack = model.transformer
        return cls(wte=stack.wte, wpe=stack.wpe, layers=[LayerWeights.from_block(b) for b in stack.h],
                   ln_f=stack.ln_f, head_weight=transposed(model.lm_head), num_heads=model.config.n_head)

    def step(self, input_ids: torch.Tensor, caches: list[KVCache],
             attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids (B, 1): the newest token, at position L - 1 after the L - 1 positions the
        caches hold (its K, V get appended); attention_mask (B, L), 1 = token, 0 = left padding,
        or None. Returns the next-token logits (B, V)."""
        B = input_ids.size(0)
        if attention_mask is None:
            mask, position = None, self.wpe.weight[caches[0].length]  # (C,)
        else:  # p = (number of real tokens so far) - 1, as position_ids_from_attention_mask
            mask = padding_mask(attention_mask)  # (B, 1, 1, L)
            position = self.wpe(attention_mask.sum(-1, keepdim=True) - 1)  # (B, 1, C)
        x = (self.wte(input_ids) + position).view(B, -1)  # (B, C); no dropout: eval
        H = self.num_heads
        for layer, cache in zip(self.layers, caches):
            qkv = affine(layer_norm(x, layer.ln_1), layer.qkv_weight, layer.qkv_bias)  # (B, 3C)
            q, k, v = qkv.view(B, 3, H, 1, -1).unbind(1)  # each (B, H, 1, d_k)
            keys, values = cache.append(k, v)  # (B, H, L, d_k)
            if layer.sdpa:
                a = sdpa_attention(q, keys, values, mask)
            else:
                a, _ = scaled_dot_product_attention(q, keys, values, mask)  # (B, H, 1, d_k)
            x = x + affine(a.reshape(B, -1), layer.out_weight, layer.out_bias)  # heads concatenated: (B, C)
            h = layer.act(affine(layer_norm(x, layer.ln_2), layer.fc_weight, layer.fc_bias))  # (B, 4C)
            x = x + affine(h, layer.proj_weight, layer.proj_bias)  # (B, C)
        return layer_norm(x, self.ln_f) @ self.head_weight  # (B, V)
