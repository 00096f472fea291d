"""Byte-level BPE, GPT-2's tokenizer (Radford et al., 2019; Sennrich et al., 2016 for BPE).

A text is read as UTF-8 bytes, so every string can be encoded and nothing is ever unknown:

    text --split on special tokens--> chunks --GPT-2 pattern--> pre-tokens --bytes--> merges --> ids

Pre-tokens (GPT2_PATTERN): contractions 's 't 're 've 'm 'll 'd (lower case only, as GPT-2), then
an optional space followed by a run of letters, or of digits, or of other symbols, then runs of
whitespace (the last space of a run is left to start the next word: "a  b" -> "a", " ", " b").
Merges never cross a pre-token, so " the" is one token but "the." is two.

Training (`train_bpe`): start from the 256 bytes; repeatedly merge the most frequent adjacent pair
of tokens, counted over all pre-tokens weighted by their frequency,

    (a, b) = argmax_{pairs} count(a, b),  ties: the lexicographically greatest (bytes(a), bytes(b))

(GPT-2's own tie-break, and most courses'), until the vocabulary has vocab_size entries (the
special tokens included). Counts are kept up to date incrementally: merging (a, b) touches only the
words that contain it, and a heap with lazy deletion finds the next best pair, so a merge costs
about (words containing the pair) x (their length), not a rescan of the corpus. `bpe_merge` is the
plain one-step version (count all pairs, merge the best), which the tests use as the oracle.

Encoding (`bpe_encode`): within a pre-token, repeatedly merge the adjacent pair of lowest merge
rank (the order in which training learned it), all its occurrences left to right, until no pair
has a rank. Results are cached per pre-token string (text repeats its words).

Special tokens (`<|endoftext|>` and any you name) are cut out of the text before pre-tokenization,
so they are never split and never merged with their neighbours. What happens when a user's text
contains one is tiktoken's choice, made explicit (`encode(..., allowed_special, disallowed_special)`):
    allowed_special      the specials read as special tokens (default "all", as transformers'
                         GPT2Tokenizer does; tiktoken's default is none)
    disallowed_special   the specials whose presence is an error (default: the specials that are
                         not allowed, when allowed_special is empty; () otherwise)
A special that is neither allowed nor disallowed is encoded as ordinary text ("<", "|", ...).

Decoding joins the tokens' bytes and reads them as UTF-8, invalid sequences replaced by U+FFFD
(errors="replace", as GPT-2): a slice of ids can end in the middle of a character.

Files (GPT-2's Hugging Face format, read by transformers.GPT2Tokenizer):
    vocab.json   {token: id}, each token's bytes written with GPT-2's byte-to-unicode map
                 (printable bytes stand for themselves, the others are shifted to U+0100 + n:
                 a space is "Ġ", a newline "Ċ")
    merges.txt   "#version: 0.2", then one merge per line, "Ġ t", in rank order
A folder saved by transformers 5 may hold only tokenizer.json; its vocabulary and merges are read
from there when vocab.json is absent.
"""
from __future__ import annotations

import heapq
import json
import os
from bisect import bisect_right
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import regex

from common.errors import CheckpointError, ConfigError, DataError, read_text
from common.text.base import BaseTokenizer, special_kwargs, write_file_atomic

VOCAB_JSON_NAME = "vocab.json"
MERGES_NAME = "merges.txt"
TOKENIZER_JSON_NAME = "tokenizer.json"
MERGES_HEADER = "#version: 0.2"
ENDOFTEXT = "<|endoftext|>"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKENIZE = regex.compile(GPT2_PATTERN)


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map byte -> printable character: the 188 bytes that print ("!".."~", "¡".."¬",
    "®".."ÿ") stand for themselves; the other 68 (controls, space, ...) become chr(256 + n) in
    byte order (n = 0, 1, ...), so " " (32) -> "Ġ" (U+0120) and "\\n" (10) -> "Ċ" (U+010A).
    The dict is in GPT-2's vocabulary order: ids 0..255 of vocab.json."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(shifted)}}


