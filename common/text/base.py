"""What every tokenizer here shares, shaped like Hugging Face's so that code written for
`transformers` runs unchanged: `tok(texts, padding=True, truncation=True, return_tensors="pt")`
returns a `BatchEncoding` with `input_ids`, `token_type_ids` and `attention_mask`.

A subclass only says how one string becomes tokens (each with its character span and word number)
and how tokens map to ids. The pipeline below is the same for all of them:

    text --tokenize--> tokens, offsets, words --ids--> truncate --[CLS] A [SEP] B [SEP]--> pad

Truncating a pair with "longest_first" (what truncation=True means): with a budget of
L = max_length - (number of special tokens) and lengths n_short <= n_long,
    if 2 n_short <= L:   keep n_short and L - n_short       (only the longer one is cut)
    else:                keep floor(L/2) and ceil(L/2)       (both cut; the longer keeps the odd one,
                                                             the second one on a tie)
which is what the Rust tokenizers behind transformers' BertTokenizer do.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from common.text.batch_encoding import BatchEncoding
from common.errors import CheckpointError, ConfigError, DataError

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")

# What a padded position holds, per key; keys not listed here (labels, ...) are never padded.
PAD_VALUES = {"token_type_ids": 0, "attention_mask": 0, "special_tokens_mask": 1,
              "offset_mapping": (0, 0), "word_ids": None, "sequence_ids": None}
_META_KEYS = ("word_ids", "sequence_ids", "offset_mapping")


@dataclass
class TokenSpan:
    """One tokenized text: ids, (start, end) character offsets, and the word each token came from."""
    ids: list[int] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    words: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def window(self, start: int, stop: int) -> "TokenSpan":
        return TokenSpan(self.ids[start:stop], self.offsets[start:stop], self.words[start:stop])


def _special_token(role):
    def get(self):
        return self._special_tokens.get(role)

    def set(self, value):
        self._special_tokens[role] = value

    return property(get, set, doc=f"The {role.replace('_', ' ')} as a string (None when there is none).")


def _special_token_id(role):
    def get(self):
        token = self._special_tokens.get(role)
        return None if token is None else self._token_to_id(token)

    return property(get, doc=f"The id of the {role.replace('_', ' ')} (None when there is none).")


class BaseTokenizer:
    """Subclasses implement: `vocab_size`, `get_vocab`, `_tokenize_with_offsets`, `_token_to_id`,
    `_id_to_token`, `convert_tokens_to_string`, `_save_vocabulary`, `_from_folder`, and
    `_init_kwargs` (settings that tokenizer_config.json must remember)."""

    model_input_names: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")

    pad_token, pad_token_id = _special_token("pad_token"), _special_token_id("pad_token")
    unk_token, unk_token_id = _special_token("unk_token"), _special_token_id("unk_token")
    cls_token, cls_token_id = _special_token("cls_token"), _special_token_id("cls_token")
    sep_token, sep_token_id = _special_token("sep_token"), _special_token_id("sep_token")
    mask_token, mask_token_id = _special_token("mask_token"), _special_token_id("mask_token")
    bos_token, bos_token_id = _special_token("bos_token"), _special_token_id("bos_token")
    eos_token, eos_token_id = _special_token("eos_token"), _special_token_id("eos_token")

    def __init__(self, *, pad_token=None, unk_token=None, cls_token=None, sep_token=None,
                 mask_token=None, bos_token=None, eos_token=None, model_max_length: int = 512,
                 padding_side: str = "right"):
        self._special_tokens = {"pad_token": pad_token, "unk_token": unk_token, "cls_token": cls_token,
                                "sep_token": sep_token, "mask_token": mask_token,
                                "bos_token": bos_token, "eos_token": eos_token}
        if padding_side not in ("right", "left"):
            raise ConfigError(f"padding_side={padding_side!r}: use 'right' (BERT) or 'left' (batched generation)")
        self.model_max_length = int(model_max_length)
        self.padding_side = padding_side

    # ------------------------------------------------------------ what subclasses provide
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def get_vocab(self) -> dict[str, int]:
        raise NotImplementedError

    def _tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        """(token, (char start, char end) in `text`, word number) for every token of `text`."""
        raise NotImplementedError

    def _token_to_id(self, token: str) -> Optional[int]:
        raise NotImplementedError

    def _id_to_token(self, index: int) -> str:
        raise NotImplementedError

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def _save_vocabulary(self, folder: Path) -> list[str]:
        raise NotImplementedError

    def _init_kwargs(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "BaseTokenizer":
        raise NotImplementedError

    # ------------------------------------------------------------ vocabulary
    def __len__(self) -> int:
        return self.vocab_size

    @property
    def all_special_tokens(self) -> list[str]:
        tokens = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._token_to_id(t) for t in self.all_special_tokens]

    def tokenize(self, text: str) -> list[str]:
        return [token for token, _, _ in self._tokenize_with_offsets(text)]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            index = self._token_to_id(tokens)
            if index is None and self.unk_token is not None:
                index = self.unk_token_id
            if index is None:
                raise DataError(f"token {tokens!r} is not in the vocabulary of {type(self).__name__} "
                                "and it has no unk_token to stand for it")
            return index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, int) or (hasattr(ids, "ndim") and ids.ndim == 0):
            return self._checked_id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._checked_id_to_token(i) for i in _as_id_list(ids) if i not in special]

    def _checked_id_to_token(self, index: int) -> str:
        if not 0 <= index < self.vocab_size:
            raise DataError(f"token id {index} is outside the vocabulary (0 .. {self.vocab_size - 1}); "
                            "were these ids made by a different tokenizer?")
        return self._id_to_token(index)

    # ------------------------------------------------------------ special tokens
    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: Optional[list[int]] = None) -> list[int]:
        """BERT: [CLS] A [SEP] (B [SEP]). A tokenizer without [CLS]/[SEP] adds nothing: A (B)."""
        if self.cls_token is None or self.sep_token is None:
            return list(token_ids_0) + list(token_ids_1 or [])
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        out = cls + list(token_ids_0) + sep
        return out + list(token_ids_1) + sep if token_ids_1 is not None else out

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int],
                                             token_ids_1: Optional[list[int]] = None) -> list[int]:
        """Segment ids: 0 for [CLS] A [SEP], 1 for B [SEP]."""
        if token_ids_1 is None:
            return [0] * len(self.build_inputs_with_special_tokens(token_ids_0))
        first = len(self.build_inputs_with_special_tokens(token_ids_0))
        return [0] * first + [1] * (len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1)) - first)

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None,
                                already_has_special_tokens: bool = True) -> list[int]:
        """1 = special token (never masked by MLM), 0 = a token of the text.

        already_has_special_tokens=True: `token_ids_0` is a finished sequence; every id of a special
        token counts ([UNK] too, as in transformers). False: the mask of the sequence that
        build_inputs_with_special_tokens(token_ids_0, token_ids_1) would make."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ConfigError("get_special_tokens_mask: pass one finished sequence when "
                                  "already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in _as_id_list(token_ids_0)]
        if self.cls_token is None or self.sep_token is None:
            return [0] * (len(token_ids_0) + len(token_ids_1 or []))
        mask = [1] + [0] * len(token_ids_0) + [1]
        return mask + [0] * len(token_ids_1) + [1] if token_ids_1 is not None else mask

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    # ------------------------------------------------------------ encoding
    def __call__(self, text, text_pair=None, add_special_tokens: bool = True, padding=False,
                 truncation=False, max_length: Optional[int] = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: Optional[int] = None,
                 return_tensors: Optional[str] = None, return_token_type_ids: Optional[bool] = None,
                 return_attention_mask: Optional[bool] = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False) -> BatchEncoding:
        """Encode one text (str) or a batch (list of str), optionally with a second text each.
        With is_split_into_words=True a text is a list of words (a batch is a list of lists)."""
        batched = _is_batch(text, is_split_into_words, "text")
        texts = list(text) if batched else [text]
        pairs = None
        if text_pair is not None:
            if _is_batch(text_pair, is_split_into_words, "text_pair") != batched or (batched and len(text_pair) != len(texts)):
                raise DataError(f"text_pair must match text: both one text or both lists of the same "
                                f"length (got {len(texts)} texts)")
            pairs = list(text_pair) if batched else [text_pair]
        strategy = _truncation_strategy(truncation)
        if max_length is None and (strategy != "do_not_truncate" or padding == "max_length"):
            max_length = self.model_max_length

        rows, sample_mapping = [], []
        for index, first_text in enumerate(texts):
            first = self._encode_text(first_text, is_split_into_words)
            second = self._encode_text(pairs[index], is_split_into_words) if pairs else None
            for a, b in self._truncate(first, second, strategy, max_length, stride,
                                       add_special_tokens, return_overflowing_tokens):
                rows.append(self._assemble(a, b, add_special_tokens))
                sample_mapping.append(index)

        data = self._pad_rows(rows, padding, max_length, pad_to_multiple_of, return_attention_mask)
        meta = {key: data.pop(key) for key in _META_KEYS}
        if return_offsets_mapping:
            data["offset_mapping"] = meta["offset_mapping"]
        if not return_special_tokens_mask:
            data.pop("special_tokens_mask")
        if not (return_token_type_ids if return_token_type_ids is not None
                else "token_type_ids" in self.model_input_names):
            data.pop("token_type_ids")
        if return_length:
            data["length"] = [len(row["input_ids"]) for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_mapping
        elif not batched and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, meta["word_ids"], meta["sequence_ids"], meta["offset_mapping"],
                             tensor_type=return_tensors)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, truncation=False,
               max_length: Optional[int] = None, **kwargs) -> list[int]:
        """The ids of one text (or pair): `tok(text, ...)["input_ids"]`."""
        if _is_batch(text, kwargs.get("is_split_into_words", False), "text"):
            raise DataError("encode() takes one text; call the tokenizer itself, tok(list_of_texts), for a batch")
        return self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                    max_length=max_length, **kwargs)["input_ids"]

    def decode(self, token_ids, skip_special_tokens: bool = False) -> str:
        return self.convert_tokens_to_string(self.convert_ids_to_tokens(_as_id_list(token_ids),
                                                                        skip_special_tokens))

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens) for ids in sequences]

    def _encode_text(self, text, is_split_into_words: bool) -> TokenSpan:
        span = TokenSpan()
        if is_split_into_words:
            pieces = [(tok, off, word) for word, w in enumerate(text)
                      for tok, off, _ in self._tokenize_with_offsets(_check_str(w, "word"))]
        else:
            pieces = self._tokenize_with_offsets(_check_str(text, "text"))
        for token, offset, word in pieces:
            span.ids.append(self.convert_tokens_to_ids(token))
            span.offsets.append(offset)
            span.words.append(word)
        return span

    def _truncate(self, first: TokenSpan, second: Optional[TokenSpan], strategy: str,
                  max_length: Optional[int], stride: int, add_special_tokens: bool,
                  overflow: bool) -> list[tuple[TokenSpan, Optional[TokenSpan]]]:
        """The (first, second) pairs to encode: one, or several overlapping windows when
        return_overflowing_tokens=True (each window shares `stride` tokens with the previous)."""
        if strategy == "do_not_truncate":
            return [(first, second)]
        specials = self.num_special_tokens_to_add(pair=second is not None) if add_special_tokens else 0
        budget = max_length - specials
        if budget < 0:
            raise ConfigError(f"max_length={max_length} is shorter than the {specials} special tokens "
                              "the tokenizer adds; use a larger max_length")
        if strategy == "longest_first" and second is not None:
            if overflow:
                raise ConfigError("return_overflowing_tokens with a text pair needs truncation='only_second' "
                                  "(or 'only_first'): say which text to cut into windows")
            keep_first, keep_second = longest_first_lengths(len(first), len(second), budget)
            return [(first.window(0, keep_first), second.window(0, keep_second))]
        cut_second = strategy == "only_second"
        if cut_second and second is None:
            raise ConfigError("truncation='only_second' needs a text_pair; use truncation=True for one text")
        target, other = (second, first) if cut_second else (first, second)
        keep = budget - (len(other) if other is not None else 0)
        if len(target) <= keep:
            return [(first, second)]
        if keep <= 0:
            taken = f"; the other text already takes {len(other)} tokens" if other is not None else ""
            raise DataError(f"max_length={max_length} leaves no room for the text being truncated{taken}; "
                            "raise max_length (or truncate the other text)")
        windows = [target.window(0, keep)]
        if overflow:
            step = keep - stride
            if step <= 0:
                raise ConfigError(f"stride={stride} must be smaller than the {keep} tokens left per window")
            windows = [target.window(start, start + keep)
                       for start in range(0, max(len(target) - stride, 1), step)]
        return [(other, w) if cut_second else (w, other) for w in windows]

    def _assemble(self, first: TokenSpan, second: Optional[TokenSpan], add_special_tokens: bool) -> dict:
        b_ids = second.ids if second is not None else None
        if add_special_tokens:
            input_ids = self.build_inputs_with_special_tokens(first.ids, b_ids)
            token_type_ids = self.create_token_type_ids_from_sequences(first.ids, b_ids)
            special = self.get_special_tokens_mask(first.ids, b_ids, already_has_special_tokens=False)
        else:
            input_ids = first.ids + (b_ids or [])
            token_type_ids = [0] * len(first) + [1] * len(b_ids or [])
            special = [0] * len(input_ids)
        content = [(off, word, 0) for off, word in zip(first.offsets, first.words)]
        if second is not None:
            content += [(off, word, 1) for off, word in zip(second.offsets, second.words)]
        content = iter(content)
        offsets, words, sequences = [], [], []
        for is_special in special:
            off, word, seq = ((0, 0), None, None) if is_special else next(content)
            offsets.append(off)
            words.append(word)
            sequences.append(seq)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "special_tokens_mask": special,
                "offset_mapping": offsets, "word_ids": words, "sequence_ids": sequences}

    # ------------------------------------------------------------ padding
    def pad(self, encoded_inputs, padding=True, max_length: Optional[int] = None,
            pad_to_multiple_of: Optional[int] = None, return_attention_mask: Optional[bool] = None,
            return_tensors: Optional[str] = "pt") -> BatchEncoding:
        """Pad a list of examples (dicts of lists or 1-D tensors), or a dict of batched lists, to one
        length: input_ids with pad_token_id, attention_mask (created if absent) and token_type_ids
        with 0, special_tokens_mask with 1. Other keys, such as labels, are not padded."""
        if isinstance(encoded_inputs, dict):
            if "input_ids" not in encoded_inputs:
                raise DataError(f"pad() needs 'input_ids'; got keys {sorted(encoded_inputs)}")
            batch = encoded_inputs["input_ids"]
            batch = batch.tolist() if hasattr(batch, "tolist") else batch
            if batch and not isinstance(batch[0], (list, tuple)):
                encoded_inputs = [encoded_inputs]
            else:
                encoded_inputs = [{k: v[i] for k, v in encoded_inputs.items()} for i in range(len(batch))]
        rows = []
        for index, feature in enumerate(encoded_inputs):
            if "input_ids" not in feature:
                raise DataError(f"pad(): example {index} has no 'input_ids' (keys {sorted(feature)})")
            rows.append({k: (_as_list(v) if k in PAD_VALUES or k == "input_ids" else v) for k, v in feature.items()})
        data = self._pad_rows(rows, padding, max_length, pad_to_multiple_of, return_attention_mask)
        ragged_ok = [k for k in data if k not in PAD_VALUES and k != "input_ids"]
        return BatchEncoding(data, tensor_type=return_tensors, ragged_ok=ragged_ok)

    def _pad_rows(self, rows: list[dict], padding, max_length, pad_to_multiple_of,
                  return_attention_mask) -> dict[str, list]:
        strategy = _padding_strategy(padding)
        lengths = [len(row["input_ids"]) for row in rows]
        target = None
        if strategy == "longest" and lengths:
            target = max(lengths)
        elif strategy == "max_length":
            target = max_length if max_length is not None else self.model_max_length
        if target is not None and pad_to_multiple_of:
            target = math.ceil(target / pad_to_multiple_of) * pad_to_multiple_of
        add_mask = return_attention_mask is not False
        out: dict[str, list] = {}
        for row, length in zip(rows, lengths):
            missing = max(0, target - length) if target is not None else 0
            if missing and self.pad_token_id is None:
                raise ConfigError(f"{type(self).__name__} has no pad token, so it cannot pad; "
                                  "give it one (e.g. pad_token='<pad>') or use padding=False")
            if add_mask and "attention_mask" not in row:
                row = {**row, "attention_mask": [1] * length}
            for key, value in row.items():
                if key == "input_ids" or key in PAD_VALUES:
                    fill = [self.pad_token_id if key == "input_ids" else PAD_VALUES[key]] * missing
                    value = fill + list(value) if self.padding_side == "left" else list(value) + fill
                out.setdefault(key, []).append(value)
        if return_attention_mask is False:
            out.pop("attention_mask", None)
        return out

    # ------------------------------------------------------------ files
    def save_pretrained(self, folder) -> tuple[str, ...]:
        """Write the vocabulary file(s) and tokenizer_config.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = self._save_vocabulary(folder)
        config = {"tokenizer_class": type(self).__name__,
                  **{role: tok for role, tok in self._special_tokens.items() if tok is not None},
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  **self._init_kwargs()}
        write_file_atomic(folder / TOKENIZER_CONFIG_NAME, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return tuple(str(folder / name) for name in [*files, TOKENIZER_CONFIG_NAME])

    @classmethod
    def from_pretrained(cls, folder, **overrides) -> "BaseTokenizer":
        """Load from a folder written by save_pretrained (or a Hugging Face model folder);
        keyword arguments override tokenizer_config.json (e.g. model_max_length=128)."""
        folder = check_folder(folder)
        return cls._from_folder(folder, {**read_tokenizer_config(folder), **overrides})

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._init_kwargs().items())
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}"
                f"{', ' + settings if settings else ''}, special_tokens={self.all_special_tokens})")


def longest_first_lengths(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text survive "longest_first" truncation (see the module docstring)."""
    if n_first + n_second <= budget:
        return n_first, n_second
    short, long_ = sorted((n_first, n_second))
    keep_short, keep_long = (short, budget - short) if 2 * short <= budget else (budget // 2, budget - budget // 2)
    return (keep_short, keep_long) if n_first <= n_second else (keep_long, keep_short)


def special_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The base-class settings found in a tokenizer_config.json (special tokens may be stored as
    {"content": "[PAD]", ...} objects by transformers)."""
    out = {}
    for role in SPECIAL_ROLES:
        if role in config:
            value = config[role]
            out[role] = value.get("content") if isinstance(value, dict) else value
    for key in ("model_max_length", "padding_side"):
        if key in config:
            out[key] = config[key]
    return out


def read_tokenizer_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json as a dict ({} when the folder has none)."""
    path = Path(folder) / TOKENIZER_CONFIG_NAME
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); fix the file, or delete it to use the defaults") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object of settings, found {type(config).__name__}")
    return config


