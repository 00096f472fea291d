"""Induction heads (Olsson et al. 2022) and previous-token heads, scored from attention patterns.

On a sequence whose second half repeats its first, x_{n+i} = x_i (period n), an induction head at
query position t = n + i attends to the token AFTER the first occurrence of x_t, i.e. key t - n + 1:
    induction score(l, h) = mean over b, and t = s + n .. s + 2n - 1 of A_{l,h}[b, t, t - n + 1]
A previous-token head attends to the token just before:
    previous-token score(l, h) = mean over b, and t = 1 .. T - 1 of A_{l,h}[b, t, t - 1]
Both are in [0, 1]; 1 means every such query puts all its weight on that one key. A two-layer circuit:
a previous-token head in layer 0 writes "my previous token was a" into each position; an induction
head in layer 1 matches the current token a against it (K-composition) and copies what follows.
Shapes: attentions = per layer (B, H, T, T), stacked to (L, B, H, T, T); scores (L, H).
"""
from __future__ import annotations

from typing import Sequence

import torch

from common.errors import UserError


def _stack(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    return attentions if isinstance(attentions, torch.Tensor) else torch.stack(tuple(attentions))


# BEGIN EXERCISE induction_score
def induction_score(attentions: Sequence[torch.Tensor], period: int, start: int = 0) -> torch.Tensor:
    """(L, H) mean attention from each query of the repeat to the key after its first occurrence.
    The repeat occupies positions start + period .. start + 2 period - 1."""
    A = _stack(attentions)  # (L, B, H, T, T)
    T = A.size(-1)
    if start + 2 * period > T:
        raise UserError(f"a repeat of period {period} starting at {start} needs {start + 2 * period} "
                        f"positions; the attention covers {T}")
    queries = torch.arange(start + period, start + 2 * period)  # t in the repeat
    keys = queries - period + 1  # the token after the first occurrence of x_t
    return A[..., queries, keys].mean(dim=(1, -1))  # (L, H)
# END EXERCISE induction_score


def previous_token_score(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """(L, H) mean attention from position t to t - 1, over t = 1 .. T - 1."""
    A = _stack(attentions)  # (L, B, H, T, T)
    t = torch.arange(1, A.size(-1))
    return A[..., t, t - 1].mean(dim=(1, -1))  # (L, H)


def repeated_tokens(batch: int, period: int, vocab_size: int, seed: int = 0, low: int = 0) -> torch.Tensor:
    """(B, 2 period) ids: random x_0..x_{n-1} from [low, vocab_size), then the same again."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(low, vocab_size, (batch, period), generator=g)
    return torch.cat([first, first], dim=1)


def loss_per_half(logits: torch.Tensor, input_ids: torch.Tensor, period: int) -> tuple[float, float]:
    """Mean next-token cross-entropy on the first copy (predictions of x_1..x_{n-1}: noise) and on
    the repeat (predictions of x_{n+1}..x_{2n-1}, which an induction head gets right). (B, 2n, V), (B, 2n)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, 2n - 1, V)
    nll = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]  # (B, 2n - 1): predicting position t + 1
    return nll[:, :period - 1].mean().item(), nll[:, period:].mean().item()
