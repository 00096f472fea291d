"""Attention rollout (Abnar and Zuidema 2020): how much each input token flows into each position
through ALL layers, not one layer's raw attention.

Each layer mixes the residual stream half through attention and half through the skip connection:
    Â_l = 0.5 mean_h A_{l,h} + 0.5 I,   row-normalised (rows already sum to 1: mean of stochastic rows)
    R = Â_L Â_{L-1} ... Â_1            R[i, j]: the share of token j in position i's final state
A product of row-stochastic matrices is row-stochastic: every row of R sums to 1 (the test).
Shapes: attentions per layer (B, H, T, T) -> rollout (B, T, T).
"""
from __future__ import annotations

from typing import Sequence

import torch


def rollout(attentions: Sequence[torch.Tensor], residual_weight: float = 0.5) -> torch.Tensor:
    """R = Â_L ... Â_1 with Â_l = (1 - r) mean_h A_l + r I, rows renormalised. -> (B, T, T)."""
    result = None
    for A in attentions:
        mixed = A.mean(dim=1)  # (B, T, T)
        eye = torch.eye(mixed.size(-1), dtype=mixed.dtype, device=mixed.device)
        mixed = (1 - residual_weight) * mixed + residual_weight * eye
        mixed = mixed / mixed.sum(-1, keepdim=True)
        result = mixed if result is None else mixed @ result  # Â_l (Â_{l-1} ... Â_1)
    return result