def pretokenize(text: str) -> list[str]:
    """GPT-2's pre-tokens of `text` (no special-token handling): "I'll go" -> ["I", "'ll", " go"]."""
    return _PRETOKENIZE.findall(text)


# ---------------------------------------------------------------- the two steps, plainly
# BEGIN EXERCISE bpe_merge
def bpe_merge(words: dict[tuple[int, ...], int], token_bytes: Sequence[bytes],
              new_id: int) -> tuple[Optional[tuple[int, int]], dict[tuple[int, ...], int]]:
    """One training step, by rescanning: count(a, b) = sum over words w of freq(w) x (number of
    positions i with w[i] = a, w[i+1] = b); take the most frequent pair, ties broken by the
    greatest (token_bytes[a], token_bytes[b]); replace every (a, b) of every word, left to right,
    by `new_id`. Returns (the pair, the new words), or (None, words) when no word has two tokens.

    words: {tuple of token ids: frequency}; token_bytes[i] = the bytes of token i."""
    counts: Counter = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    if not counts:
        return None, words
    best = max(counts, key=lambda p: (counts[p], token_bytes[p[0]], token_bytes[p[1]]))
    merged: dict[tuple[int, ...], int] = {}
    for word, freq in words.items():
        new_word = tuple(merge_pair(list(word), best, new_id))
        merged[new_word] = merged.get(new_word, 0) + freq
    return best, merged
# END EXERCISE bpe_merge


