"""Which columns of a dataset reach the model, and what to say when a model cannot take a batch.

The rule of `remove_unused_columns` (transformers' Trainer does the same):

    keep(item) = {rename(k): v for k, v in item.items() if rename(k) in forward_arguments(model)
                                                          or k in COLLATOR_INPUTS}
    rename('label') = rename('label_ids') = 'labels';  rename(k) = k otherwise

applied to every example before the collator sees it, so a `datasets.Dataset` tokenized with
`.map(...)` can keep its text column: the collator never has to turn a string into a tensor.
A forward that takes **kwargs accepts every column, and nothing is dropped.
"""
from __future__ import annotations

import inspect
import random
import sys
from collections.abc import Mapping
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

LABEL_ALIASES = ("label", "label_ids")  # the names datasets and transformers' collators use
COLLATOR_INPUTS = ("special_tokens_mask",)  # read and removed by DataCollatorForLanguageModeling
LOSS_KEYS = ("labels", "next_sentence_label", "start_positions", "end_positions")


def forward_arguments(model) -> Optional[frozenset]:
    """The keyword names `model.forward` accepts (a module or a class); None when it takes **kwargs."""
    forward = model.forward
    parameters = list(inspect.signature(forward).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters if p.kind in kinds and p.name != "self")


def model_columns(item: Mapping, accepted: Optional[frozenset]) -> tuple[dict, list[str]]:
    """(the item as the model takes it, names of the columns dropped); see the module docstring."""
    if "labels" not in item and (accepted is None or "labels" in accepted):
        alias = next((k for k in LABEL_ALIASES if k in item), None)
        if alias is not None:
            item = {("labels" if k == alias else k): v for k, v in item.items()}
    if accepted is None:
        return dict(item), []
    kept = {k: v for k, v in item.items() if k in accepted or k in COLLATOR_INPUTS}
    return kept, [k for k in item if k not in kept]


class ColumnFilter:
    """collate_fn = the collator applied to examples reduced by `model_columns`.

    A plain class (not a closure) so that DataLoader workers can receive it.
    """

    def __init__(self, collator: Callable, accepted: Optional[frozenset]):
        self.collator, self.accepted = collator, accepted

    def __call__(self, features):
        if features and isinstance(features[0], Mapping):
            features = [model_columns(f, self.accepted)[0] for f in features]
        return self.collator(features)


def unused_columns(dataset, accepted: Optional[frozenset]) -> list[str]:
    """The columns `model_columns` drops, read from the dataset's first example (or its
    column_names, as a `datasets.Dataset` has them, so that nothing is loaded)."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, (list, tuple)):
        item = dict.fromkeys(names)
    else:
        try:
            item = _first_item(dataset)
        except (IndexError, KeyError, TypeError):
            return []
    return model_columns(item, accepted)[1] if isinstance(item, Mapping) else []


def _first_item(dataset):
    """dataset[0], leaving python's, numpy's and torch's random generators as they were (an item
    that draws random numbers must not shift the training run's stream, resumed or not)."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return dataset[0]
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def classes_with_a_loss(model: nn.Module, keys) -> list[str]:
    """Names of the nn.Module classes of the model's own package whose forward accepts every key
    of the batch, labels included: the heads that compute a loss from such a batch."""
    package = sys.modules.get(type(model).__module__.split(".")[0])
    names = getattr(package, "__all__", None) or [n for n in dir(package) if not n.startswith("_")]
    found = []
    for name in names:
        cls = getattr(package, name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or cls is type(model):
            continue
        accepted = forward_arguments(cls)
        if accepted is not None and set(keys) <= accepted and any(k in accepted for k in LOSS_KEYS):
            found.append(name)
    return sorted(found)


def no_loss_message(model: nn.Module, keys) -> str:
    """One line for a batch with labels that the model computes no loss from: what the model
    lacks and the classes of its package that would compute one (`classes_with_a_loss`)."""
    name, keys = type(model).__name__, sorted(keys)
    accepted = forward_arguments(model)
    missing = [k for k in keys if k in LOSS_KEYS and accepted is not None and k not in accepted]
    what = (f"{name}.forward takes no {', '.join(map(repr, missing))}, so {name} computes no loss"
            if missing else f"{name} returned no .loss")
    heads = classes_with_a_loss(model, keys)
    package = type(model).__module__.split(".")[0]
    fix = (f"train a class of {package} that computes a loss from such a batch: {', '.join(heads)}"
           if heads else "train a model whose forward computes a loss from the labels (a model with a task head)")
    return f"{what} for a batch with keys {keys}; {fix}"
