"""BERT's tokenizer: a rule-based word splitter, then WordPiece on each word.

1. Clean: drop NUL, U+FFFD and control characters (Unicode category C*, except tab and newlines);
   every other whitespace character becomes a word boundary.
2. CJK ideographs become words of their own (the vocabulary has one token per ideograph).
3. do_lower_case: strip accents (NFD, then drop nonspacing marks, category Mn) and lower-case.
4. Split at whitespace and around every punctuation character (Unicode P*, plus the ASCII
   symbols $ + < = > ^ ` | ~ that Unicode does not call punctuation).
5. WordPiece each word, greedy longest match first: take the longest vocabulary entry that starts
   the word, then the longest "##"-prefixed entry that continues it, and so on. A word that
   cannot be covered this way, or is longer than 100 characters, becomes one [UNK].

       "Unaffable!" -> "unaffable" "!" -> una ##ffa ##ble !

Special tokens ([CLS], [MASK], ...) are found in the raw text first and never split. Every step
keeps each character's position in the original text, so tokens carry (start, end) offsets.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path
from typing import Any, Optional, Union

from common.errors import CheckpointError
from common.text.base import BaseTokenizer, special_kwargs, write_file_atomic

VOCAB_NAME = "vocab.txt"

# Ideograph blocks that BERT isolates (CJK Unified Ideographs and their extensions, compatibility
# ideographs). Hiragana, katakana and hangul are written with spaces or are not in these blocks.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

# How BERT's decoder glues a token to the text before it (applied to " " + token).
DECODE_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                  (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


@functools.lru_cache(maxsize=1 << 16)
def is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


@functools.lru_cache(maxsize=1 << 16)
def is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or ch.isspace()


@functools.lru_cache(maxsize=1 << 16)
def is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    ascii_symbol = 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
    return ascii_symbol or unicodedata.category(ch).startswith("P")


@functools.lru_cache(maxsize=1 << 16)
def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def load_vocab(path: Path) -> dict[str, int]:
    """vocab.txt: one token per line; the line number (from 0) is the token's id."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: byte {e.start} is not valid UTF-8; vocab.txt must be a UTF-8 "
                              "text file with one token per line") from None
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise CheckpointError(f"{path} is empty; copy the vocab.txt that belongs to the model")
    return {token.rstrip("\r"): index for index, token in enumerate(lines)}