def merge_pair(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`word` with each occurrence of `pair` replaced by `new_id`, scanning left to right (so
    (a, a) in [a, a, a] merges once: [new, a])."""
    a, b = pair
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


_NO_RANK = (float("inf"), -1)       # what a pair that was never merged ranks as


# BEGIN EXERCISE bpe_encode
def bpe_encode(ids: list[int], ranks: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Encode one pre-token by merge rank: while some adjacent pair (a, b) is in `ranks`, take the
    pair of lowest rank and replace all its occurrences, left to right, by its merged id.

    ids: the pre-token's byte-token ids; ranks[(a, b)] = (rank, merged id). Returns the ids."""
    ids = list(ids)
    while len(ids) > 1:
        pairs = list(zip(ids, ids[1:]))
        found = [ranks.get(pair, _NO_RANK) for pair in pairs]
        rank, merged_id = min(found)
        if merged_id < 0:
            break
        ids = merge_pair(ids, pairs[found.index((rank, merged_id))], merged_id)
    return ids
# END EXERCISE bpe_encode


# ---------------------------------------------------------------- training, incrementally
class _Descending:
    """Wraps a value so that heapq's min-heap pops the GREATEST value first (the tie-break)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other: "_Descending") -> bool:
        return other.value < self.value


def word_counts(texts: Iterable[str], special_tokens: Sequence[str] = ()) -> Counter:
    """{pre-token: frequency} over `texts`, with the special tokens cut out first (never merged)."""
    splitter = _special_splitter(special_tokens)
    counts: Counter = Counter()
    for text in texts:
        for chunk in (splitter.split(text) if splitter else [text]):
            if chunk and chunk not in special_tokens:
                counts.update(_PRETOKENIZE.findall(chunk))
    return counts


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (ENDOFTEXT,)
              ) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Learn merges until 256 + (new tokens) + len(special_tokens) = vocab_size (or no pair is left).

    Returns (token_bytes, merges): token_bytes[i] is the bytes of token i, with ids 0..255 the
    bytes in GPT-2's order (bytes_to_unicode) and each merge's token after them; merges[r] is the
    (a, b) of rank r. The special tokens are not in token_bytes; they take the ids after it.
    Deterministic: the same texts give the same merges (see the tie-break in the module docstring)."""
    special_tokens = list(special_tokens)
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
        raise ConfigError(f"vocab_size={vocab_size!r}: a byte-level BPE needs at least 256 byte tokens "
                          f"+ {len(special_tokens)} special token(s) = {256 + len(special_tokens)}")
    token_bytes = [bytes([b]) for b in bytes_to_unicode()]
    byte_id = {b[0]: i for i, b in enumerate(token_bytes)}
    id_of_bytes = {b: i for i, b in enumerate(token_bytes)}

    counted = word_counts(texts, special_tokens)
    words = [[byte_id[b] for b in w.encode("utf-8")] for w in counted]
    freqs = list(counted.values())

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}      # pair -> words that contain (or once contained) it
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + freq
            where.setdefault(pair, set()).add(w)
    heap = [(-c, _Descending((token_bytes[p[0]], token_bytes[p[1]])), p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    target = vocab_size - len(special_tokens)
    while len(token_bytes) < target and heap:
        neg_count, _, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue                                  # stale entry: the count changed since it was pushed
        merged = token_bytes[pair[0]] + token_bytes[pair[1]]
        new_id = id_of_bytes.get(merged)
        if new_id is None:                            # (the same bytes may already be a token)
            new_id = len(token_bytes)
            token_bytes.append(merged)
            id_of_bytes[merged] = new_id
        merges.append(pair)
        delta: dict[tuple[int, int], int] = {}
        for w in where.pop(pair):
            word = words[w]
            if len(word) < 2:
                continue
            new_word = merge_pair(word, pair, new_id)
            if len(new_word) == len(word):
                continue                              # the pair left this word in an earlier merge
            freq = freqs[w]
            for p in zip(word, word[1:]):
                delta[p] = delta.get(p, 0) - freq
            for p in zip(new_word, new_word[1:]):
                delta[p] = delta.get(p, 0) + freq
                where.setdefault(p, set()).add(w)
            words[w] = new_word
        for p, d in delta.items():
            if d == 0 or p == pair:
                continue
            count = pair_counts.get(p, 0) + d
            if count > 0:
                pair_counts[p] = count
                heapq.heappush(heap, (-count, _Descending((token_bytes[p[0]], token_bytes[p[1]])), p))
            else:
                pair_counts.pop(p, None)
        pair_counts.pop(pair, None)
    return token_bytes, merges


# ---------------------------------------------------------------- the tokenizer
class BPETokenizer(BaseTokenizer):
    """GPT-2's byte-level BPE: `BPETokenizer.from_pretrained(gpt2_folder)` (vocab.json + merges.txt)
    or `BPETokenizer.train(texts, vocab_size)`. Ids match transformers.GPT2Tokenizer on the same files."""

    model_input_names = ("input_ids", "attention_mask")  # a GPT has no segments

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], *,
                 additional_special_tokens: Sequence[str] = (), errors: str = "replace",
                 unk_token: Optional[str] = ENDOFTEXT, bos_token: Optional[str] = ENDOFTEXT,
                 eos_token: Optional[str] = ENDOFTEXT, _where: str = "the vocabulary", **kwargs):
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, **kwargs)
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in self.encoder.items()}
        self.merges = [tuple(m) for m in merges]
        self.errors = errors
        self.additional_special_tokens = list(additional_special_tokens)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        missing = [c for c in self.byte_encoder.values() if c not in self.encoder]
        if missing:
            raise CheckpointError(f"{_where} lacks {len(missing)} of the 256 byte tokens (first: {missing[0]!r}); "
                                  "a byte-level BPE needs them all: train it with BPETokenizer.train")
        absent = [t for t in self.all_special_tokens if t not in self.encoder]
        if absent:
            raise CheckpointError(f"{_where} has no id for the special token(s) {absent}; add them to "
                                  "vocab.json or train with BPETokenizer.train(..., special_tokens=[...])")
        self._byte_ids = [self.encoder[self.byte_encoder[b]] for b in range(256)]
        self.ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            pair = (self.encoder[a], self.encoder[b])
            self.ranks.setdefault(pair, (rank, self.encoder[a + b]))
        self._special_ids = {t: self.encoder[t] for t in self.all_special_tokens}
        self._cache: dict[str, list[int]] = {}

    # ------------------------------------------------------------ training and vocabulary
    @classmethod
    def train(cls, files_or_texts: Union[str, os.PathLike, Iterable[str]], vocab_size: int,
              special_tokens: Sequence[str] = (ENDOFTEXT,), output_dir=None, **kwargs) -> "BPETokenizer":
        """Learn a vocabulary of `vocab_size` (256 bytes + merges + special tokens) from text files
        (a path or list of Paths) or strings; special_tokens[0] is the eos (and bos, unk) token."""
        token_bytes, merges = train_bpe(_training_texts(files_or_texts), vocab_size, special_tokens)
        to_str = _bytes_to_str
        vocab = {to_str(b): i for i, b in enumerate(token_bytes)}       # GPT-2's spelling of each token's bytes
        for token in special_tokens:
            vocab.setdefault(token, len(vocab))
        first = special_tokens[0] if special_tokens else None
        roles = {"unk_token": first, "bos_token": first, "eos_token": first, **kwargs}
        tokenizer = cls(vocab, [(to_str(token_bytes[a]), to_str(token_bytes[b])) for a, b in merges],
                        additional_special_tokens=list(special_tokens[1:]), **roles)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([*super().all_special_tokens, *self.additional_special_tokens]))

    def _token_to_id(self, token: str) -> Optional[int]:
        return self.encoder.get(token)

    def _id_to_token(self, index: int) -> str:
        return self.decoder[index]

    # ------------------------------------------------------------ encoding
    def encode(self, text, text_pair=None, add_special_tokens: bool = True, truncation=False,
               max_length: Optional[int] = None, *, allowed_special: Union[str, Iterable[str]] = "all",
               disallowed_special: Union[str, Iterable[str]] = "all", **kwargs) -> list[int]:
        """The ids of `text`. allowed_special / disallowed_special as tiktoken ("all", or a set of
        special tokens): an allowed special in the text becomes its id; a disallowed one raises
        DataError; any other is plain text. disallowed_special="all" means "all not allowed"."""
        if text_pair is not None or truncation or kwargs or not isinstance(text, str):
            if allowed_special != "all":
                raise ConfigError("allowed_special applies to encode(one text); call the tokenizer for batches")
            return super().encode(text, text_pair, add_special_tokens, truncation, max_length, **kwargs)
        out: list[int] = []
        for chunk, is_special in self._split_special(text, allowed_special, disallowed_special):
            if is_special:
                out.append(self._special_ids[chunk])
            else:
                out.extend(self._encode_chunk(chunk))
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of `text` read as plain text: special tokens in it are spelled out, as tiktoken's."""
        return self._encode_chunk(text)

    def _encode_chunk(self, text: str) -> list[int]:
        out: list[int] = []
        cache, byte_ids, ranks = self._cache, self._byte_ids, self.ranks
        for piece in _PRETOKENIZE.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = bpe_encode([byte_ids[b] for b in _utf8(piece)], ranks)
                if len(cache) < 200_000:
                    cache[piece] = ids
            out.extend(ids)
        return out

    def _split_special(self, text: str, allowed_special="all", disallowed_special="all"):
        """(chunk, is_special) for the text between and at the allowed special tokens."""
        specials = self.all_special_tokens
        allowed = set(specials) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(specials)
        if unknown:
            raise ConfigError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                              f"tokenizer ({specials})")
        disallowed = (set(specials) - allowed) if disallowed_special == "all" else set(disallowed_special)
        for token in disallowed:
            if token in text:
                raise DataError(f"the text contains the special token {token!r} at character {text.index(token)}, "
                                "which is disallowed: pass allowed_special={" f"{token!r}" "} to read it as the "
                                "special token, or disallowed_special=() to encode it as plain text")
        splitter = _special_splitter(sorted(allowed))
        if splitter is None:
            return [(text, False)] if text else []
        return [(chunk, i % 2 == 1) for i, chunk in enumerate(splitter.split(text)) if chunk]

    def _tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        """Tokens with character spans (a token that holds part of a character's bytes spans the
        whole character); each pre-token and each special token is one word."""
        out, word, start = [], -1, 0
        for chunk, is_special in self._split_special(text):
            if is_special:
                word += 1
                out.append((chunk, (start, start + len(chunk)), word))
                start += len(chunk)
                continue
            for match in _PRETOKENIZE.finditer(chunk):
                word += 1
                piece, offset = match.group(), start + match.start()
                char_ends = []                       # byte offset where each character ends
                for ch in piece:
                    char_ends.append((char_ends[-1] if char_ends else 0) + len(_utf8(ch)))
                position = 0
                for index in self._encode_chunk(piece):
                    token = self.decoder[index]
                    first = bisect_right(char_ends, position)
                    position += len(token)           # one character of a token = one byte
                    last = bisect_right(char_ends, position - 1)
                    out.append((token, (offset + first, offset + last + 1), word))
            start += len(chunk)
        return out

    # ------------------------------------------------------------ decoding
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Bytes of the tokens (special tokens as their UTF-8), read as UTF-8 with errors="replace"."""
        data = bytearray()
        special = self._special_ids
        for token in tokens:
            if token in special:
                data += _utf8(token)
            else:
                data += bytes(self.byte_decoder[c] for c in token)
        return data.decode("utf-8", errors=self.errors)

    # ------------------------------------------------------------ files
    def _init_kwargs(self) -> dict[str, Any]:
        extra = {"additional_special_tokens": self.additional_special_tokens} if self.additional_special_tokens else {}
        return {**extra, "errors": self.errors}

    def _save_vocabulary(self, folder: Path) -> list[str]:
        write_file_atomic(folder / VOCAB_JSON_NAME, json.dumps(self.encoder, ensure_ascii=False) + "\n")
        write_file_atomic(folder / MERGES_NAME, "".join([MERGES_HEADER + "\n", *(f"{a} {b}\n" for a, b in self.merges)]))
        return [VOCAB_JSON_NAME, MERGES_NAME]

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "BPETokenizer":
        if not (folder / VOCAB_JSON_NAME).is_file() and (folder / TOKENIZER_JSON_NAME).is_file():
            vocab, merges = read_tokenizer_json(folder / TOKENIZER_JSON_NAME)   # what transformers 5 saves
        else:
            vocab = read_vocab_json(folder / VOCAB_JSON_NAME)
            merges = read_merges(folder / MERGES_NAME, vocab)
        options = {k: config[k] for k in ("additional_special_tokens", "errors") if k in config}
        extra = options.get("additional_special_tokens") or []
        options["additional_special_tokens"] = [t.get("content") if isinstance(t, dict) else t for t in extra]
        return cls(vocab, merges, **options, **special_kwargs(config), _where=str(folder / VOCAB_JSON_NAME))


def read_vocab_json(path: Path) -> dict[str, int]:
    """vocab.json as {token: id}; a corrupt file raises CheckpointError naming the file and line."""
    if not path.is_file():
        raise CheckpointError(f"no {path.name} in {path.parent}: a byte-level BPE folder holds {VOCAB_JSON_NAME} "
                              f"and {MERGES_NAME} (save one with tokenizer.save_pretrained(folder))")
    text = read_text(path, what=VOCAB_JSON_NAME)
    try:
        vocab = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}); "
                              "restore the file or save the tokenizer again") from None
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{path}:1: expected a JSON object {{token: id}}, found {type(vocab).__name__}")
    seen: dict[int, str] = {}
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise CheckpointError(f"{path}:{_line_of(text, token)}: the id of {token!r} is {index!r}; "
                                  "ids must be integers >= 0")
        if index in seen:
            raise CheckpointError(f"{path}:{_line_of(text, token)}: id {index} is given to both {seen[index]!r} "
                                  f"and {token!r}; each token needs its own id")
        seen[index] = token
    if sorted(seen) != list(range(len(seen))):
        gap = next(i for i in range(len(seen) + 1) if i not in seen)
        raise CheckpointError(f"{path}:1: the ids must be 0..{len(seen) - 1} with none missing; id {gap} is missing")
    return vocab


def read_merges(path: Path, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """merges.txt as [(a, b), ...] in rank order (an optional "#version" first line is skipped);
    a line that is not two known tokens whose join is known raises CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"no {MERGES_NAME} in {path.parent}: a byte-level BPE folder holds "
                              f"{VOCAB_JSON_NAME} and {MERGES_NAME} (save one with tokenizer.save_pretrained(folder))")
    merges = []
    for number, line in enumerate(read_text(path, what=MERGES_NAME).split("\n"), start=1):
        if (number == 1 and line.startswith("#version")) or not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise CheckpointError(f"{path}:{number}: expected two tokens separated by one space, found {line!r:.80}")
        a, b = parts
        for token in (a, b, a + b):
            if token not in vocab:
                raise CheckpointError(f"{path}:{number}: {token!r} (in the merge {line!r:.60}) is not in "
                                      f"{VOCAB_JSON_NAME}; the two files must come from the same tokenizer")
        merges.append((a, b))
    return merges


