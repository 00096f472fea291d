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
reading its whole weight matrix from memory (55 MB a token for 6 layers, 384 wide, vocab 8000:
more than the 32 MB L3 cache, so every step streams them from RAM), and the bookkeeping around
them. GPT.forward serves any number of tokens, masks and outputs; for one token that generality
costs ~60 more small operations per step (dropout, the mask and position checks, three
projections, head reshapes). Here the hidden state stays (B, C), and everything that does not
change between steps is done once per generate call by DecodeWeights.from_model:

  * W^Q, W^K, W^V are concatenated into one matrix (one product per layer instead of three);
  * every weight W (out, in) is stored as W^T (in, out) cut into P blocks of output columns,
    (P, in, out / P), P = torch.get_num_threads() (BlockedLinear). PyTorch's CPU kernel runs a
    (1 x in) (in x out) product on ONE core, so one core streams all the weights; torch.bmm runs
    the P block products on P cores at once, and their outputs are the columns of the whole one.
    Each block is (in, n), the layout that kernel streams fastest for a row vector.
    Measured on 2 EPYC cores (55 MB a step): one product per weight ~28 GB/s, (out, in) nn.Linear
    layout ~16 GB/s, 2 blocks ~35-45 GB/s (the wide LM head alone ~55 GB/s); a plain sum over
    memory reaches ~88 GB/s. docs/results/bench.md has the figures.

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

from common.nn.attention import KVCache, scaled_dot_product_attention, sdpa_attention
from common.nn.masks import padding_mask


@dataclasses.dataclass
class BlockedLinear:
    """y = x W^T + b for a few rows x, with W^T cut into P blocks of output columns.

        W^T = [W_1^T | W_2^T | ... | W_P^T]   (in, out) -> weight (P, in, n), n = ceil(out / P)
        x W^T = [x W_1^T | ... | x W_P^T]        each block is an independent product

    The last block is padded with zero columns when P does not divide out; they are cut off.
    """

    weight: torch.Tensor  # (P, in, n)
    bias: Optional[torch.Tensor]  # (P, 1, n), or None
    out_features: int

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], blocks: int) -> "BlockedLinear":
        """weight (out, in) as nn.Linear stores it, bias (out,) or None."""
        out_features, in_features = weight.shape
        n = -(-out_features // blocks)  # ceil(out / P)
        pad = blocks * n - out_features
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        if pad:  # zero rows of W = zero columns of W^T
            weight = F.pad(weight, (0, 0, 0, pad))  # (P n, in)
            bias = None if bias is None else F.pad(bias, (0, pad))  # (P n,)
        blocked = weight.reshape(blocks, n, in_features).transpose(1, 2).contiguous()  # (P, in, n): one copy
        return cls(blocked, None if bias is None else bias.view(blocks, 1, n), out_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (B, out)."""
        B = x.size(0)
        rows = x.expand(self.weight.size(0), B, -1)  # (P, B, in), no copy
        if self.bias is None:
            y = torch.bmm(rows, self.weight)  # (P, B, n): block p on one core
        else:
            y = torch.baddbmm(self.bias, rows, self.weight)  # (P, B, n), + b in the same kernel
        # For B = 1 the (P, 1, n) result already lies in memory as the row [x W_1^T | ... | x W_P^T].
        y = y.view(1, -1) if B == 1 else y.transpose(0, 1).reshape(B, -1)  # (B, P n)
        return y if y.size(1) == self.out_features else y[:, :self.out_features]  # (B, out)


def blocked(linear: nn.Linear, blocks: int) -> BlockedLinear:
    return BlockedLinear.from_weight(linear.weight, linear.bias, blocks)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@dataclasses.dataclass
class LayerWeights:
    """One DecoderBlock's parameters, packed for a single-token step."""

    ln_1: nn.LayerNorm
    qkv: BlockedLinear  # C -> 3C, [W^Q W^K W^V]
    out: BlockedLinear  # C -> C, W^O
    ln_2: nn.LayerNorm
    fc: BlockedLinear  # C -> 4C
    proj: BlockedLinear  # 4C -> C
    act: Callable[[torch.Tensor], torch.Tensor]
    sdpa: bool  # the block's attn_impl is "sdpa" (opt-in fused kernel)

    @classmethod
    def from_block(cls, block, blocks: int) -> "LayerWeights":
        attn, mlp = block.attn, block.mlp
        biases = (attn.query.bias, attn.key.bias, attn.value.bias)
        qkv_weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])  # (3C, C)
        qkv_bias = None if biases[0] is None else torch.cat(biases)  # (3C,)
        return cls(
            ln_1=block.ln_1, qkv=BlockedLinear.from_weight(qkv_weight, qkv_bias, blocks),
            out=blocked(attn.out_proj, blocks), ln_2=block.ln_2,
            fc=blocked(mlp.c_fc, blocks), proj=blocked(mlp.c_proj, blocks),
            act=mlp.act, sdpa=attn.attn_impl == "sdpa",
        )


@dataclasses.dataclass
class DecodeWeights:
    """The whole GPT packed for decode steps; build it once per generate call (copies the weights)."""

    wte: nn.Embedding
    wpe: nn.Embedding
    layers: list[LayerWeights]
    ln_f: nn.LayerNorm
    head: BlockedLinear  # C -> V, W_lm_head (= W_te when tied)
    num_heads: int

    @classmethod
    def from_model(cls, model, blocks: Optional[int] = None) -> "DecodeWeights":
        """model: a GPT (decoder blocks without cross-attention); call under no_grad/inference_mode.
        blocks: column blocks per weight; default torch.get_num_threads() on the CPU (one per core)."""
        stack = model.transformer
        if blocks is None:  # a GPU runs one product on all its cores already
            blocks = torch.get_num_threads() if stack.wte.weight.device.type == "cpu" else 1
        return cls(wte=stack.wte, wpe=stack.wpe, layers=[LayerWeights.from_block(b, blocks) for b in stack.h],
                   ln_f=stack.ln_f, head=blocked(model.lm_head, blocks), num_heads=model.config.n_head)

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
            qkv = layer.qkv(layer_norm(x, layer.ln_1))  # (B, 3C)
            q, k, v = qkv.view(B, 3, H, 1, -1).unbind(1)  # each (B, H, 1, d_k)
            keys, values = cache.append(k, v)  # (B, H, L, d_k)
            if layer.sdpa:
                a = sdpa_attention(q, keys, values, mask)
            else:
                a, _ = scaled_dot_product_attention(q, keys, values, mask)  # (B, H, 1, d_k)
            x = x + layer.out(a.reshape(B, -1))  # heads concatenated: (B, C)
            h = layer.act(layer.fc(layer_norm(x, layer.ln_2)))  # (B, 4C)
            x = x + layer.proj(h)  # (B, C)
        return self.head(layer_norm(x, self.ln_f))  # (B, V)
