"""Writing a target for each source: y_t chosen from P(. | y_<t, x), one token at a time.

The encoder runs once per source; the decoder starts from decoder_start_token_id (= pad in T5):
    greedy     y_t = argmax_v z_v                                   (common/nn/sampling.py)
    sampling   y_t ~ softmax(filter(z / tau)), top-k and top-p filters   (the same module)
    beam search  keep the num_beams prefixes of highest log P(y_<=t | x) (beam_search below)

Caches: each decoder layer's self-attention appends the newest token's K, V to a preallocated
KVCache (common/nn/attention.py), so a step feeds one token, not the whole prefix; the cross-attention
K, V of the source never change while the decoder writes, so T5PreTrainedModel.cross_key_values
computes them once and every step reads them. use_cache=False recomputes everything each step
(the textbook path; tests check both give the same tokens).

The one fast path: minit5.decode_step computes the same single-token step with the weights packed
once per call; use_decode_step below is the rule for when it runs.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from common.errors import UserError
from common.nn.sampling import check_sampling_arguments, generation_mode, next_token
from minit5.decode_step import DecodeWeights

# Packing copies each decoder weight once, which a few faster steps repay (as minigpt.generate).
MIN_STEPS_TO_PACK = 8


def use_decode_step(max_new_tokens: int, use_cache: bool) -> bool:
    """The rule for the fast path: pack the decoder for minit5.decode_step iff the caches are on and
    at least MIN_STEPS_TO_PACK steps will read them (each step feeds one token)."""
    return use_cache and max_new_tokens >= MIN_STEPS_TO_PACK


def check_arguments(input_ids, attention_mask, max_new_tokens, num_beams, do_sample, temperature, top_k,
                    top_p, num_return_sequences, early_stopping) -> None:
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise UserError(f"input_ids must have shape (batch, source_length >= 1), got {tuple(input_ids.shape)}; "
                        "for one source pass input_ids[None]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                        f"{tuple(input_ids.shape)}; they must match (1 = token, 0 = padding)")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise UserError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if do_sample and num_beams > 1:
        raise UserError("sampling with beams is not implemented: pass do_sample=True with num_beams=1, "
                        "or num_beams > 1 without do_sample")
    check_sampling_arguments(do_sample, temperature, top_k, top_p)
    if not 1 <= num_return_sequences <= num_beams:
        raise UserError(f"num_return_sequences must be in 1..num_beams={num_beams}, got {num_return_sequences}")
    if early_stopping not in (True, False, "never"):
        raise UserError(f"early_stopping must be true, false or 'never' (transformers' values), "
                        f"got {early_stopping!r}")


def generate(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
             max_new_tokens: int = 20, num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None, length_penalty: float = 1.0,
             early_stopping: Union[bool, str] = False, num_return_sequences: int = 1,
             eos_token_id: Optional[int] = None, pad_token_id: Optional[int] = None,
             decoder_start_token_id: Optional[int] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None, seed: Optional[int] = None) -> torch.Tensor:
    """Decoder tokens for each source: (B * num_return_sequences, 1 + n), starting with the start token.

    input_ids (B, S) with attention_mask (B, S) when sources are padded (either side). n <=
    max_new_tokens: fewer when every row has ended with eos_token_id; a row that ended earlier is
    filled with pad_token_id. The ids default to the model's config (T5: eos 1, pad 0, start 0).
    """
    check_arguments(input_ids, attention_mask, max_new_tokens, num_beams, do_sample, temperature, top_k,
                    top_p, num_return_sequences, early_stopping)
    c = model.config
    eos = c.eos_token_id if eos_token_id is None else eos_token_id
    pad = c.pad_token_id if pad_token_id is None else pad_token_id
    start = c.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    with generation_mode(model):  # eval, inference_mode
        encoded = model.encode(input_ids, attention_mask)  # (B, S, C): once per source
        if num_beams == 1:
            tokens = greedy_or_sample(model, encoded, attention_mask, max_new_tokens, do_sample, temperature,
                                      top_k, top_p, eos, pad, start, use_cache, generator)
        else:
            tokens = beam_search(model, encoded, attention_mask, max_new_tokens, num_beams, length_penalty,
                                 early_stopping, num_return_sequences, eos, pad, start, use_cache)
    return tokens.clone()  # out of inference mode: the caller may train on them


class DecoderState:
    """What one decoding step needs: the encoder's output and mask, and (with use_cache) the
    self-attention caches and the cross-attention keys/values of the source."""

    def __init__(self, model, encoded, attention_mask, max_length: int, use_cache: bool):
        self.model, self.encoded, self.attention_mask = model, encoded, attention_mask
        self.caches = model.new_kv_caches(encoded.size(0), max_length) if use_cache else None
        self.cross = model.cross_key_values(encoded) if use_cache else None  # once per source
        self.fast = (DecodeWeights.from_model(model, max_length, attention_mask)
                     if use_decode_step(max_length - 1, use_cache) else None)

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
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


def greedy_or_sample(model, encoded, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                     eos, pad, start, use_cache, generator) -> torch.Tensor:
    """One token per row and step (common.nn.sampling.next_token); a row that emitted eos gets pad."""
    B = encoded.size(0)
    tokens = torch.full((B, 1 + max_new_tokens), start, dtype=torch.long, device=encoded.device)
    state = DecoderState(model, encoded, attention_mask, 1 + max_new_tokens, use_cache)
    unfinished = torch.ones(B, dtype=torch.bool, device=encoded.device)
    length = 1
    for _ in range(max_new_tokens):
        logits = state.next_logits(tokens[:, :length])  # (B, V)
        chosen = next_token(logits, do_sample, temperature, top_k, top_p, generator)  # (B,)
        chosen = torch.where(unfinished, chosen, torch.full_like(chosen, pad))
        unfinished &= chosen != eos
        tokens[:, length] = chosen
        length += 1
        if not bool(unfinished.any()):
            break
    return tokens[:, :length]


# BEGIN EXERCISE beam_search
def beam_search(model, encoded, attention_mask, max_new_tokens: int, num_beams: int, length_penalty: float,
                early_stopping, num_return_sequences: int, eos: int, pad: int, start: int,
                use_cache: bool) -> torch.Tensor:
    """Beam search as transformers defines it. Per source, K = num_beams running prefixes y with
    scores log P(y | x) = sum_t log softmax(z_t)[y_t]. Each step:
      1. every running prefix x every token: K V candidates; keep the 2K best (so K survive even
         if K of them end here);
      2. a candidate ending in eos (or reaching max length) among the first K becomes a finished
         hypothesis with score log P / n^length_penalty (n = tokens generated, eos included);
         the K best finished hypotheses are kept;
      3. the K best candidates that did not end become the running prefixes.
    Stop when K hypotheses are finished and (early_stopping=True) at once, or (False) when the best
    running prefix, scored at its current length, cannot beat the worst finished one ("never":
    at the longest length when length_penalty > 0), or at max_new_tokens.
    encoded (B, S, C) -> (B * num_return_sequences, 1 + n) tokens, best first, pad after eos.
    """
    B, K = encoded.size(0), num_beams
    L = 1 + max_new_tokens  # the longest output, the start token included
    device = encoded.device
    encoded = encoded.repeat_interleave(K, dim=0)  # (B K, S, C): each beam reads its source
    mask = attention_mask.repeat_interleave(K, dim=0) if attention_mask is not None else None
    state = DecoderState(model, encoded, mask, L, use_cache)
    very_low = -1.0e9
    running = torch.full((B, K, L), pad, dtype=torch.long, device=device)
    running[:, :, 0] = start
    running_scores = torch.full((B, K), very_low, device=device)
    running_scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 1
    finished = running.clone()
    finished_scores = torch.full((B, K), very_low, device=device)
    finished_lengths = torch.ones((B, K), dtype=torch.long, device=device)
    is_finished = torch.zeros((B, K), dtype=torch.bool, device=device)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    first_k = torch.arange(2 * K, device=device) < K  # (2K,) only these may finish
    length = 1
    while True:
        logits = state.next_logits(running.view(B * K, L)[:, :length])  # (B K, V)
        V = logits.size(-1)
        log_p = torch.log_softmax(logits.float(), dim=-1).view(B, K, V) + running_scores[:, :, None]
        top_scores, top_index = log_p.view(B, K * V).topk(2 * K, dim=-1)  # (B, 2K), best first
        beam, token = top_index // V, top_index % V  # which prefix, which next token
        candidates = running.gather(1, beam[:, :, None].expand(B, 2 * K, L)).clone()  # (B, 2K, L)
        candidates[:, :, length] = token
        ends = (token == eos) | (length + 1 >= L)  # (B, 2K)

        # 3. the running prefixes of the next step: the K best candidates that go on
        go_on_scores = top_scores + ends.float() * very_low
        keep = go_on_scores.topk(K, dim=-1).indices  # (B, K)
        running = candidates.gather(1, keep[:, :, None].expand(B, K, L))
        running_scores = go_on_scores.gather(1, keep)
        source_rows = (beam.gather(1, keep) + torch.arange(B, device=device)[:, None] * K).view(-1)

        # 2. finished hypotheses: normalised by length, merged with the earlier ones, K best kept
        new_scores = top_scores / (length ** length_penalty)  # length = tokens generated incl. this one
        blocked = ~(ends & first_k) | ~improvable
        if early_stopping is True:
            blocked |= is_finished.all(dim=-1, keepdim=True)
        new_scores = new_scores + blocked.float() * very_low
        merged_scores = torch.cat([finished_scores, new_scores], dim=1)  # (B, 3K)
        best = merged_scores.topk(K, dim=-1).indices  # (B, K)
        finished = torch.cat([finished, candidates], dim=1).gather(1, best[:, :, None].expand(B, K, L))
        finished_scores = merged_scores.gather(1, best)
        finished_lengths = torch.cat([finished_lengths, torch.full_like(top_scores, length + 1).long()],
                                     dim=1).gather(1, best)
        is_finished = torch.cat([is_finished, ~blocked], dim=1).gather(1, best)

        state.reorder(source_rows)
        length += 1
        # Can a running prefix still beat the worst finished hypothesis? (transformers' heuristic)
        hypothetical = (L - 1) if (early_stopping == "never" and length_penalty > 0) else (length - 1)
        best_running = running_scores[:, :1] / (hypothetical ** length_penalty)
        worst_finished = torch.where(is_finished, finished_scores.min(dim=-1, keepdim=True).values,
                                     torch.full_like(finished_scores, very_low))
        improvable &= (best_running > worst_finished).any(dim=-1, keepdim=True)
        all_done = bool(is_finished.all()) and early_stopping is True
        if not bool(improvable.any()) or all_done or bool(ends.all()):
            break
    out = finished[:, :num_return_sequences]  # (B, R, L), best first
    n = int(finished_lengths[:, :num_return_sequences].max())
    return out.reshape(B * num_return_sequences, L)[:, :n]
# END EXERCISE beam_search
