"""GPT's part in generation: the adapter the one loop (common/generation/loop.py) drives.

Batched prompts are LEFT padded (attention_mask 0 on the left) so every row's next token sits in
the last column; position ids skip the padding, so a padded row gives the same tokens as its
prompt alone. Greedy, sampling, beam search, the processors, eos and padding, streaming: the loop.

KV cache: the keys and values of past tokens never change, so each step feeds GPT.forward only
the tokens the cache has not seen (the whole prompt first, then the newest token) and appends their
K, V to a preallocated cache (common.nn.attention.KVCache): one token through the weights per step
instead of the whole prefix; attention still reads all t cached keys (O(t) per step), so T tokens
cost O(T^2) attention work instead of O(T^3).
Once the sequence outgrows block_size the context is cropped to its last block_size tokens; their
positions then shift, so the cache is emptied and the cropped window fed again. That is the
textbook path, one line in GPTFamily.step.

The packed fast path: minigpt.decode_step computes the same single-token step with the weights packed
once per call; use_decode_step below counts the steps for the one rule of common/generation/packed.py.
tests/test_generate.py checks that both paths give the same tokens for every model shape.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.generation.config import GenerationConfig, check_generate_arguments
from common.generation.loop import GenerateOutput, generate_tokens
from common.generation.packed import MIN_STEPS_TO_PACK, has_lora, use_packed_step  # noqa: F401 (re-exported)
from common.nn.quantization import is_quantized
from common.nn.sampling import generation_mode
from minigpt.decode_step import DecodeWeights


def use_decode_step(prompt_length: int, max_new_tokens: int, block_size: int, use_cache: bool,
                    has_adapters: bool = False) -> bool:
    """GPT's count for the rule of common/generation/packed.py: the prefill gives the first new token;
    after it, min(max_new_tokens - 1, block_size - prompt_length) single-token steps fit before the
    cache is full. A prompt longer than block_size is cropped and fed whole: no packing."""
    if prompt_length > block_size:
        return False
    steps = min(max_new_tokens - 1, block_size - prompt_length)
    return use_packed_step(steps, use_cache, has_adapters=has_adapters)


class GPTFamily:
    """The loop's interface for a GPT (prefill, step, reorder; common/generation/loop.py), with its
    KV caches, the padding mask of left-padded prompts and the block_size window."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 config: GenerationConfig):
        N, T0 = input_ids.shape
        self.model, self.block_size = model, model.config.block_size
        total = T0 + config.max_new_tokens
        self.mask = None  # None = no padding anywhere, the fastest path
        if attention_mask is not None and not bool(attention_mask.all()):
            self.mask = attention_mask.new_ones((N, total))
            self.mask[:, :T0] = attention_mask
        self.caches = model.new_kv_caches(N, min(total, self.block_size)) if config.use_cache else None
        self.fast = None
        # the packed step holds float weights of n_head heads: LoRA, int8 and pruned models keep the textbook path
        textbook_only = (has_lora(model) or is_quantized(model)
                         or any(getattr(m, "pruned_heads", None) for m in model.modules()))
        if config.packed_step and use_decode_step(T0, config.max_new_tokens, self.block_size, config.use_cache,
                                                  textbook_only):
            self.fast = DecodeWeights.from_model(model)
        self.decode_path = "packed" if self.fast is not None else ("cache" if self.caches is not None else "recompute")

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(tokens)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) -> logits (N, V) of token t + 1, feeding what the cache has not seen."""
        length = tokens.size(1)
        start = max(0, length - self.block_size)  # the window: the last block_size tokens
        if self.caches is not None and start > 0:  # cropped: positions shifted, the cached keys are stale
            for cache in self.caches:
                cache.length = 0
        seen = start + (self.caches[0].length if self.caches is not None else 0)  # tokens the cache holds
        window_mask = self.mask[:, start:length] if self.mask is not None else None
        if self.fast is not None and length - seen == 1:  # the fast path: one new token, packed weights
            return self.fast.step(tokens[:, seen:length], self.caches, window_mask)
        return self.model(tokens[:, seen:length], attention_mask=window_mask, kv_caches=self.caches,
                          last_token_only=True).logits[:, -1, :]  # the textbook path

    def extend(self, tokens: torch.Tensor, new: int) -> torch.Tensor:
        """Speculative decoding: the logits (N, new + 1, V) of the positions after tokens[:, -new - 1:],
        the last `new` tokens fed at once after what the cache holds (common/generation/speculative.py)."""
        seen = self.caches[0].length
        out = self.model(tokens[:, seen:], kv_caches=self.caches).logits  # (N, t - seen, V)
        return out[:, -(new + 1):]

    def rewind(self, length: int) -> None:
        """Forget the cached positions from `length` on (rejected draft tokens)."""
        for cache in self.caches:
            cache.length = min(cache.length, length)

    def reorder(self, rows: torch.Tensor) -> None:
        if self.caches is not None:
            for cache in self.caches:
                cache.key, cache.value = cache.key[rows], cache.value[rows]
        if self.mask is not None:
            self.mask = self.mask[rows]


def generate(model, input_ids: torch.Tensor, max_new_tokens: Optional[int] = None, *,
             generation_config: Optional[GenerationConfig] = None, attention_mask: Optional[torch.Tensor] = None,
             streamer=None, assistant_model=None, generator: Optional[torch.Generator] = None,
             seed: Optional[int] = None, return_dict_in_generate: bool = False, **kwargs):
    """Continue each prompt by up to max_new_tokens tokens (GenerationConfig's fields as keywords:
    do_sample, temperature, top_k, top_p, num_beams, length_penalty, early_stopping,
    num_return_sequences, eos_token_id, pad_token_id, no_repeat_ngram_size, repetition_penalty,
    use_cache, packed_step).

    input_ids (B, T_0), LEFT padded when the prompts differ in length, with attention_mask (B, T_0).
    Returns (B, T_0 + n) with n <= max_new_tokens (B R rows with R = num_return_sequences beams):
    fewer when every row has emitted eos_token_id; rows that stopped earlier are filled with
    pad_token_id (default: eos_token_id). seed (or your own torch.Generator) makes sampling
    reproducible; streamer (common/generation/streamers.py) gets the text as it is written;
    assistant_model (a smaller GPT on the same vocabulary) drafts tokens the model checks
    (speculative decoding, common/generation/speculative.py): the same greedy tokens, the same
    distribution when sampling, fewer calls of the model.
    """
    config = generation_config or GenerationConfig()  # eos: only when given (a GPT may have none)
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    config = config.update(**kwargs)
    check_generate_arguments(config, input_ids, attention_mask, streamer, generator, seed)
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    if assistant_model is not None:
        from common.generation.speculative import speculative_generate
        output = speculative_generate(model, assistant_model, input_ids, attention_mask, config, streamer,
                                      generator, GPTFamily)
        return output if return_dict_in_generate else output.sequences
    K = config.num_beams
    with generation_mode(model):  # eval, inference_mode
        ids = input_ids.repeat_interleave(K, dim=0) if K > 1 else input_ids
        mask = attention_mask.repeat_interleave(K, dim=0) if K > 1 and attention_mask is not None else attention_mask
        family = GPTFamily(model, ids, mask, config)
        tokens = generate_tokens(family, ids, config, streamer, generator, batch_size=input_ids.size(0))
    tokens = tokens.clone()  # out of inference mode: the caller may train on them
    if return_dict_in_generate:
        return GenerateOutput(tokens, family.decode_path, target_forwards=tokens.size(1) - input_ids.size(1))
    return tokens