class BertTokenizer(BaseTokenizer):
    """WordPiece for a BERT vocab.txt; ids identical to transformers' BertTokenizer."""

    def __init__(self, vocab_file=None, do_lower_case: bool = True, strip_accents: Optional[bool] = None,
                 tokenize_chinese_chars: bool = True, unk_token="[UNK]", sep_token="[SEP]",
                 pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                 max_input_chars_per_word: int = 100, vocab: Union[dict, list, None] = None, **kwargs):
        super().__init__(unk_token=unk_token, sep_token=sep_token, pad_token=pad_token,
                         cls_token=cls_token, mask_token=mask_token, **kwargs)
        if vocab is None and vocab_file is None:
            raise CheckpointError("BertTokenizer needs a vocab.txt (vocab_file=...) or a vocab (dict or list)")
        if vocab is None:
            vocab = load_vocab(vocab_file)
        elif isinstance(vocab, (list, tuple)):
            vocab = {token: index for index, token in enumerate(vocab)}
        self.vocab: dict[str, int] = dict(vocab)
        self.ids_to_tokens = {index: token for token, index in self.vocab.items()}
        missing = [t for t in self.all_special_tokens if t not in self.vocab]
        if missing:
            raise CheckpointError(f"{vocab_file or 'the vocabulary'} lacks the special token(s) {missing}; "
                                  "a BERT vocab.txt needs [PAD] [UNK] [CLS] [SEP] [MASK]")
        self.do_lower_case = do_lower_case
        # transformers' rule: accents are stripped exactly when lower-casing, unless said otherwise
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.max_input_chars_per_word = max_input_chars_per_word
        specials = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None
        self._add_caches()

    def _add_caches(self) -> None:
        # memoised per tokenizer: a corpus repeats the same characters and words over and over
        self._normalize = functools.lru_cache(maxsize=1 << 16)(self._normalize_uncached)
        self._wordpiece = functools.lru_cache(maxsize=1 << 16)(self._wordpiece_uncached)

    def __getstate__(self):  # caches are rebuilt, not pickled (DataLoader workers, DDP)
        return {k: v for k, v in self.__dict__.items() if k not in ("_normalize", "_wordpiece")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._add_caches()

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _token_to_id(self, token: str) -> Optional[int]:
        return self.vocab.get(token)

    def _id_to_token(self, index: int) -> str:
        return self.ids_to_tokens.get(index, self.unk_token)

    # ------------------------------------------------------------ text -> tokens
    def _tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        out = []
        for word_index, (word, origin, special) in enumerate(self._split_words(text)):
            if special:
                out.append((word, (origin[0], origin[-1] + 1), word_index))
                continue
            for piece, start, end in self._wordpiece(word):
                out.append((piece, (origin[start], origin[end - 1] + 1), word_index))
        return out

    def _split_words(self, text: str) -> list[tuple[str, list[int], bool]]:
        """Steps 1-4: (word, original index of each of its characters, is it a special token)."""
        parts = self._special_pattern.split(text) if self._special_pattern else [text]
        words, position = [], 0
        for i, part in enumerate(parts):
            if i % 2:  # re.split puts the matched special tokens at the odd places
                words.append((part, list(range(position, position + len(part))), True))
            else:
                words.extend((w, origin, False) for w, origin in self._split_plain(part, position))
            position += len(part)
        return words

    def _split_plain(self, text: str, base: int) -> list[tuple[str, list[int]]]:
        words, chars, origin = [], [], []

        def end_word():
            if chars:
                words.append(("".join(chars), list(origin)))
                chars.clear()
                origin.clear()

        for i, ch in enumerate(text, start=base):
            if ch in ("\x00", "\ufffd") or is_control(ch):
                continue
            if is_whitespace(ch):
                end_word()
            elif self.tokenize_chinese_chars and is_cjk(ch):
                end_word()
                normalized = self._normalize(ch)
                words.append((normalized, [i] * len(normalized)))
            else:
                for n in self._normalize(ch):
                    if is_punctuation(n):
                        end_word()
                        words.append((n, [i]))
                    else:
                        chars.append(n)
                        origin.append(i)
        end_word()
        return words

    def _normalize_uncached(self, ch: str) -> str:
        """Step 3 for one character; may return several characters, or none."""
        if self.strip_accents:
            ch = "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")
        return ch.lower() if self.do_lower_case else ch

    def _wordpiece_uncached(self, word: str) -> list[tuple[str, int, int]]:
        """Step 5: (piece, start, end) with word[start:end] spelled by the piece."""
        if len(word) > self.max_input_chars_per_word:
            return [(self.unk_token, 0, len(word))]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            else:  # no vocabulary entry continues the word: the whole word is unknown
                return [(self.unk_token, 0, len(word))]
            pieces.append((piece, start, end))
            start = end
        return pieces

    # ------------------------------------------------------------ tokens -> text
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join with spaces, glue "##" pieces to the token before, and attach . , ! ? to the word
        before them (as transformers' BertTokenizer decodes)."""
        parts = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[2:] if token.startswith("##") else " " + token
                for before, after in DECODE_CLEANUP:
                    token = token.replace(before, after)
            parts.append(token)
        return "".join(parts)

    # ------------------------------------------------------------ files
    def _init_kwargs(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars}

    def _save_vocabulary(self, folder: Path) -> list[str]:
        tokens = [self.ids_to_tokens.get(i, f"[unused_{i}]") for i in range(max(self.ids_to_tokens) + 1)]
        write_file_atomic(folder / VOCAB_NAME, "\n".join(tokens) + "\n")
        return [VOCAB_NAME]

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "BertTokenizer":
        vocab_file = folder / VOCAB_NAME
        if not vocab_file.is_file():
            raise CheckpointError(f"no {VOCAB_NAME} in {folder}: a BERT tokenizer needs one; copy the "
                                  f"{VOCAB_NAME} of the model you started from into this folder")
        options = {k: config[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")
                   if k in config}
        return cls(vocab_file, **options, **special_kwargs(config))