def read_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a Hugging Face tokenizer.json that holds a byte-level BPE with GPT-2's
    pre-tokenization (model.type "BPE", pre_tokenizer ByteLevel without a prefix space); its
    added tokens join the vocabulary."""
    try:
        data = json.loads(read_text(path, what=TOKENIZER_JSON_NAME))
        model, pre = data["model"], data.get("pre_tokenizer") or {}
        kind = model.get("type")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); restore the file") from None
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path}:1: no \"model\" object; expected a tokenizer.json saved by transformers") from None
    if kind != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        raise CheckpointError(f"{path}: model {kind!r} with pre-tokenizer {pre.get('type')!r} is not GPT-2's byte-level "
                              "BPE (model BPE, pre_tokenizer ByteLevel, no prefix space); save vocab.json + merges.txt "
                              "beside it, or load it with the library that wrote it")
    vocab = dict(model["vocab"])
    for added in data.get("added_tokens") or []:
        vocab.setdefault(added["content"], added["id"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return vocab, merges


def _line_of(text: str, token: str) -> int:
    at = text.find(json.dumps(token, ensure_ascii=False))
    return text.count("\n", 0, at) + 1 if at >= 0 else 1


def _bytes_to_str(data: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in data)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"the text has a lone surrogate {text[e.start]!r} (U+{ord(text[e.start]):04X}) at character "
                        f"{e.start}, which is not Unicode text and has no UTF-8 bytes; remove it") from None


def _special_splitter(special_tokens: Sequence[str]):
    """A pattern whose split() keeps the special tokens as separate items (longest match first)."""
    if not special_tokens:
        return None
    return regex.compile("(" + "|".join(regex.escape(t) for t in sorted(special_tokens, key=len, reverse=True)) + ")")


def _training_texts(source) -> list[str]:
    """Texts from one file (str or Path), a list of files (Paths, or strs that all name existing
    files, as SentencePieceTokenizer.train), or an iterable of text strings."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _is_file(source)):
        source = [Path(source)]
    elif isinstance(source, str):
        source = [source]
    items = list(source)
    if items and all(isinstance(x, str) and _is_file(x) for x in items):
        items = [Path(x) for x in items]
    texts = [read_text(x, what="training text") if isinstance(x, os.PathLike) else x for x in items]
    for text in texts:
        if not isinstance(text, str):
            raise DataError(f"training text must be str, got {type(text).__name__}: pass file paths or strings")
    if not any(texts):
        raise DataError("no text to train the tokenizer on: the texts are empty")
    return texts


def _is_file(text: str) -> bool:
    return len(text) < 4096 and "\n" not in text and os.path.isfile(text)
