"""Rotary position embeddings, RoPE (Su et al. 2021), the position signal of Llama.

Instead of adding a learned vector W_pe[p] to the input, RoPE rotates every query and key inside
attention by an angle proportional to its position p. The d_k = head_dim dimensions of a head form
d_k / 2 planes; plane i turns by p * omega_i, with a frequency that falls geometrically:

    omega_i = base^(-2i / d_k),   i = 0 .. d_k/2 - 1          base = rope_theta (10000 in Llama)

    rotate a pair (a, b) by angle phi:   (a cos phi - b sin phi,  b cos phi + a sin phi)

Why it works: rotating q by p omega and k by s omega leaves q . k depending on (p - s) omega only
(a rotation by phi_1 then the inverse rotation by phi_2 is one rotation by phi_1 - phi_2), so
attention scores see the DISTANCE between tokens, not where they sit. Rotations keep norms, so no
vector grows with position, and there is no table of positions to outgrow.

Which dimensions form a plane is a convention, and checkpoints differ:
    rotate-half (Hugging Face, used here): plane i = dimensions (i, i + d_k/2)
        RoPE(x) = x * cos + rotate_half(x) * sin,   rotate_half([x_1, x_2]) = [-x_2, x_1]
        with cos, sin = cos/sin of [p omega_0 .. p omega_{d_k/2-1}, p omega_0 .. p omega_{d_k/2-1}]
    interleaved (the paper, Meta's original Llama code): plane i = dimensions (2i, 2i + 1)
The two are the same function up to a fixed permutation of each head's dimensions: reorder the
output rows of W^Q and W^K (and only those) from (0, 1, 2, 3, ...) to (0, 2, 4, ..., 1, 3, 5, ...)
and the interleaved model's scores come out of the rotate-half one. The Hugging Face converter does
exactly this to Meta's weights, so a Hugging Face folder is already in rotate-half order.

Shapes: positions (B, T) long; cos, sin (B, T, d_k); q (B, H, T, d_k), k (B, H_kv, T, d_k).
"""
from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """omega_i = base^(-2i / d_k), i = 0 .. d_k/2 - 1: (d_k / 2,) float32. d_k must be even."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # 2i / d_k
    return 1.0 / (base ** exponents)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of p * [omega_0 .. omega_{d_k/2-1}, omega_0 .. omega_{d_k/2-1}] (rotate-half order).

    positions (B, T) -> cos, sin (B, T, d_k). The angles are computed in float32 whatever the model's
    dtype (p * omega reaches thousands of radians, where bfloat16 has no digits left), then cast.
    """
    frequencies = rope_frequencies(head_dim, base).to(positions.device)  # (d_k/2,)
    angles = positions[..., None].float() * frequencies  # (B, T, d_k/2): p omega_i
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, d_k): plane i is (i, i + d_k/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x_1, x_2] -> [-x_2, x_1], halves of the last dimension: (..., d_k) -> (..., d_k)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


# BEGIN EXERCISE rope
def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE(x) = x * cos + rotate_half(x) * sin: each plane (i, i + d_k/2) turned by p omega_i.

    x (B, H, T, d_k) queries or keys; cos, sin (B, T, d_k) from rope_cos_sin -> (B, H, T, d_k).
    """
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d_k): the same angle for every head
    return x * cos + rotate_half(x) * sin
# END EXERCISE rope
