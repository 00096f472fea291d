"""RMSNorm (Zhang & Sennrich 2019), the normalisation of T5 and Llama:

    RMSNorm(x) = x / sqrt(mean_i(x_i^2) + eps) * weight          mean over the last dimension C

LayerNorm subtracts the mean and divides by the standard deviation, then adds a bias; RMSNorm keeps
only the rescaling (no centring, no bias). It is cheaper, and in practice trains as well: the
re-centring turned out not to be what made LayerNorm help. (LayerNorm itself is torch's nn.LayerNorm.)
"""
from __future__ import annotations

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight;   x (..., d) -> y (..., d), weight (d,), starts at 1.

    The mean of squares is taken in float32 and the normalised x is cast back to x's dtype before
    the weight multiplies it, as Llama and T5 do: in bfloat16 the sum of C squares loses digits, and
    doing the cast at the same place as the reference implementations keeps results bit-comparable.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))  # (d,)
        self.eps = eps

    # BEGIN EXERCISE rms_norm
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # (..., d)
        mean_square = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1) mean_i x_i^2
        normalized = x32 * torch.rsqrt(mean_square + self.eps)  # (..., d) unit root mean square
        return self.weight * normalized.to(x.dtype)  # (..., d)
    # END EXERCISE rms_norm

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, hidden_size: int, eps: float, bias: bool = True) -> nn.Module:
    """"layernorm": nn.LayerNorm (gamma (x - mean) / sqrt(var + eps) + beta; beta only with bias);
    "rmsnorm": RMSNorm (never a bias)."""
    if kind == "layernorm":
        return nn.LayerNorm(hidden_size, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(hidden_size, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
