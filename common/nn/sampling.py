"""Turning the logits z of the next position into a token: the decoding rules every generator shares.

    greedy     x_{t+1} = argmax_i z_i
    sampling   x_{t+1} ~ softmax(filter(z / tau)), filters: temperature tau, top-k, top-p (nucleus)

minigpt.generate (GPT) and minit5.generate (T5) both call next_token; the filters are written once.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from common.errors import UserError


# BEGIN EXERCISE sampling
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """z / tau: softmax(z / tau) is sharper than softmax(z) for tau < 1 and flatter for tau > 1."""
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits:  z'_i = z_i if z_i >= z_(k) else -inf,  z_(k) = the k-th largest.

    Logits tied with z_(k) are kept too. -inf gets probability exactly 0 after the softmax.
    logits (..., V) -> (..., V).
    """
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability mass reaches p.

    Sort the probabilities p_(1) >= p_(2) >= ...; token (j) is kept iff sum_{i<j} p_(i) < p,
    i.e. the tokens before it have not reached p yet (so the most likely token is always kept).
    logits (..., V) -> (..., V) with the dropped tokens at -inf.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # sum_{i<j} p_(i)
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: Optional[int],
               top_p: Optional[float], generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B, V) logits of the last position -> (B,) chosen token ids."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
# END EXERCISE sampling


def check_sampling_arguments(do_sample: bool, temperature: float, top_k: Optional[int], top_p: Optional[float],
                             generator=None, seed: Optional[int] = None) -> None:
    """The decoding rule's arguments, one UserError line for each wrong one (every family's generate)."""
    if do_sample and not temperature > 0:
        raise UserError(f"temperature must be > 0 when sampling, got {temperature}; "
                        "for the most likely token use do_sample=False (greedy)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1] or None, got {top_p}")
    if generator is not None and seed is not None:
        raise UserError("pass either seed or generator, not both")


@contextlib.contextmanager
def generation_mode(model):
    """model.eval() (no dropout) under torch.inference_mode() while generating; the model's mode back after.

    inference_mode skips autograd's bookkeeping (version counters, view tracking) on every op of every
    step, cheaper than no_grad. Its tensors cannot enter autograd later, so a generate clones the
    tokens it returns outside this block: the caller may feed them to training.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
