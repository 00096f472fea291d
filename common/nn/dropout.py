"""Dropout (Srivastava et al. 2014), the "inverted" form every Transformer uses:

    Dropout(x)_i = x_i * m_i / (1 - p),   m_i ~ Bernoulli(1 - p) independently      (training)
    Dropout(x)   = x                                                                 (evaluation)

Dividing by 1 - p keeps E[Dropout(x)_i] = x_i, so evaluation needs no rescaling.

This is the one dropout of the project (every model's embeddings, sub-layers, attention weights and
classifier heads use it). It is nn.Dropout's function; only the way m is drawn differs, for speed on
the CPU: F.dropout fills its mask with bernoulli_, a float64 uniform per element in one thread,
while here m_i = [u_i >= p] with u_i ~ U[0, 1) from a float32 torch.rand (about 2.5x cheaper on a
CPU: docs/results/bench.md). P(u_i >= p) = 1 - p up to the float32 grid (2^-24), the resolution GPU
dropout kernels draw with too. On other devices F.dropout's fused kernel is faster, so it runs
there. tests/test_dropout.py pins both to the formula (mean, variance, zeros, scale, eval).
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
    u = torch.rand(x.shape, dtype=torch.float32)  # float32 even for bf16 x: p needs the fine grid
    scale = u.ge_(p).mul_(1.0 / (1.0 - p)).to(x.dtype)  # m / (1 - p): 0 or 1 / (1 - p)
    return x * scale


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
