"""Beam search as transformers defines it, for every decoder (the loop: common/generation/loop.py).

Per input, K = num_beams running prefixes y with scores log P(y | x) = sum_t log softmax(z_t)[y_t]
(the prefix - a GPT's prompt, a T5's start token - scores 0). Each step:
  1. every running prefix x every token: K V candidates; keep the 2K best (so K survive even if K
     of them end here);
  2. a candidate ending in eos (or reaching the longest length) among the first K becomes a finished
     hypothesis with score log P / n^length_penalty (n = tokens generated, eos included); the K best
     finished hypotheses are kept;
  3. the K best candidates that did not end become the running prefixes (their caches follow them:
     the rows to reorder are returned to the loop).
Stop when K hypotheses are finished and (early_stopping=True) at once, or (False) when the best
running prefix, scored at its current length, cannot beat the worst finished one ("never": at the
longest length when length_penalty > 0), or at max_new_tokens.
"""
from __future__ import annotations

import torch

from common.generation.processors import process

VERY_LOW = -1.0e9  # a score no hypothesis reaches: "not a candidate"


class BeamSearch:
    """tokens (B K, L): the loop's buffer, each input's prefix (T_0 columns) written K times.
    result() -> (B R, T_0 + n) tokens, the R = num_return_sequences best per input, best first, pad after eos."""

    def __init__(self, tokens: torch.Tensor, prefix_length: int, batch_size: int, config):
        B, K, L = batch_size, config.num_beams, tokens.size(1)
        device = tokens.device
        self.B, self.K, self.L, self.T0, self.config = B, K, L, prefix_length, config
        self.eos = config.eos_token_id if config.eos_token_id is not None else -1
        running = tokens.view(B, K, L)
        running[:, :, prefix_length:] = config.fill_token_id if config.fill_token_id is not None else 0
        self.running = running
        self.running_scores = torch.full((B, K), VERY_LOW, device=device)
        self.running_scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 1
        self.finished = running.clone()
        self.finished_scores = torch.full((B, K), VERY_LOW, device=device)
        self.finished_lengths = torch.full((B, K), prefix_length, dtype=torch.long, device=device)
        self.is_finished = torch.zeros((B, K), dtype=torch.bool, device=device)
        self.improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
        self.first_k = torch.arange(2 * K, device=device) < K  # (2K,) only these may finish
        self.length = prefix_length  # tokens known so far
        self.done = False

    @property
    def tokens(self) -> torch.Tensor:
        return self.running.view(self.B * self.K, self.L)

    # BEGIN EXERCISE beam_search
    def step(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B K, V) of the next position of every running prefix -> the rows (B K,) the caches
        must take (row i becomes old row rows[i]); updates the running and finished hypotheses."""
        B, K, L, length = self.B, self.K, self.L, self.length
        V = logits.size(-1)
        log_p = process(torch.log_softmax(logits.float(), dim=-1), self.tokens[:, :length], self.config)
        log_p = log_p.view(B, K, V) + self.running_scores[:, :, None]
        top_scores, top_index = log_p.view(B, K * V).topk(2 * K, dim=-1)  # (B, 2K), best first
        beam, token = top_index // V, top_index % V  # which prefix, which next token
        candidates = self.running.gather(1, beam[:, :, None].expand(B, 2 * K, L)).clone()  # (B, 2K, L)
        candidates[:, :, length] = token
        ends = (token == self.eos) | (length + 1 >= L)  # (B, 2K)

        # 3. the running prefixes of the next step: the K best candidates that go on
        go_on_scores = top_scores + ends.float() * VERY_LOW
        keep = go_on_scores.topk(K, dim=-1).indices  # (B, K)
        self.running = candidates.gather(1, keep[:, :, None].expand(B, K, L))
        self.running_scores = go_on_scores.gather(1, keep)
        source_rows = (beam.gather(1, keep) + torch.arange(B, device=logits.device)[:, None] * K).view(-1)

        # 2. finished hypotheses: normalised by length, merged with the earlier ones, K best kept
        generated = length + 1 - self.T0  # tokens generated, this one included
        new_scores = top_scores / (generated ** self.config.length_penalty)
        blocked = ~(ends & self.first_k) | ~self.improvable
        if self.config.early_stopping is True:
            blocked |= self.is_finished.all(dim=-1, keepdim=True)
        new_scores = new_scores + blocked.float() * VERY_LOW
        merged_scores = torch.cat([self.finished_scores, new_scores], dim=1)  # (B, 3K)
        best = merged_scores.topk(K, dim=-1).indices  # (B, K)
        self.finished = torch.cat([self.finished, candidates], dim=1).gather(1, best[:, :, None].expand(B, K, L))
        self.finished_scores = merged_scores.gather(1, best)
        self.finished_lengths = torch.cat([self.finished_lengths, torch.full_like(top_scores, length + 1).long()],
                                          dim=1).gather(1, best)
        self.is_finished = torch.cat([self.is_finished, ~blocked], dim=1).gather(1, best)
        self.length = length = length + 1

        # Can a running prefix still beat the worst finished hypothesis? (transformers' heuristic)
        never = self.config.early_stopping == "never" and self.config.length_penalty > 0
        hypothetical = (L - self.T0) if never else (length - self.T0)
        best_running = self.running_scores[:, :1] / (hypothetical ** self.config.length_penalty)
        worst_finished = torch.where(self.is_finished, self.finished_scores.min(dim=-1, keepdim=True).values,
                                     torch.full_like(self.finished_scores, VERY_LOW))
        self.improvable &= (best_running > worst_finished).any(dim=-1, keepdim=True)
        all_done = bool(self.is_finished.all()) and self.config.early_stopping is True
        self.done = not bool(self.improvable.any()) or all_done or bool(ends.all())
        return source_rows
    # END EXERCISE beam_search

    def result(self) -> torch.Tensor:
        R = self.config.num_return_sequences
        out = self.finished[:, :R]  # (B, R, L), best first
        n = int(self.finished_lengths[:, :R].max())
        return out.reshape(self.B * R, self.L)[:, :n]
