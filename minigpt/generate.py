"""Autoregressive generation: x_{t+1} ~ P(. | x_{<=t}), one token at a time.

Each step turns the logits z of the last position into a token:
    greedy     x_{t+1} = argmax_i z_i
    sampling   x_{t+1} ~ softmax(filter(z / tau)), filters: temperature tau, top-k, top-p (nucleus)

Batched prompts are LEFT padded (attention_mask 0 on the left) so every row's next token sits in
the last column; position ids skip the padding, so a padded row gives the same tokens as its
prompt alone. A row stops at eos_token_id and is padded afterwards.

KV cache: the keys and values of past tokens never change, so each step feeds GPT.forward only
the tokens the cache has not seen (the whole prompt first, then the newest token) and appends their
K, V to a preallocated cache (common.nn.attention.KVCache): one token through the weights per step
instead of the whole prefix; attention still reads all t cached keys (O(t) per step), so T tokens
cost O(T^2) attention work instead of O(T^3).
Once the sequence outgrows block_size the context is cropped to its last block_size tokens; their
positions then shift, so the cache is emptied and the cropped window fed again. That is the
textbook path, one line in _decode.

The one fast path: minigpt.decode_step computes the same single-token step with the weights packed
once per call. use_decode_step below is the rule for when it runs; tests/test_generate.py checks
that both paths give the same tokens for every model shape.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.errors import UserError
from common.nn.lora import LoRALinear
from common.nn.quantization import is_quantized
# The decoding rules (greedy, temperature, top-k, top-p) are shared with minit5: common/nn/sampling.py.
from common.nn.sampling import check_sampling_arguments, generation_mode, next_token
from minigpt.decode_step import DecodeWeights


# Packing the weights for decode steps copies each of them once, which a few faster steps repay
# (docs/results/bench.md, item 9, has the timings behind this number).
MIN_STEPS_TO_PACK = 8


def use_decode_step(prompt_length: int, max_new_tokens: int, block_size: int, use_cache: bool,
                    has_adapters: bool = False) -> bool:
    """The rule for the fast path: pack the weights for minigpt.decode_step iff at least
    MIN_STEPS_TO_PACK single-token steps will read the cache. The prefill gives the first new token;
    after it, min(max_new_tokens - 1, block_size - prompt_length) steps fit before the cache is full.
    A model with LoRA adapters (common/nn/lora.py) keeps the textbook path: the packed weights would
    miss the adapters' B A (merge_and_unload first for the fast path)."""
    if not use_cache or prompt_length > block_size or has_adapters:
        return False
    return min(max_new_tokens - 1, block_size - prompt_length) >= MIN_STEPS_TO_PACK


def check_arguments(input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                    generator, seed) -> None:
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise UserError(f"input_ids must have shape (batch, prompt_length >= 1), got {tuple(input_ids.shape)}; "
                        "for one prompt pass input_ids[None], for an empty one start from a BOS/EOS token")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                        f"{tuple(input_ids.shape)}; they must match (1 = token, 0 = left padding)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    check_sampling_arguments(do_sample, temperature, top_k, top_p, generator, seed)


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, do_sample: bool = False,
             temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             eos_token_id: Optional[int] = None, pad_token_id: Optional[int] = None,
             attention_mask: Optional[torch.Tensor] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> torch.Tensor:
    """Continue each prompt by up to max_new_tokens tokens.

    input_ids (B, T_0), LEFT padded when the prompts differ in length, with attention_mask (B, T_0).
    Returns (B, T_0 + n) with n <= max_new_tokens: fewer when every row has emitted eos_token_id;
    rows that stopped earlier are filled with pad_token_id (default: eos_token_id).
    seed (or your own torch.Generator) makes sampling reproducible.
    """
    check_arguments(input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                    generator, seed)
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    with generation_mode(model):  # eval, inference_mode
        tokens = _decode(model, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p,
                         eos_token_id, pad_token_id, attention_mask, use_cache, generator)
    return tokens.clone()  # out of inference mode: the caller may train on them


def _decode(model, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id,
            pad_token_id, attention_mask, use_cache, generator) -> torch.Tensor:
    B, T0 = input_ids.shape
    block_size = model.config.block_size
    total = T0 + max_new_tokens
    tokens = input_ids.new_empty((B, total))  # written in place: no torch.cat per step
    tokens[:, :T0] = input_ids
    mask = None  # None = no padding anywhere, the fastest path
    if attention_mask is not None and not bool(attention_mask.all()):
        mask = attention_mask.new_ones((B, total))
        mask[:, :T0] = attention_mask
    fill_id = pad_token_id if pad_token_id is not None else eos_token_id
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)

    caches = model.new_kv_caches(B, min(total, block_size)) if use_cache else None
    has_adapters = any(isinstance(m, LoRALinear) for m in model.modules())
    has_adapters = (has_adapters or is_quantized(model)  # the decode step packs float weights of n_head heads
                    or any(getattr(m, "pruned_heads", None) for m in model.modules()))
    fast = (DecodeWeights.from_model(model) if use_decode_step(T0, max_new_tokens, block_size, use_cache, has_adapters)
            else None)

    length = T0  # tokens known so far
    for _ in range(max_new_tokens):
        start = max(0, length - block_size)  # the window: the last block_size tokens
        if caches is not None and start > 0:  # cropped: positions shifted, the cached keys are stale
            for cache in caches:
                cache.length = 0
        seen = start + (caches[0].length if caches is not None else 0)  # tokens the cache holds
        window_mask = mask[:, start:length] if mask is not None else None
        if fast is not None and length - seen == 1:  # the fast path: one new token, packed weights
            logits = fast.step(tokens[:, seen:length], caches, window_mask)
        else:  # the textbook path: GPT.forward on the tokens the cache has not seen
            logits = model(tokens[:, seen:length], attention_mask=window_mask, kv_caches=caches,
                           last_token_only=True).logits[:, -1, :]
        chosen = next_token(logits, do_sample, temperature, top_k, top_p, generator)  # (B,)
        if eos_token_id is not None:
            chosen = torch.where(unfinished, chosen, torch.full_like(chosen, fill_id))
            unfinished &= chosen != eos_token_id
        tokens[:, length] = chosen
        length += 1
        if eos_token_id is not None and not bool(unfinished.any()):
            break
    return tokens[:, :length]
