"""BatchEncoding: what a tokenizer returns. A dict (`input_ids`, `token_type_ids`,
`attention_mask`, ...) of lists or tensors, that also remembers, for each row, which word and
which of the two texts every token came from, and its character span, so labels can be aligned
with tokens (NER: word_ids) and answers found in the text (QA: offsets, sequence_ids).
"""
from __future__ import annotations

from typing import Optional, Sequence

from common.errors import ConfigError, DataError


class BatchEncoding(dict):
    """The tokenizer's output: a dict of lists (or tensors), plus per-row token -> word and
    token -> sequence maps that survive padding (None at special and padded positions)."""

    def __init__(self, data=None, word_ids=None, sequence_ids=None, offsets=None, tensor_type=None,
                 ragged_ok: Sequence[str] = ()):
        super().__init__(data or {})
        self._word_ids = word_ids or []
        self._sequence_ids = sequence_ids or []
        self._offsets = offsets or []
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type, ragged_ok)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _meta(self, table, batch_index, what):
        if not table:
            raise DataError(f"{what}() needs the BatchEncoding returned by calling a tokenizer on text "
                            "(not one built by pad() or by hand)")
        if not 0 <= batch_index < len(table):
            raise DataError(f"{what}(batch_index={batch_index}): the batch has {len(table)} rows")
        return list(table[batch_index])

    def word_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        """For each token of row `batch_index`, the number of the word it came from (None for
        special and padding tokens). With is_split_into_words=True, a word is one input list item."""
        return self._meta(self._word_ids, batch_index, "word_ids")

    def sequence_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        """For each token, 0 if it came from `text`, 1 if from `text_pair`, None for specials/padding."""
        return self._meta(self._sequence_ids, batch_index, "sequence_ids")

    def char_to_token(self, batch_index: int, char_index: Optional[int] = None,
                      sequence_index: int = 0) -> Optional[int]:
        """The token whose character span covers `char_index` of the text (or of text_pair when
        sequence_index=1); None when the character is whitespace or was truncated away.
        `char_to_token(char_index)` is short for batch row 0, as in transformers."""
        if char_index is None:
            batch_index, char_index = 0, batch_index
        offsets = self._meta(self._offsets, batch_index, "char_to_token")
        for position, (seq, (start, end)) in enumerate(zip(self.sequence_ids(batch_index), offsets)):
            if seq == sequence_index and start <= char_index < end:
                return position
        return None

    def to(self, device) -> "BatchEncoding":
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    def convert_to_tensors(self, tensor_type: str, ragged_ok: Sequence[str] = ()) -> "BatchEncoding":
        """Lists -> torch tensors ("pt") or numpy arrays ("np"). Every padded key must be
        rectangular; a key in `ragged_ok` (e.g. labels in pad()) is left as a list if it is not."""
        if tensor_type not in ("pt", "np"):
            raise ConfigError(f"return_tensors={tensor_type!r} is not supported; use 'pt', 'np' or None")
        import numpy as np
        import torch

        for key, value in list(self.items()):
            try:
                if tensor_type == "pt":
                    if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
                        self[key] = torch.stack(value)
                    elif not isinstance(value, torch.Tensor):
                        self[key] = torch.tensor(value)
                elif not isinstance(value, np.ndarray):
                    self[key] = np.asarray(value if not hasattr(value, "numpy") else value.numpy())
                    if self[key].dtype == object:
                        raise ValueError("ragged")
            except (ValueError, TypeError, RuntimeError):
                if key in ragged_ok:
                    continue
                lengths = sorted({len(v) for v in value}) if isinstance(value, list) else "?"
                raise DataError(
                    f"cannot make a tensor of '{key}': its rows have different lengths {lengths}; "
                    "pass padding=True (or padding='max_length'), or return_tensors=None for lists"
                ) from None
        return self
