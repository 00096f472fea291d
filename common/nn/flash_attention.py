"""Memory-efficient attention: FlashAttention's tiled online softmax (Dao et al. 2022), in plain PyTorch.

The same function as common/nn/attention.py's textbook path,

    O = softmax(S) V,    S = Q K^T * scale + bias + M      (scale = 1 / sqrt(d_k) unless given)

but never holding the (T_q x T_k) matrix S: the keys are read in blocks of BLOCK columns, queries in
blocks of BLOCK rows, and each query row keeps three running quantities over the key blocks seen so
far (Milakov & Gimelshein 2018, "online softmax"):

    m   = max_j S_j                                   running row maximum            (T_q, 1)
    l   = sum_j exp(S_j - m)                          running normaliser             (T_q, 1)
    acc = sum_j exp(S_j - m) V_j                      running unnormalised output    (T_q, d_v)

A new block S_b with values V_b updates them (online_softmax_update, the graded exercise):

    m'   = max(m, rowmax(S_b))
    l'   = exp(m - m') l   + rowsum(exp(S_b - m'))
    acc' = exp(m - m') acc + exp(S_b - m') V_b

and after the last block O = acc / l. The factor exp(m - m') rescales what
was summed against the old maximum to the new one, so the result is exactly softmax(S) V.

Backward (Dao et al. 2022, algorithm 4): only Q, K, V, O and each row's final m and l are kept;
each block's P = exp(S_b - m) / l is recomputed from Q and K, and with D = rowsum(dO * O)

    dV_b += P^T dO,   dP = dO V_b^T,   dS = P * (dP - D),   dQ += dS K_b * scale,   dK_b += dS^T Q * scale

(dS is also the gradient of the bias, summed over the axes the bias broadcasts along).

What it trades: memory O(T d + BLOCK^2) per head instead of O(T^2), for a Python loop over
(T_q / BLOCK) x (T_k / BLOCK) blocks and a second computation of S in the backward. On a GPU that
trade also saves time (S never goes to slow memory); in plain PyTorch on a CPU it is slower than the
fused kernel and near the textbook path (docs/results/compute.md). A key block that the mask blocks
entirely for every row of the query block is skipped (the causal mask's upper triangle), unless a
row of it is blocked everywhere: such a row gets the textbook's uniform average over all keys
(masked scores are mask_value(dtype), finite, so exp(S - m) = 1 for each).

Dropout on the weights (training, dropout_p > 0): the mask of each block is drawn from a generator
seeded once per call, and the backward replays the same draws in the same order, as FlashAttention
replays its random-number offsets. Its masks are not the textbook path's (that draws one T_q x T_k
mask at once); both are Bernoulli(1 - p) per weight, scaled by 1 / (1 - p).

Pinned to the textbook path by tests/test_flash_attention.py (outputs and gradients <= 1e-5, masks,
padding, fully blocked rows, bias and scale included).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from common.nn.masks import mask_value

BLOCK = 128  # rows (queries) and columns (keys) per tile


# BEGIN EXERCISE online_softmax
def online_softmax_update(
    m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor, scores: torch.Tensor, values: torch.Tensor,
    keep: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold one block of keys into the running softmax of each query row.

    m, l: (..., T_q, 1) the running maximum and normaliser (m = -inf, l = 0 before the first block);
    acc: (..., T_q, d_v) the running sum of exp(S - m) V; scores S_b: (..., T_q, T_b); values V_b:
    (..., T_b, d_v). keep: None, or the dropout factors m_ij / (1 - p) (..., T_q, T_b), applied to
    the weights that multiply V_b but not to the normaliser l.
        m'   = max(m, rowmax(S_b))
        l'   = exp(m - m') l   + rowsum(exp(S_b - m'))
        acc' = exp(m - m') acc + exp(S_b - m') V_b
    Returns (m', l', acc'); after the last block softmax(S) V = acc / l.
    """
    m_new = torch.maximum(m, scores.amax(dim=-1, keepdim=True))  # (..., T_q, 1)
    alpha = torch.exp(m - m_new)  # rescales the old sums to the new maximum; 0 when m = -inf
    p = torch.exp(scores - m_new)  # (..., T_q, T_b)
    l_new = alpha * l + p.sum(dim=-1, keepdim=True)
    if keep is not None:
        p = p * keep
    acc_new = alpha * acc + p @ values  # (..., T_q, d_v)
    return m_new, l_new, acc_new