def check_folder(folder) -> Path:
    folder = Path(os.fspath(folder)).expanduser()
    if not folder.exists():
        raise CheckpointError(f"tokenizer folder not found: {folder} (pass the folder that save_pretrained wrote)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; pass the FOLDER that contains it")
    return folder


def write_file_atomic(path: Path, content) -> None:
    """Write text (as UTF-8) or bytes under a temporary name, then rename it into place: a crash
    never leaves a half-written file."""
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _is_batch(text, is_split_into_words: bool, name: str) -> bool:
    """str -> one text; list of str -> a batch (or, with is_split_into_words, one list of words)."""
    if isinstance(text, str):
        if is_split_into_words:
            raise DataError(f"{name} is a str but is_split_into_words=True expects a list of words")
        return False
    if not isinstance(text, (list, tuple)):
        raise DataError(f"{name} must be a str or a list of str, got {type(text).__name__}")
    if not is_split_into_words:
        return True
    return bool(text) and isinstance(text[0], (list, tuple))


def _check_str(value, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"each {what} must be a str, got {type(value).__name__}: {value!r:.60}")
    return value


def _truncation_strategy(truncation) -> str:
    if truncation is True:
        return "longest_first"
    if truncation is False or truncation is None:
        return "do_not_truncate"
    if truncation in ("longest_first", "only_first", "only_second", "do_not_truncate"):
        return truncation
    raise ConfigError(f"truncation={truncation!r}: use True, False, 'longest_first', 'only_first' or 'only_second'")


def _padding_strategy(padding) -> str:
    if padding is True or padding == "longest":
        return "longest"
    if padding is False or padding is None or padding == "do_not_pad":
        return "do_not_pad"
    if padding == "max_length":
        return "max_length"
    raise ConfigError(f"padding={padding!r}: use True/'longest', 'max_length' or False")


def _as_list(value) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _as_id_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    if ids and isinstance(ids[0], (list, tuple)):
        raise DataError("expected one sequence of ids, got a batch; use batch_decode for several")
    return [int(i) for i in ids]
