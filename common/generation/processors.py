"""What changes the scores before a token is chosen (transformers' logits processors of the same names).

    repetition_penalty r    (Keskar et al. 2019, CTRL) for every token i already in the sequence:
                            z_i <- z_i / r if z_i > 0 else z_i * r   (r > 1 makes repeating less likely)
    no_repeat_ngram_size n  a token that would complete an n-gram the sequence already holds gets
                            z = -inf: with the last n - 1 tokens as a prefix, every token that followed
                            that prefix before is banned

Greedy and sampling apply them to the logits; beam search to the log-probabilities (as transformers).
"""
from __future__ import annotations

import torch


def repetition_penalty(scores: torch.Tensor, tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """scores (N, V), tokens (N, t) written so far (prompt included) -> (N, V)."""
    seen = scores.gather(1, tokens)  # (N, t)
    penalised = torch.where(seen > 0, seen / penalty, seen * penalty)
    return scores.scatter(1, tokens, penalised)


def banned_ngram_tokens(row: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram `row` already holds, given its last n - 1 tokens."""
    if len(row) + 1 < n:
        return set()
    prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return {row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix}


def no_repeat_ngram(scores: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """scores (N, V), tokens (N, t) -> (N, V) with the banned tokens of each row at -inf."""
    scores = scores.clone()
    for r, row in enumerate(tokens.tolist()):
        banned = banned_ngram_tokens(row, n)
        if banned:
            scores[r, list(banned)] = float("-inf")
    return scores


def process(scores: torch.Tensor, tokens: torch.Tensor, config) -> torch.Tensor:
    """Both processors, as the config asks (each off by default)."""
    if config.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, tokens, config.repetition_penalty)
    if config.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(scores, tokens, config.no_repeat_ngram_size)
    return scores
