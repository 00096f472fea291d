"""A speed trick of T5 training, in one place: the LM head and the softmax only where the loss reads.

The loss reads the logits at the scored positions I = {(b, t) : labels[b, t] != -100} only:

    L = -(1/N) sum_{(b, t) in I} log softmax(z_{b,t})[y_{b,t}],   N = |I|
    z_{b,t} = h_{b,t} W^T   with h = RMS_f(d_L) * d_model^-0.5, W = E   (tied head, T5)
                            or   h = RMS_f(d_L),                W = W_lm (untied, T5 v1.1)

The decoder still runs at every one of the B T positions: the causal self-attention of a scored
position t reads the keys and values of every position <= t, scored or not. What runs on the N rows
of I instead of the B T rows is the head: the vocabulary projection (N x d)(d x V) instead of
(B T x d)(d x V), and the softmax over V with its backward. Batches of translation pairs are padded
to the longest target of the batch (minit5/data.py DataCollatorForSeq2Seq writes -100 there), so a
large share of the rows are not scored; with V = 4000-8000 and d = 128-256 the head is one of the
largest matrix products of a small T5. The rows are picked after the decoder's final RMSNorm and
dropout, so the dropout masks are the ones the textbook path draws.

What it trades: the loss and every gradient are the same (a row outside I adds 0 to the loss and
so 0 to every gradient; only the order of float sums changes), pinned by
tests/test_t5_logits_at_labels.py. But the logits come back as (N, V), the scored positions in
row-major order (b, then t: the order of labels[labels != -100]), instead of (B, T, V). Code that
reads logits of every position (generation, a tutorial's picture of P(y_t)) calls without labels,
or with the switch off.

Switched on by the forward argument `logits_at_labels_only` (the training tools minit5/finetune.py
and minit5/pretrain.py pass it with every batch; it is never saved in config.json) and read in one place: T5ForConditionalGeneration.forward
(minit5/model.py), which hands the decoder's output here. Everything else - the encoder, the
decoder, `lm_logits` with its d_model^-0.5 - is the textbook computation.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.nn.losses import IGNORE_INDEX, cross_entropy


def applies(switch: bool, labels: Optional[torch.Tensor]) -> bool:
    """The trick runs when it is switched on and a loss will read the labels."""
    return bool(switch) and labels is not None


def logits_and_loss(model, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head and the loss at the scored positions only.

    hidden (B, T, d): the decoder's output at every position; labels (B, T), -100 = not scored.
    Returns (logits (N, V) of the N scored positions in row-major order, the mean cross-entropy
    over them: 0 when N = 0, as the textbook loss gives).
    """
    scored = labels != IGNORE_INDEX  # (B, T)
    logits = model.lm_logits(hidden[scored])  # (N, d) -> (N, V); the tied rescale lives in lm_logits
    return logits, cross_entropy(logits, labels[scored])  # (N, V), scalar
