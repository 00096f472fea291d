"""Dropout (Srivastava et al. 2014), the "inverted" form every Transformer uses:

    Dropout(x)_i = x_i * m_i / (1 - p),   m_i ~ Bernoulli(1 - p) independently      (training)
    Dropout(x)   = x                                                                 (evaluation)

Dividing by 1 - p keeps E[Dropout(x)_i] = x_i, so evaluation needs no rescaling.

This is the one dropout of the project (every model's embeddings, sub-layers, attention weights and
classifier heads use it). It is nn.Dropout's function; only the way m is drawn differs, for speed on
the CPU, where every random number comes from one generator in one thread (the draws took 10% of a
BERT pre-training step on 2 cores: docs/results/bench.md). F.dropout fills its mask with bernoulli_,
a float64 uniform per element; `torch.rand` would be a float32 per element; here one 64-bit draw
(`random_` on int64: 63 random bits, the sign bit 0) is cut into four 15-bit integers
v_i ~ U{0 .. 2^15 - 1}, a quarter of the draws. With q = p 2^15 and f = floor(q):

    m_i = 0  if v_i < f,      m_i = 1  if v_i > f,      v_i = f (probability 2^-15): m_i = [u_i >= q - f]

with u_i ~ U[0, 1) drawn only for those few ties, so P(m_i = 0) = f 2^-15 + 2^-15 (q - f) = p exactly
(to the float32 grid of q - f, about 2^-39 in p), finer than a float32 uniform's 2^-24.
On other devices F.dropout's fused kernel is faster, so it runs there. tests/test_dropout.py pins both
to the formula (mean, variance, zeros, scale, eval) and the tie rule to its exact counts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """x * m / (1 - p), m_i ~ Bernoulli(1 - p), when training and p > 0; else x itself."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or not 0.0 < p < 1.0:
        return F.dropout(x, p, training=True)
    scale = keep_mask(uniform_15bit(x.shape), p).to(x.dtype).mul_(1.0 / (1.0 - p))  # m / (1 - p)
    return x * scale


BITS = 15  # bits per uniform integer: four per 63-bit draw


def uniform_15bit(shape) -> torch.Tensor:
    """int16 tensor of `shape`, independent v_i ~ U{0 .. 2^15 - 1}: four per int64 draw of the CPU generator
    (random_ gives 63 random bits, bit 63 is 0; masking each 16-bit piece to its low 15 bits makes all four
    alike)."""
    n = 1
    for size in shape:
        n *= size
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    return bits.view(torch.int16)[:n].bitwise_and_(2 ** BITS - 1).view(shape)


def keep_mask(v: torch.Tensor, p: float) -> torch.Tensor:
    """m_i = [v_i > f], and for v_i = f, m_i = [u_i >= q - f], u_i ~ U[0, 1) (q = p 2^15, f = floor(q)):
    P(m_i = 0) = p for v_i ~ U{0 .. 2^15 - 1} (module docstring). Bool tensor shaped like v."""
    q = p * 2 ** BITS
    f = int(q)
    keep = v.gt(f)
    ties = v.eq(f).view(-1).nonzero().squeeze(1)
    if ties.numel():
        keep.view(-1)[ties] = torch.rand(ties.numel()) >= (q - f)
    return keep


class Dropout(nn.Module):
    """nn.Dropout's interface (p, train/eval) over `dropout` above. No parameters, so swapping
    it for nn.Dropout changes no state_dict key."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
