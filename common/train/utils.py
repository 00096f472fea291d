"""Small pieces the Trainer uses: result tuples, callbacks, the default collator, and counting.

Counting "how much a micro-batch weighs" is what makes gradient accumulation exact. A model's
loss is a mean over the n_i label units of micro-batch i (tokens whose label is not -100, or
examples for a per-sequence label). The big-batch loss over a window of micro-batches is

    L = sum_i n_i * L_i / sum_i n_i      (NOT the mean of the L_i when the n_i differ)

so each micro-batch's loss is scaled by n_i / sum_j n_j before backward(); the summed gradients
are then exactly the gradient of L.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch

from common.errors import DataError

IGNORE_INDEX = -100
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX}


class EvalPrediction(NamedTuple):
    """What compute_metrics receives: `predictions, label_ids = eval_pred` works as in transformers."""
    predictions: Union[np.ndarray, tuple]
    label_ids: Optional[np.ndarray]


class PredictionOutput(NamedTuple):
    predictions: Union[np.ndarray, tuple]
    label_ids: Optional[np.ndarray]
    metrics: dict


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


class TrainerCallback:
    """Hooks called by the Trainer (override the ones you need). Setting
    `trainer.should_stop = True` in a hook ends training after the current step, with a checkpoint."""

    def on_train_begin(self, trainer) -> None: ...
    def on_step_end(self, trainer) -> None: ...
    def on_log(self, trainer, logs: dict) -> None: ...
    def on_evaluate(self, trainer, metrics: dict) -> None: ...
    def on_save(self, trainer, checkpoint_folder: str) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class LogWindow:
    """Sums over the steps since the last log line: loss, tokens, and seconds spent training."""

    def __init__(self):
        self.loss, self.tokens, self.seconds, self.steps = 0.0, 0.0, 0.0, 0

    def add(self, loss: float, tokens: float, seconds: float) -> None:
        self.loss, self.tokens = self.loss + loss, self.tokens + tokens
        self.seconds, self.steps = self.seconds + seconds, self.steps + 1

    def flush(self) -> dict:
        """{'loss': mean over the steps, 'tokens_per_second'}, then start a new window."""
        logs = {"loss": self.loss / max(self.steps, 1), "tokens_per_second": self.tokens / max(self.seconds, 1e-9)}
        self.__init__()
        return logs


def label_units(batch: dict, shifted: bool = False) -> int:
    """n_i of the module docstring: how many label units a micro-batch's loss averages over.

    Integer `labels` (token labels (B, T) or class labels (B,)): the count of labels != -100.
    shifted: the model shifts its labels inside the loss (a causal LM predicts x_t from x_<t, so
    position 0's label is never scored): only labels[:, 1:] count, as the loss's own mean does.
    Float labels (regression, multi-label) or no `labels` key: the number of examples B.
    """
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and not labels.is_floating_point():
        if shifted and labels.dim() >= 2:
            labels = labels[..., 1:]
        return int((labels != IGNORE_INDEX).sum())
    return batch_size(batch)


def batch_size(batch: dict) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    raise DataError(f"a batch must contain at least one tensor with a batch dimension; got keys {list(batch)}")


def count_tokens(batch: dict) -> int:
    """Tokens read by the model: attention_mask.sum() when present, else input_ids.numel()."""
    if isinstance(batch.get("attention_mask"), torch.Tensor):
        return int(batch["attention_mask"].sum())
    if isinstance(batch.get("input_ids"), torch.Tensor):
        return batch["input_ids"].numel()
    return 0


def _as_tensor(values: list) -> torch.Tensor:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, np.ndarray):
        return torch.from_numpy(np.stack(values))
    floats = isinstance(first, float) or (isinstance(first, (list, tuple)) and first and isinstance(first[0], float))
    return torch.tensor(values, dtype=torch.float32 if floats else torch.long)


def _length(value) -> Optional[int]:
    """Length of a sequence value; None for scalars (ints, floats, 0-d tensors)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.shape[0] if value.ndim > 0 else None
    return len(value) if isinstance(value, (list, tuple)) else None


def default_data_collator(features: list[dict], pad_token_id: Optional[int] = None) -> dict:
    """Stack a list of example dicts into a batch dict of tensors.

    Values of equal shape are stacked. Sequences of different lengths are right-padded to the
    longest: input_ids with `pad_token_id` (from the tokenizer; required then), attention_mask and
    token_type_ids with 0, labels with -100, anything else with 0; an attention_mask is added
    when input_ids needed padding and the examples had none.
    """
    if not features:
        raise DataError("cannot collate an empty list of examples")
    if not isinstance(features[0], dict):
        raise DataError(f"dataset items must be dicts of tensors or lists (like {{'input_ids': ...}}), "
                        f"got {type(features[0]).__name__}")
    batch: dict[str, Any] = {}
    for key in features[0]:
        values = [f[key] for f in features]
        lengths = [_length(v) for v in values]
        if lengths[0] is None or len(set(lengths)) == 1:
            batch[key] = _as_tensor(values)
            continue
        if key == "input_ids" and pad_token_id is None:
            raise DataError(f"examples have different lengths ({min(lengths)} to {max(lengths)} input_ids) and no "
                            "tokenizer was given to pad them: pass tokenizer= (with pad_token_id) or a data_collator")
        pad = pad_token_id if key == "input_ids" else PAD_VALUES.get(key, 0)
        rows = [torch.as_tensor(v) for v in values]
        out = torch.full((len(rows), max(lengths)) + tuple(rows[0].shape[1:]), pad, dtype=rows[0].dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        batch[key] = out
        if key == "input_ids" and "attention_mask" not in features[0]:
            lengths_t = torch.tensor(lengths)
            batch["attention_mask"] = (torch.arange(max(lengths))[None, :] < lengths_t[:, None]).long()  # (B, T)
    return batch


def pad_and_concatenate(arrays: list[np.ndarray], pad_value=IGNORE_INDEX) -> np.ndarray:
    """Concatenate along axis 0; arrays whose axis 1 differ are right-padded with `pad_value`."""
    if arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays, axis=0)
    longest = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        out = np.full((a.shape[0], longest) + a.shape[2:], pad_value, dtype=a.dtype)
        out[:, : a.shape[1]] = a
        padded.append(out)
    return np.concatenate(padded, axis=0)


def to_numpy(x):
    """Tensor (or tuple of tensors) -> float32/int numpy, on the CPU."""
    if isinstance(x, (tuple, list)):
        return tuple(to_numpy(t) for t in x)
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x).numpy()
