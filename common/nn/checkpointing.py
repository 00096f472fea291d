"""Activation checkpointing (Chen et al. 2016): keep a block's input, recompute the block in the backward.

Without it, autograd keeps every block's intermediate tensors (the attention weights, the
feed-forward's (B, T, d_ff) tensors ...) from the forward pass until the backward pass reads them:
activation memory grows as L x (per-block activations). With it, only each block's INPUT (B, T, d) is
kept; the backward pass runs the block's forward again, on that input, to get what it needs:

    memory  L * B T d  +  one block's activations        instead of   L * one block's activations
    time    one more forward pass (about +1/3 of a step: forward 1, backward 2)

What it trades: compute for memory; the numbers are the same. The recomputation draws dropout
masks again, so the random-number state at the block's start is saved and restored
(preserve_rng_state=True): the same masks, the same gradients. use_reentrant=False is torch's
recommended implementation (it works with keyword arguments and with inputs that need no gradient).
Pinned by tests/test_checkpointing.py: gradients bit-equal to the run without, with dropout too.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def run_block(block, enabled: bool, *args, **kwargs):
    """block(*args, **kwargs), recomputed in the backward pass when `enabled`, training and
    gradients are on (at evaluation nothing is kept for a backward anyway)."""
    if enabled and block.training and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    return block(*args, **kwargs)
