"""T5's part in generation: the adapter the one loop (common/generation/loop.py) drives.

The encoder runs once per source; the decoder starts from decoder_start_token_id (= pad in T5) and
the loop writes after it: greedy, sampling, beam search, the processors, eos and padding, streaming.

Caches: each decoder layer's self-attention appends the newest token's K, V to a preallocated
KVCache (common/nn/attention.py), so a step feeds one token, not the whole prefix; the cross-attention
K, V of the source never change while the decoder writes, so T5PreTrainedModel.cross_key_values
computes them once and every step reads them. use_cache=False recomputes everything each step
(the textbook path; tests check both give the same tokens).

The packed fast path: minit5.decode_step computes the same single-token step with the weights packed
once per call; use_decode_step below counts the steps for the one rule of common/generation/packed.py.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.errors import UserError
from common.generation.config import GenerationConfig, check_generate_arguments
from common.generation.loop import GenerateOutput, generate_tokens
from common.generation.packed import MIN_STEPS_TO_PACK, use_packed_step  # noqa: F401 (re-exported)
from common.nn.sampling import generation_mode
from minit5.decode_step import DecodeWeights


def use_decode_step(max_new_tokens: int, use_cache: bool) -> bool:
    """T5's count for the rule of common/generation/packed.py: every step, the first included (the
    start token), feeds one token, so max_new_tokens single-token steps read the caches."""
    return use_packed_step(max_new_tokens, use_cache)


class T5Family:
    """The loop's interface for a T5 (prefill, step, reorder; common/generation/loop.py): the encoder's
    output and mask, and (with use_cache) the self-attention caches and the source's cross-attention K, V."""

    def __init__(self, model, encoded: torch.Tensor, attention_mask: Optional[torch.Tensor], config: GenerationConfig):
        self.model, self.encoded, self.attention_mask = model, encoded, attention_mask
        max_length = 1 + config.max_new_tokens
        self.caches = model.new_kv_caches(encoded.size(0), max_length) if config.use_cache else None
        self.cross = model.cross_key_values(encoded) if config.use_cache else None  # once per source
        self.fast = (DecodeWeights.from_model(model, max_length, attention_mask)
                     if config.packed_step and use_decode_step(config.max_new_tokens, config.use_cache) else None)
        self.decode_path = "packed" if self.fast is not None else ("cache" if self.caches is not None else "recompute")

    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step(tokens)  # the prefix is the start token alone: a step

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, t) written so far -> logits (N, V) of token t + 1. With the cache only the
        newest token is fed; the caches hold the K, V of the ones before."""
        if self.caches is None:
            return self.model.decode(tokens, self.encoded, self.attention_mask)[:, -1]
        if self.fast is not None:  # the fast path: the same step with the packed weights
            return self.fast.step(tokens[:, -1:], self.caches, self.cross)
        return self.model.decode(tokens[:, -1:], self.encoded, self.attention_mask, kv_caches=self.caches,
                                 cross_key_values=self.cross)[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search: row i of every self-attention cache becomes old row rows[i]."""
        if self.caches is not None:
            for cache in self.caches:
                cache.key, cache.value = cache.key[rows], cache.value[rows]


def generate(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
             generation_config: Optional[GenerationConfig] = None, streamer=None, assistant_model=None,
             generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
             return_dict_in_generate: bool = False, **kwargs):
    """Decoder tokens for each source: (B * num_return_sequences, 1 + n), starting with the start token.

    input_ids (B, S) with attention_mask (B, S) when sources are padded (either side). n <=
    max_new_tokens (default 20): fewer when every row has ended with eos_token_id; a row that ended
    earlier is filled with pad_token_id. The ids default to the model's config (T5: eos 1, pad 0,
    start 0). Keywords: GenerationConfig's fields (common/generation/config.py); streamer as
    minigpt.generate.
    """
    if assistant_model is not None:
        raise UserError("assistant_model (speculative decoding) is implemented for GPT decoders; "
                        "generate with this T5 without it")
    config = (generation_config or GenerationConfig()).update(**kwargs).fill_ids(model.config)
    check_generate_arguments(config, input_ids, attention_mask, streamer, generator, seed, what="source")
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    K = config.num_beams
    with generation_mode(model):  # eval, inference_mode
        encoded = model.encode(input_ids, attention_mask)  # (B, S, d): once per source
        if K > 1:
            encoded = encoded.repeat_interleave(K, dim=0)  # (B K, S, d): each beam reads its source
            attention_mask = attention_mask.repeat_interleave(K, dim=0) if attention_mask is not None else None
        family = T5Family(model, encoded, attention_mask, config)
        start = torch.full((encoded.size(0), 1), config.decoder_start_token_id, dtype=torch.long,
                           device=encoded.device)
        tokens = generate_tokens(family, start, config, streamer, generator, batch_size=input_ids.size(0))
    tokens = tokens.clone()  # out of inference mode: the caller may train on them
    if return_dict_in_generate:
        return GenerateOutput(tokens, family.decode_path, target_forwards=tokens.size(1) - 1)
    return tokens