# END EXERCISE online_softmax


def _as_4d(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Prepend size-1 axes up to (B, H, T_q, T_k) broadcast form (a view)."""
    if x is None:
        return None
    if x.dim() > 4:
        raise ValueError(f"mask and bias must broadcast to (B, H, T_q, T_k), got shape {tuple(x.shape)}")
    return x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))


def _tile(x: Optional[torch.Tensor], rows: slice, cols: slice) -> Optional[torch.Tensor]:
    """The (rows, cols) block of a 4-d broadcastable tensor; a size-1 axis stays whole."""
    if x is None:
        return None
    return x[:, :, rows if x.size(2) > 1 else slice(None), cols if x.size(3) > 1 else slice(None)]


class _Tiles:
    """The block loop both passes share: for each (query block, key block) the recomputed scores
    S = Q_i K_j^T * scale + bias + M, the mask block, and (with dropout) the block's keep factors,
    drawn in the same order forward and backward from a generator seeded once."""

    def __init__(self, q, k, mask, bias, scale, dropout_p, seed, block):
        self.q, self.k, self.mask, self.bias = q, k, mask, bias
        self.scale, self.dropout_p, self.seed, self.block = scale, dropout_p, seed, block
        self.blocked = mask_value(q.dtype)
        # A row blocked everywhere must see every key block (uniform average), so never skip for it.
        self.row_has_key = None if mask is None else mask.any(dim=-1)  # (b, h, T_q or 1)

    def __iter__(self):
        q, k, block = self.q, self.k, self.block
        T_q, T_k = q.size(2), k.size(2)
        gen = None
        if self.dropout_p > 0.0:
            gen = torch.Generator(device=q.device).manual_seed(self.seed)
        for i0 in range(0, T_q, block):
            rows = slice(i0, min(i0 + block, T_q))
            q_i = q[:, :, rows]
            all_rows_see_a_key = (self.row_has_key is None
                                  or bool(self.row_has_key[:, :, rows if self.row_has_key.size(2) > 1
                                                           else slice(None)].all()))
            for j0 in range(0, T_k, block):
                cols = slice(j0, min(j0 + block, T_k))
                mask_ij = _tile(self.mask, rows, cols)
                if mask_ij is not None and all_rows_see_a_key and not bool(mask_ij.any()):
                    continue  # every weight of this block is exactly 0
                s = (q_i @ k[:, :, cols].transpose(-2, -1)) * self.scale  # (B, H, b_q, b_k)
                bias_ij = _tile(self.bias, rows, cols)
                if bias_ij is not None:
                    s = s + bias_ij
                if mask_ij is not None:
                    s = s.masked_fill(~mask_ij, self.blocked)
                keep = None
                if gen is not None:
                    u = torch.rand(s.shape, generator=gen, dtype=torch.float32, device=s.device)
                    keep = u.ge_(self.dropout_p).mul_(1.0 / (1.0 - self.dropout_p)).to(s.dtype)
                yield rows, cols, s, mask_ij, keep


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, scale, dropout_p, seed, block):
        B, H, T_q, _ = q.shape
        out = q.new_empty(B, H, T_q, v.size(-1))
        stats = q.new_empty(2, B, H, T_q, 1)  # the final m and l of each row
        current = None  # [rows, m, l, acc] of the query block the tiles are in (they come block by block)
        for rows, cols, s, _, keep in _Tiles(q, k, mask, bias, scale, dropout_p, seed, block):
            if current is None or current[0] != rows:
                if current is not None:
                    _finish(current, out, stats)
                current = [rows, s.new_full(s.shape[:-1] + (1,), -math.inf),
                           s.new_zeros(s.shape[:-1] + (1,)), s.new_zeros(s.shape[:-1] + (v.size(-1),))]
            current[1:] = online_softmax_update(*current[1:], s, v[:, :, cols], keep)
        if current is not None:
            _finish(current, out, stats)
        ctx.save_for_backward(q, k, v, bias, mask, out, stats)
        ctx.config = (scale, dropout_p, seed, block)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, mask, out, stats = ctx.saved_tensors
        scale, dropout_p, seed, block = ctx.config
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        dbias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[3] else None
        D = (grad_out * out).sum(dim=-1, keepdim=True)  # (B, H, T_q, 1) = rowsum(dO * O)
        for rows, cols, s, mask_ij, keep in _Tiles(q, k, mask, bias, scale, dropout_p, seed, block):
            p = torch.exp(s - stats[0, :, :, rows]) / stats[1, :, :, rows]  # (B, H, b_q, b_k): the weights, recomputed
            do_i = grad_out[:, :, rows]
            dp = do_i @ v[:, :, cols].transpose(-2, -1)  # dL/d(weights after dropout)
            if keep is not None:
                dv[:, :, cols] += (p * keep).transpose(-2, -1) @ do_i
                dp = dp * keep
            else:
                dv[:, :, cols] += p.transpose(-2, -1) @ do_i
            ds = p * (dp - D[:, :, rows])  # softmax's backward, row by row
            if mask_ij is not None:
                ds = ds.masked_fill(~mask_ij, 0.0)  # a blocked score is a constant
            dq[:, :, rows] += (ds @ k[:, :, cols]) * scale
            dk[:, :, cols] += (ds.transpose(-2, -1) @ q[:, :, rows]) * scale
            if dbias is not None:
                axes = tuple(a for a in range(4) if dbias.size(a) == 1 and ds.size(a) > 1)
                _tile(dbias, rows, cols).add_(ds.sum(dim=axes, keepdim=True) if axes else ds)
        return dq, dk, dv, dbias, None, None, None, None, None


def _finish(row_block: list, out: torch.Tensor, stats: torch.Tensor) -> None:
    """O = acc / l for one query block, written into out; its m and l into stats for the backward."""
    rows, m, l, acc = row_block
    out[:, :, rows] = acc / l
    stats[0, :, :, rows] = m
    stats[1, :, :, rows] = l


def flash_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    training: bool = False,
    need_weights: bool = False,
    scale: Optional[float] = None,
    bias: Optional[torch.Tensor] = None,
    block_size: int = BLOCK,
) -> tuple[torch.Tensor, None]:
    """softmax(Q K^T * scale + bias + M) V in tiles of block_size x block_size, never forming S.

    Arguments and shapes as common.nn.attention.scaled_dot_product_attention: query (B, H, T_q, d_k),
    key (B, H, T_k, d_k), value (B, H, T_k, d_v); mask bool broadcastable to (B, H, T_q, T_k),
    True = may attend; bias float broadcastable likewise (its gradient is returned); scale None =
    1 / sqrt(d_k). Returns (output (B, H, T_q, d_v), None): the weights are never formed, so
    need_weights=True is an error (use the textbook path to look at them).
    """
    if need_weights:
        raise ValueError("flash_attention never forms the attention weights; use "
                         "scaled_dot_product_attention (attn_impl 'eager') to get them")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of rows, got {block_size}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = may attend), got {mask.dtype}")
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    p = dropout_p if training else 0.0
    seed = int(torch.randint(0, 2**62, (1,))) if p > 0.0 else 0  # from the global RNG: seeded runs repeat
    out = _FlashAttention.apply(query, key, value, _as_4d(bias), _as_4d(mask), scale, p, seed, block_size)
    return out, None
