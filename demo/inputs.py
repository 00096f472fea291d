"""The demo's inputs: a corpus split into training and held-out documents, and its tokenizers.

Two sources, one shape (`DemoCorpus`):

    built-in   demo_data.generate_corpus(num_documents + heldout_documents, seed): stories of
               template sentences. Tokenizer: one token per word (the generator's complete word
               list), for BERT with [CLS] [SEP] [MASK], for the GPT without them.
    --data     the user's text file: one sentence per line, a blank line between documents (what
               next-sentence prediction needs). A file without blank lines is cut into documents of
               `lines_per_document` lines, and the demo says so. Tokenizers: SentencePiece (unigram)
               trained on the training documents, BERT style and GPT style.

The last documents (10%, at least 2) are held out: the BERT's MLM/NSP scores and the GPT's
validation loss are measured on text neither model trained on. Both parts are written as files
(results/.../data/corpus.txt, heldout.txt) because the datasets of common.data.language_modeling read files.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from demo import corpus as demo_data
from common.errors import DataError, read_text
from common.text.auto import BaseTokenizer, BertTokenizer, SentencePieceTokenizer

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_DOCUMENTS = 4  # two to train on (NSP needs another document for NotNext), two held out


@dataclass
class DemoCorpus:
    """Training and held-out documents (lists of sentences), written to files, and the notes to
    print about how they were made."""
    source: str  # "built-in" or the user's path
    train_file: Path
    heldout_file: Path
    train_documents: list[list[str]]
    heldout_documents: list[list[str]]
    notes: list[str] = field(default_factory=list)

    @property
    def num_sentences(self) -> int:
        return sum(len(doc) for doc in self.train_documents)


def write_documents(path: Path, documents: list[list[str]]) -> Path:
    """One sentence per line, a blank line between documents (TextDatasetForNextSentencePrediction's format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n", encoding="utf-8")
    return path


def split_heldout(documents: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """(train, heldout): the last max(2, 10%) documents are held out."""
    n_heldout = max(2, math.ceil(0.1 * len(documents)))
    return documents[:-n_heldout], documents[-n_heldout:]


def builtin_corpus(folder: Path, num_documents: int, heldout_documents: int, seed: int) -> DemoCorpus:
    documents = demo_data.generate_corpus(num_documents + heldout_documents, seed=seed)
    train, heldout = documents[:num_documents], documents[num_documents:]
    return DemoCorpus("built-in", write_documents(folder / "corpus.txt", train),
                      write_documents(folder / "heldout.txt", heldout), train, heldout,
                      [f"built-in corpus: {len(train)} generated stories for training, {len(heldout)} held out "
                       f"(demo/corpus.py, seed {seed})"])


def read_user_documents(path, lines_per_document: int,
                        encoding: str = "utf-8") -> tuple[list[list[str]], list[str]]:
    """The documents of a user's text file, and notes on how they were formed.

    Bad files fail with one line: missing, a folder, not valid in `encoding` (naming the byte
    offset), binary (NUL bytes), or too little text.
    """
    text = read_text(path, encoding, what="--data file")
    if "\x00" in text:  # NUL bytes: valid UTF-8, but not text
        raise DataError(f"--data {path} holds NUL bytes, so it is not text (a binary file?); give a plain text "
                        "file, one sentence per line, saved as UTF-8")
    lines = [line.strip() for line in text.splitlines()]
    if not any(lines):
        raise DataError(f"--data {path} is empty (or only whitespace); give a text file with one "
                        "sentence per line and a blank line between documents")
    documents, current = [], []
    for line in lines + [""]:
        if line:
            current.append(line)
        elif current:
            documents.append(current)
            current = []
    notes = []
    if len(documents) == 1:
        only = documents[0]
        documents = [only[i:i + lines_per_document] for i in range(0, len(only), lines_per_document)]
        notes.append(f"{path} has no blank lines between documents, so every {lines_per_document} lines "
                     f"form a document ({len(documents)} documents); NSP then asks whether two lines were "
                     "neighbours in the file")
    if len(documents) < MIN_DOCUMENTS:
        raise DataError(f"--data {path}: {len(documents)} documents ({sum(map(len, documents))} non-blank lines) "
                        f"is too little text; the demo needs at least {MIN_DOCUMENTS} documents (a blank line "
                        "between documents, or a smaller --lines_per_document)")
    return documents, notes


def user_corpus(path, folder: Path, lines_per_document: int, encoding: str = "utf-8") -> DemoCorpus:
    documents, notes = read_user_documents(path, lines_per_document, encoding)
    train, heldout = split_heldout(documents)
    notes.append(f"your corpus {path}: {len(train)} documents for training, the last {len(heldout)} held out")
    return DemoCorpus(str(path), write_documents(folder / "corpus.txt", train),
                      write_documents(folder / "heldout.txt", heldout), train, heldout, notes)


def builtin_tokenizers() -> tuple[BertTokenizer, BertTokenizer]:
    """(BERT's, GPT's) word-level tokenizers: every word the generator can write is one token.
    The GPT's has no [CLS]/[SEP]/[MASK], so a text is encoded as its words alone."""
    vocab = BERT_SPECIALS + demo_data.word_list()
    return BertTokenizer(vocab=vocab), BertTokenizer(vocab=vocab, cls_token=None, sep_token=None, mask_token=None)


def user_tokenizers(corpus: DemoCorpus, vocab_size: int) -> tuple[SentencePieceTokenizer, SentencePieceTokenizer,
                                                                   Optional[str]]:
    """(BERT's, GPT's) SentencePiece tokenizers trained on the training documents, and a note when
    the text was too small for `vocab_size` pieces."""
    sentences = [s for doc in corpus.train_documents for s in doc]
    note = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bert = SentencePieceTokenizer.train(sentences, vocab_size, special_tokens_style="bert")
        gpt = SentencePieceTokenizer.train(sentences, vocab_size, special_tokens_style="gpt")
    if caught:
        note = (f"SentencePiece found {bert.vocab_size} pieces in your text (fewer than {vocab_size}); "
                "the models use that vocabulary")
    return bert, gpt, note


def count_tokens(tokenizer: BaseTokenizer, documents: list[list[str]]) -> int:
    return sum(len(tokenizer.encode(s, add_special_tokens=False)) for doc in documents for s in doc)
