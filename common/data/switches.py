"""Training switches: forward arguments a training tool passes with every batch, never saved.

A speed trick of training that changes only what a forward computes, not the model (the LM head only
where the loss reads: minit5/logits_at_labels.py, minibert/masked_only.py), is an argument of the
model's forward. The tool that wants it wraps its collator, so every batch the Trainer feeds to
`model(**batch)` carries it; the model's config.json never does, so a saved model reloads giving the
textbook (B, T, V) logits.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence


class WithSwitches:
    """collator(features) plus fixed keyword arguments: {**collator(features), **switches}.

    A class, not a lambda, so a DataLoader worker can pickle it."""

    def __init__(self, collator: Callable[[Sequence[Any]], dict], **switches):
        self.collator = collator
        self.switches = switches

    def __call__(self, features: Sequence[Any]) -> dict:
        return {**self.collator(features), **self.switches}
