"""y = x W^T + b for a FEW rows x (decoding one token per row), with each product on every core.

A speed trick, used by the decode steps of minigpt and minit5 (the single-token fast paths of their
generate). PyTorch's CPU kernel runs a (B x in) (in x out) product with B of a few rows on ONE core,
so one core streams the whole weight matrix from memory while the others wait. Cutting W^T into
P = torch.get_num_threads() blocks of output columns and multiplying them with one torch.bmm runs
the P block products on P cores at once; their outputs, side by side, are the columns of x W^T.

What it trades: one copy of each weight, made once per generate call (the model's parameters are
not touched), for steps that use every core. The bandwidth each layout reaches is measured in
docs/results/bench.md; tests/test_decode_step.py pins BlockedLinear to nn.Linear.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class BlockedLinear:
    """y = x W^T + b for a few rows x, with W^T cut into P blocks of output columns.

        W^T = [W_1^T | W_2^T | ... | W_P^T]   (in, out) -> weight (P, in, n), n = ceil(out / P)
        x W^T = [x W_1^T | ... | x W_P^T]        each block is an independent product

    The last block is padded with zero columns when P does not divide out; they are cut off.
    With more than MAX_ROWS rows (a large batch, or batch x beams) the product is a real matrix
    product, which the library's kernel already spreads over the cores, and the (in, n) blocks are
    the slower layout for it: those calls run F.linear on W as nn.Linear stores it.
    """

    weight: torch.Tensor  # (P, in, n)
    bias: Optional[torch.Tensor]  # (P, 1, n), or None
    out_features: int
    dense: torch.Tensor  # (out, in), W itself (not a copy when it came from one nn.Linear)
    dense_bias: Optional[torch.Tensor]  # (out,), or None

    MAX_ROWS = 8  # the blocked layout serves up to this many rows per call

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: Optional[torch.Tensor], blocks: int) -> "BlockedLinear":
        """weight (out, in) as nn.Linear stores it, bias (out,) or None."""
        out_features, in_features = weight.shape
        n = -(-out_features // blocks)  # ceil(out / P)
        pad = blocks * n - out_features
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        dense, dense_bias = weight, bias
        if pad:  # zero rows of W = zero columns of W^T
            weight = F.pad(weight, (0, 0, 0, pad))  # (P n, in)
            bias = None if bias is None else F.pad(bias, (0, pad))  # (P n,)
        blocked = weight.reshape(blocks, n, in_features).transpose(1, 2).contiguous()  # (P, in, n): one copy
        return cls(blocked, None if bias is None else bias.view(blocks, 1, n), out_features, dense, dense_bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (B, out)."""
        B = x.size(0)
        if B > self.MAX_ROWS:
            return F.linear(x, self.dense, self.dense_bias)  # (B, out)
        rows = x.expand(self.weight.size(0), B, -1)  # (P, B, in), no copy
        if self.bias is None:
            y = torch.bmm(rows, self.weight)  # (P, B, n): block p on one core
        else:
            y = torch.baddbmm(self.bias, rows, self.weight)  # (P, B, n), + b in the same kernel
        # For B = 1 the (P, 1, n) result already lies in memory as the row [x W_1^T | ... | x W_P^T].
        y = y.view(1, -1) if B == 1 else y.transpose(0, 1).reshape(B, -1)  # (B, P n)
        return y if y.size(1) == self.out_features else y[:, :self.out_features]  # (B, out)


def blocked(linear: nn.Linear, blocks: int) -> BlockedLinear:
    return BlockedLinear.from_weight(linear.weight, linear.bias, blocks)


def stacked(linears: list[nn.Linear], blocks: int) -> BlockedLinear:
    """Several Linears of one input as one: their outputs side by side, [x W_a^T | x W_b^T | ...]."""
    biases = [linear.bias for linear in linears]
    bias = None if biases[0] is None else torch.cat(biases)
    return BlockedLinear.from_weight(torch.cat([linear.weight for linear in linears]), bias, blocks)
