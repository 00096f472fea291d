"""Activation checkpointing: keep less of the forward pass, recompute the rest in the backward.

Without it, autograd keeps every block's intermediate tensors (the attention weights, the
feed-forward's (B, T, d_ff) tensors ...) from the forward pass until the backward pass reads them.
Two granularities, named as in Korthikanti et al. (2022), chosen by
`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"granularity": ...})`
(`--gradient_checkpointing_kwargs '{"granularity": "selective"}'` on the command line):

"full" (the default; Chen et al. 2016): keep each block's INPUT (B, T, d) only; the backward pass
runs the whole block's forward again, on that input, to get what it needs (run_block).
"selective": keep everything but the attention core; recompute softmax(Q K^T / sqrt(d_k) + M) V,
its mask and its dropout from the kept Q, K, V (run_attention). The core is where the (T x T)
tensors live, so it is most of the memory at long contexts, and it holds none of the Linears,
which are most of the FLOPs.

Activations kept per layer of a GPT-2 block (numbers; x 4 bytes in float32; B T tokens, width d,
h heads, FFN width 4d, no dropout; minigpt/accounting.py writes out the plain case term by term):

    plain        2 (2 B T d) norms + 3 B T d (Q, K, V) + B h T^2 (P) + B T d (merged heads) + 2 (4 B T d) FFN
                 = 16 B T d + B h T^2  (+ 4 B T for the norms' statistics, + T^2 bytes of the mask)
    selective    16 B T d (+ 4 B T): the same without the (T x T) terms
    full         B T d (the input)
    plus, while the backward runs through one block, what that block recomputes.
    (With dropout p > 0: plain adds 2 B T d + 2 B h T^2, selective 2 B T d, full nothing.)
So selective keeps (16 d + h T) / (16 d) times less than plain: 2x at T = 16 d / h, more beyond.

Extra work in the backward, per layer (a block's forward: 24 B T d^2 + 4 B T^2 d FLOPs):
    selective    the attention core again: 4 B T^2 d FLOPs and its (T x T) passes (mask, softmax)
    full         the whole forward again (about +1/3 of a step if the backward costs twice the
                 forward, as it does for products; elementwise work, such as the softmax over
                 (T x T), has a backward about as cheap as its forward, so its share is larger)

What it trades: compute for memory; the numbers are the same. The recomputation draws dropout
masks again, so the random-number state at the start of what is recomputed is saved and restored
(preserve_rng_state=True): the same masks, the same gradients. use_reentrant=False is torch's
recommended implementation (it works with keyword arguments and with inputs that need no gradient).
Measured: docs/results/compute.md ("Activation checkpointing"). Pinned by tests/test_checkpointing.py:
gradients bit-equal to the run without, both granularities, GPT, BERT and T5, with dropout too, and
the bytes kept per layer equal to the formulas above.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

GRANULARITIES = ("full", "selective")


def checkpointing_granularity(gradient_checkpointing_kwargs) -> str:
    """The granularity named by transformers' gradient_checkpointing_kwargs dict ("full" when None).

    Accepted keys: "granularity" ("full" or "selective") and "use_reentrant" (False only: the
    implementation here is torch's non-reentrant one). Anything else is one clear error."""
    kwargs = dict(gradient_checkpointing_kwargs or {})
    granularity = kwargs.pop("granularity", "full")
    if granularity not in GRANULARITIES:
        raise ValueError(f"gradient_checkpointing_kwargs: granularity must be one of {GRANULARITIES}, "
                         f"got {granularity!r}")
    if kwargs.pop("use_reentrant", False) is not False:
        raise ValueError("gradient_checkpointing_kwargs: use_reentrant=True is not supported; the "
                         "recomputation here is torch's non-reentrant checkpoint (drop the key or pass false)")
    if kwargs:
        raise ValueError(f"gradient_checkpointing_kwargs: unknown key(s) {sorted(kwargs)}; the accepted keys "
                         "are 'granularity' (\"full\" or \"selective\") and 'use_reentrant' (false)")
    return granularity


def _recomputing(module, granularity, wanted: str) -> bool:
    """Recompute when the module's granularity is `wanted` (True means "full"), it is training and
    gradients are on (at evaluation nothing is kept for a backward anyway)."""
    granularity = "full" if granularity is True else granularity
    return granularity == wanted and module.training and torch.is_grad_enabled()


def run_block(block, granularity, *args, **kwargs):
    """block(*args, **kwargs); with granularity "full" (or True) only the block's inputs are kept and
    the whole block runs again in the backward. A block stack calls this for each of its blocks."""
    if _recomputing(block, granularity, "full"):
        return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    return block(*args, **kwargs)


def run_attention(module, granularity, attend, *args, **kwargs):
    """attend(*args, **kwargs), an attention core (Q, K, V, mask ... -> output, weights or None); with
    granularity "selective" only its inputs are kept (Q, K, V, the mask, T5's bias) and it runs again in
    the backward. An attention layer calls this around its core."""
    if _recomputing(module, granularity, "selective"):
        return checkpoint(attend, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
    return attend(*args, **kwargs)
