"""Tokenizers: text -> ids and back, called like transformers' tokenizers.

    from common.text.auto import BertTokenizer, load_tokenizer
    tok = BertTokenizer.from_pretrained(folder)          # a folder with vocab.txt
    batch = tok(["a sentence", "another"], padding=True, truncation=True, return_tensors="pt")
    batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]    # (B, T) each

Where each piece lives:
    common/text/base.py   BaseTokenizer (encode, truncate, pad, save) and BatchEncoding
    common/text/wordpiece.py        BertTokenizer: BERT's WordPiece on a vocab.txt
    common/text/sentencepiece.py   SentencePieceTokenizer: train your own (unigram or BPE)
    common/text/char.py   CharTokenizer: one token per character (GPT on tiny shakespeare)

`load_tokenizer(folder)` (also `AutoTokenizer.from_pretrained(folder)`) picks the class named by
tokenizer_config.json, or else by the files present: vocab.txt -> BertTokenizer,
*.model -> SentencePieceTokenizer, char_vocab.json -> CharTokenizer,
vocab.json + merges.txt -> BPETokenizer (GPT-2's byte-level BPE; a Hugging Face GPT-2 folder).
"""
from __future__ import annotations

from pathlib import Path

from common.text.bpe import MERGES_NAME, VOCAB_JSON_NAME, BPETokenizer
from common.text.char import CHAR_VOCAB_NAME, CharTokenizer
from common.errors import CheckpointError
from common.text.sentencepiece import SentencePieceTokenizer
from common.text.base import BaseTokenizer, BatchEncoding, check_folder, read_tokenizer_config
from common.text.wordpiece import VOCAB_NAME, BertTokenizer

__all__ = ["AutoTokenizer", "BPETokenizer", "BaseTokenizer", "BatchEncoding", "BertTokenizer", "CharTokenizer",
           "SentencePieceTokenizer", "load_tokenizer"]

# tokenizer_class values we can read; transformers' names for WordPiece tokenizers map to ours.
TOKENIZER_CLASSES = {
    "BertTokenizer": BertTokenizer, "BertTokenizerFast": BertTokenizer,
    "DistilBertTokenizer": BertTokenizer, "DistilBertTokenizerFast": BertTokenizer,
    "SentencePieceTokenizer": SentencePieceTokenizer, "CharTokenizer": CharTokenizer,
    "BPETokenizer": BPETokenizer, "GPT2Tokenizer": BPETokenizer, "GPT2TokenizerFast": BPETokenizer,
}


def load_tokenizer(folder, **overrides) -> BaseTokenizer:
    """The tokenizer saved in `folder`, of whichever class saved it."""
    folder = check_folder(folder)
    name = read_tokenizer_config(folder).get("tokenizer_class")
    if name in TOKENIZER_CLASSES:
        return TOKENIZER_CLASSES[name].from_pretrained(folder, **overrides)
    cls = _class_from_files(folder)
    if cls is None:
        present = sorted(p.name for p in folder.iterdir())
        said = f"tokenizer_config.json names {name!r}, which is not one of ours; and " if name else ""
        raise CheckpointError(
            f"no tokenizer in {folder}: {said}expected {VOCAB_NAME} (BERT WordPiece), a *.model file "
            f"(SentencePiece), {CHAR_VOCAB_NAME} (characters) or {VOCAB_JSON_NAME} + {MERGES_NAME} "
            f"(GPT-2's byte-level BPE), found {present or 'nothing'}. "
            "Save the tokenizer with tokenizer.save_pretrained(folder) next to the model."
        )
    return cls.from_pretrained(folder, **overrides)


def _class_from_files(folder: Path):
    if (folder / VOCAB_JSON_NAME).is_file() and (folder / MERGES_NAME).is_file():
        return BPETokenizer
    if (folder / VOCAB_NAME).is_file():
        return BertTokenizer
    if any(folder.glob("*.model")):
        return SentencePieceTokenizer
    if (folder / CHAR_VOCAB_NAME).is_file():
        return CharTokenizer
    return None


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(folder)`, spelled as in transformers; see load_tokenizer."""

    @staticmethod
    def from_pretrained(folder, **overrides) -> BaseTokenizer:
        return load_tokenizer(folder, **overrides)

