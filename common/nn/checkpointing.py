"""Activation checkpointing: keep less of the forward pass, recompute the rest in the backward.

Without it, autograd keeps every block's intermediate tensors (the attention weights, the
feed-forward's (B, T, d_ff) tensors ...) from the forward pass until the backward pass reads them.
Two granularities, the names of Korthikanti et al. (2022), chosen by
`model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"granularity": ...})`
(`--gradient_checkpointing_kwargs '{"granularity": "selective"}'` on the command line):

"full" (the default; Chen et al. 2016): keep each block's INPUT (B, T, d) only; the backward pass
runs the whole block's forward again, on that input, to get what it needs.
"selective": keep the outputs of the block's matrix products with a weight (the Linears: Q, K, V,
W^O, the feed-forward's two products), recompute everything else: the attention core
(Q K^T, mask, softmax, dropout, P V) and the cheap elementwise work (norms, activation, residual
adds, dropout masks). The attention core is where the (T x T) tensors live, so it is most of the
memory at long contexts and a small part of the FLOPs; the Linears are most of the FLOPs.

Activations kept per layer of a GPT-2 block (numbers; x 4 bytes in float32; B T tokens, width d,
h heads, FFN width 4d, no dropout; minigpt/accounting.py writes out the plain case term by term):

    plain        2 (2 B T d) norms + 3 B T d (Q, K, V) + B h T^2 (P) + B T d (merged heads) + 2 (4 B T d) FFN
                 = 16 B T d + B h T^2  (+ 4 B T for the norms' statistics)
    selective    B T d (the input) + 3 B T d (Q, K, V) + B T d (W^O's output) + 4 B T d + B T d (the
                 FFN's two products) = 10 B T d: no T^2 term
    full         B T d (the input)
    plus, while the backward runs through one block, that block's plain activations (recomputed).

Extra work in the backward, per layer (forward FLOPs of a block: 24 B T d^2 + 4 B T^2 d):
    selective    the attention core again: 4 B T^2 d FLOPs and its (T x T) elementwise passes,
                 plus the norms' and the activation's elementwise passes; no Linear
    full         the whole forward again: 24 B T d^2 + 4 B T^2 d (about +1/3 of a step: forward 1,
                 backward 2)

What it trades: compute for memory; the numbers are the same. The recomputation draws dropout
masks again, so the random-number state at the block's start is saved and restored
(preserve_rng_state=True): the same masks, the same gradients. use_reentrant=False is torch's
recommended implementation (it works with keyword arguments and with inputs that need no gradient);
"selective" is torch's selective checkpointing (create_selective_checkpoint_contexts) with the
policy `keep_weight_products` below. Measured: docs/results/compute.md ("Activation checkpointing").
Pinned by tests/test_checkpointing.py: gradients bit-equal to the run without, both granularities,
GPT, BERT and T5, with dropout too.
"""
from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

GRANULARITIES = ("full", "selective")

# A Linear y = x W^T + b on (B, T, d) runs as one of these products on the (B T, d) view; the
# attention's Q K^T and P V are batched products (aten.bmm), which "selective" recomputes.
_WEIGHT_PRODUCTS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)


def keep_weight_products(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """The "selective" policy: save the output of every product with a weight, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in _WEIGHT_PRODUCTS else CheckpointPolicy.PREFER_RECOMPUTE


_selective_contexts = functools.partial(create_selective_checkpoint_contexts, keep_weight_products)


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


def run_block(block, checkpointing, *args, **kwargs):
    """block(*args, **kwargs), with its activations recomputed in the backward pass when
    `checkpointing` is "full" (or True) or "selective", training and gradients are on (at evaluation
    nothing is kept for a backward anyway); False or None runs the block plainly."""
    if not checkpointing or not block.training or not torch.is_grad_enabled():
        return block(*args, **kwargs)
    if checkpointing == "selective":
        return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True,
                          context_fn=_selective_contexts, **kwargs)
    return checkpoint(block, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)
