"""One token per character, as in nanoGPT's shakespeare_char.

The vocabulary is the sorted set of characters of the training text, so a character's id is its
rank: tiny shakespeare has 65 characters, ids 0..64 ("\\n" = 0, " " = 1, ...). Special tokens
(pad, eos, ...) are optional and, when asked for, come after the characters. encode and decode
are exact inverses: decode(encode(s)) == s for every s written with known characters.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from common.errors import CheckpointError, ConfigError, DataError
from common.text.base import BaseTokenizer, special_kwargs, write_file_atomic

CHAR_VOCAB_NAME = "char_vocab.json"


class CharTokenizer(BaseTokenizer):
    """`CharTokenizer.from_text(text)`; ids are ranks in the sorted character set."""

    model_input_names = ("input_ids", "attention_mask")  # a GPT has no segments

    def __init__(self, chars: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad or len(set(chars)) != len(chars):
            raise ConfigError(f"CharTokenizer needs distinct single characters, got "
                              f"{bad[:3] if bad else 'duplicates'}; build it with CharTokenizer.from_text(text)")
        self.chars = chars
        specials = [t for t in self.all_special_tokens if t not in chars]
        self.itos = chars + specials
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str, **kwargs) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every character of `text`, sorted."""
        if not text:
            raise DataError("CharTokenizer.from_text got an empty text; pass the training text")
        return cls(sorted(set(text)), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.stoi)

    def _token_to_id(self, token: str) -> Optional[int]:
        return self.stoi.get(token)

    def _id_to_token(self, index: int) -> str:
        return self.itos[index]

    def _tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        """Each character is a token; a word is a run of non-space (or of space) characters."""
        self._check_known(text)
        out, word = [], -1
        for i, ch in enumerate(text):
            if i == 0 or ch.isspace() != text[i - 1].isspace():
                word += 1
            out.append((ch if ch in self.stoi else self.unk_token, (i, i + 1), word))
        return out

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, truncation=False,
               max_length: Optional[int] = None, **kwargs) -> list[int]:
        """Fast path for the common case, one whole text: [stoi[c] for c in text]."""
        if text_pair is not None or truncation or kwargs or not isinstance(text, str):
            return super().encode(text, text_pair, add_special_tokens, truncation, max_length, **kwargs)
        self._check_known(text)
        unk = self.unk_token_id
        return [self.stoi.get(ch, unk) for ch in text]

    def _check_known(self, text: str) -> None:
        if self.unk_token is not None:
            return
        for i, ch in enumerate(text):
            if ch not in self.stoi:
                raise DataError(
                    f"character {ch!r} (U+{ord(ch):04X}) at position {i} is not among the "
                    f"{len(self.chars)} characters of this tokenizer; rebuild it from text that contains "
                    "it (CharTokenizer.from_text), or create it with unk_token=... to map unknown characters")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def _save_vocabulary(self, folder: Path) -> list[str]:
        write_file_atomic(folder / CHAR_VOCAB_NAME, json.dumps({"chars": self.chars}, ensure_ascii=False) + "\n")
        return [CHAR_VOCAB_NAME]

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "CharTokenizer":
        path = folder / CHAR_VOCAB_NAME
        if not path.is_file():
            raise CheckpointError(f"no {CHAR_VOCAB_NAME} in {folder}; save the tokenizer with "
                                  "tokenizer.save_pretrained(folder)")
        try:
            chars = json.loads(path.read_text(encoding="utf-8"))["chars"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: expected {{\"chars\": [...]}} written by save_pretrained "
                                  f"({type(e).__name__}: {e}); save the tokenizer again") from None
        if not isinstance(chars, list):
            raise CheckpointError(f"{path}: \"chars\" must be a list of characters")
        try:
            return cls(chars, **special_kwargs(config))
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
