"""Language-modelling data: text file -> examples (datasets) -> padded, masked batches (collators).

    LineByLineTextDataset             one example per non-empty line:   [CLS] line [SEP]
    GroupedTextDataset (TextDataset)  causal LM: all tokens in one tensor, cut into blocks
    TextDatasetForNextSentencePrediction  BERT pairs: [CLS] A [SEP] B [SEP], label 0 IsNext / 1 NotNext

    DataCollatorWithPadding           pad to the longest example of the batch
    DataCollatorForTokenClassification  the same, and per-token labels padded with -100
    DataCollatorForLanguageModeling   mlm=True: BERT's 80/10/10 corruption (common.nn.masks.mlm_mask_tokens)
                                      mlm=False: labels = input_ids (the model shifts them), -100 at padding

The tokenizer is any object with the `transformers` tokenizer methods used here: `encode`,
`build_inputs_with_special_tokens`, `create_token_type_ids_from_sequences`,
`pad`, `pad_token_id`, `mask_token_id`, `all_special_ids` and `len(tokenizer)` (common/text/auto.py
has three).

Padding (tokenizer.pad) gives every padded key the value that makes the padding harmless:
input_ids the pad id, attention_mask 0 (hidden from attention), token_type_ids 0,
special_tokens_mask 1 (never masked); the collators pad labels with -100 (ignored by the loss).
"""
from __future__ import annotations

import random
import warnings
from typing import Any, Mapping, Optional, Sequence

import torch
from torch.utils.data import Dataset

from common.errors import ConfigError, DataError, read_text
from common.nn.losses import IGNORE_INDEX
from common.nn.masks import mlm_mask_tokens


# ---------------------------------------------------------------- helpers


def token_ids(tokenizer, text: str) -> list[int]:
    """Text -> ids with no special tokens added."""
    return tokenizer.encode(text, add_special_tokens=False)


def num_special_tokens(tokenizer, pair: bool = False) -> int:
    """How many special tokens `build_inputs_with_special_tokens` adds ([CLS] x [SEP] -> 2, pair -> 3)."""
    return len(tokenizer.build_inputs_with_special_tokens([], [] if pair else None))


def warn_truncated(lengths: Sequence[int], limit: int, what: str, flag: str) -> None:
    """One warning for a whole data set: how many examples were cut to `limit` tokens, the longest
    one, and the flag that keeps them whole. Silent when nothing was cut."""
    cut = [n for n in lengths if n > limit]
    if cut:
        warnings.warn(f"{what}: {len(cut)} of {len(lengths)} examples are longer than {flag} {limit} tokens and were "
                      f"truncated (the longest has {max(cut)}); raise {flag} (up to the model's "
                      "max_position_embeddings) to keep them whole", stacklevel=3)


def read_nonempty_text(file_path, encoding: str, what: str) -> str:
    """The whole file (common.errors.read_text), or a DataError when it holds only whitespace."""
    text = read_text(file_path, encoding=encoding, what=what)
    if not text.strip():
        raise DataError(f"{what} {file_path} is empty (or only whitespace); give a file with content in it")
    return text


# ---------------------------------------------------------------- datasets


class LineByLineTextDataset(Dataset):
    """One example per non-empty line, with special tokens, truncated to `block_size` tokens in all.

    Item: {"input_ids": LongTensor (T,)} with T <= block_size.
    """

    def __init__(self, tokenizer, file_path, block_size: int, encoding: str = "utf-8"):
        n_special = num_special_tokens(tokenizer)
        if block_size <= n_special:
            raise ConfigError(f"block_size ({block_size}) must exceed the {n_special} special tokens per line")
        text = read_nonempty_text(file_path, encoding, "text file")
        lines = [token_ids(tokenizer, line) for line in text.splitlines() if line.strip()]
        warn_truncated([len(ids) + n_special for ids in lines], block_size, str(file_path), "block_size")
        self.examples = [tokenizer.build_inputs_with_special_tokens(ids[: block_size - n_special]) for ids in lines]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(self.examples[i], dtype=torch.long)}


class GroupedTextDataset(Dataset):
    """Causal-LM blocks: the whole file as one token stream x_1..x_N cut into consecutive blocks.

    Block i holds tokens [i*L, (i+1)*L) with L = block_size minus the special tokens the tokenizer
    wraps a sequence in (none for a char or GPT tokenizer); the last partial block is dropped.
    Only the stream is stored (one LongTensor of N ids); a block is a view into it, so a
    1 M-character file costs 8 MB, not one tensor per block.

    Item: {"input_ids": LongTensor (block_size,)}. Labels come from the collator (mlm=False).
    """

    def __init__(self, tokenizer, file_path, block_size: int, encoding: str = "utf-8"):
        self.tokenizer = tokenizer
        self.n_special = num_special_tokens(tokenizer)
        self.content_len = block_size - self.n_special
        if self.content_len < 1:
            raise ConfigError(f"block_size ({block_size}) must exceed the {self.n_special} special tokens per block")
        text = read_nonempty_text(file_path, encoding, "text file")
        self.ids = torch.tensor(token_ids(tokenizer, text), dtype=torch.long)  # (N,)
        if len(self.ids) < self.content_len:
            raise DataError(
                f"{file_path} has {len(self.ids)} tokens, fewer than one block of {block_size}; "
                "use a smaller block size (--block_size / --max_seq_length) or a longer file"
            )

    def __len__(self) -> int:
        return len(self.ids) // self.content_len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"block {i} out of range for {len(self)} blocks")
        i %= len(self)
        block = self.ids[i * self.content_len: (i + 1) * self.content_len]  # (L,) a view, no copy
        if self.n_special:
            block = torch.tensor(self.tokenizer.build_inputs_with_special_tokens(block.tolist()), dtype=torch.long)
        return {"input_ids": block}


TextDataset = GroupedTextDataset  # the name `transformers` used for the same thing


class TextDatasetForNextSentencePrediction(Dataset):
    """Sentence pairs for BERT pre-training: masked LM on [CLS] A [SEP] B [SEP] and next-sentence prediction.

    File format: one sentence per line, a blank line between documents.

    Walking through each document, one pair at a time, as in BERT's create_pretraining_data:
      target length  t = block_size - 3, or (probability short_seq_probability) uniform in [2, t]
                     (drawn per pair; BERT drew it once per document);
      accumulate whole sentences into a chunk until it holds >= t tokens (or the document ends);
      A = the chunk's first k sentences, k uniform in [1, sentences - 1];
      with probability 1 - nsp_probability:  B = the rest of the chunk, label 0 (IsNext);
      otherwise: B = consecutive sentences from a random point of ANOTHER document, label 1 (NotNext),
                 and the chunk's unused sentences go back to be used by the next pair.
    A chunk of one sentence that must be IsNext is cut at a random token, so B still truly follows A
    (BERT instead made such pairs always NotNext, which skews the labels).
    Finally the pair is truncated until |A| + |B| + 3 <= block_size, removing one token at a time
    from the longer side, at its front or back with equal odds (BERT's truncate_seq_pair).

    NotNext needs another document: a file with a single document raises a DataError unless
    nsp_probability is 0. Everything is built once, at construction, from `seed`.

    Item: {"input_ids": (T,), "token_type_ids": (T,), "next_sentence_label": ()} LongTensors, T <= block_size.
    """

    def __init__(self, tokenizer, file_path, block_size: int, nsp_probability: float = 0.5,
                 short_seq_probability: float = 0.1, seed: int = 0, encoding: str = "utf-8"):
        for name, p in (("nsp_probability", nsp_probability), ("short_seq_probability", short_seq_probability)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {p}")
        self.tokenizer = tokenizer
        self.max_num_tokens = block_size - num_special_tokens(tokenizer, pair=True)
        if self.max_num_tokens < 2:
            raise ConfigError(f"block_size ({block_size}) leaves {self.max_num_tokens} tokens for A and B; need >= 2")
        self.nsp_probability = nsp_probability
        self.short_seq_probability = short_seq_probability
        self.rng = random.Random(seed)

        text = read_nonempty_text(file_path, encoding, "NSP text file")
        self.documents = self._read_documents(text)
        if len(self.documents) < 2 and nsp_probability > 0:
            raise DataError(
                f"{file_path} holds {len(self.documents)} document; next-sentence prediction needs >= 2 "
                "(separate documents with a blank line) for NotNext pairs, or pass --nsp_probability 0"
            )
        self.examples = []
        for doc_index in range(len(self.documents)):
            self._create_examples_from_document(doc_index)

    def _read_documents(self, text: str) -> list[list[list[int]]]:
        documents, current = [], []
        for line in text.splitlines():
            if not line.strip():
                if current:
                    documents.append(current)
                current = []
                continue
            ids = token_ids(self.tokenizer, line)
            if ids:
                current.append(ids)
        if current:
            documents.append(current)
        return documents

    # BEGIN EXERCISE nsp_pairs
    def _random_other_document(self, doc_index: int) -> list[list[int]]:
        other = self.rng.randrange(len(self.documents) - 1)
        return self.documents[other + (other >= doc_index)]  # skip doc_index: never the same document

    def _create_examples_from_document(self, doc_index: int) -> None:
        document, rng = self.documents[doc_index], self.rng
        i = 0
        while i < len(document):
            target = self.max_num_tokens
            if rng.random() < self.short_seq_probability:
                target = rng.randint(2, self.max_num_tokens)
            chunk, length = [], 0
            while i < len(document) and length < target:
                chunk.append(document[i])
                length += len(document[i])
                i += 1
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            is_next = rng.random() >= self.nsp_probability

            if is_next and len(chunk) >= 2:
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            elif is_next and len(tokens_a) >= 2:
                cut = rng.randint(1, len(tokens_a) - 1)
                tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
            elif len(self.documents) < 2:
                continue  # a one-token chunk has no continuation, and there is no other document
            else:
                is_next = False  # chosen, or forced: a one-token chunk has no continuation to offer
                target_b = max(1, target - len(tokens_a))
                other = self._random_other_document(doc_index)
                tokens_b = []
                for sentence in other[rng.randrange(len(other)):]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b:
                        break
                i -= len(chunk) - a_end  # the sentences not used as A start the next chunk

            self._truncate_seq_pair(tokens_a, tokens_b)
            self.examples.append({
                "input_ids": self.tokenizer.build_inputs_with_special_tokens(tokens_a, tokens_b),
                "token_type_ids": self.tokenizer.create_token_type_ids_from_sequences(tokens_a, tokens_b),
                "next_sentence_label": 0 if is_next else 1,
            })

    def _truncate_seq_pair(self, tokens_a: list[int], tokens_b: list[int]) -> None:
        while len(tokens_a) + len(tokens_b) > self.max_num_tokens:
            longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
            # Both ends, so the model does not learn that a segment always starts (or ends) cleanly.
            if self.rng.random() < 0.5:
                del longer[0]
            else:
                longer.pop()
    # END EXERCISE nsp_pairs

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: torch.tensor(value, dtype=torch.long) for key, value in self.examples[i].items()}


# ---------------------------------------------------------------- padding and collators


def pad_batch(tokenizer, features: Sequence[Any], pad_to_multiple_of: Optional[int] = None) -> dict:
    """Examples (dicts, or bare lists / tensors of input_ids) -> tensors padded by `tokenizer.pad`.

    Keys the tokenizer does not pad (labels, next_sentence_label, ...) are stacked as they are.
    """
    if len(features) == 0:
        raise ValueError("cannot collate an empty list of examples")
    if not isinstance(features[0], Mapping):
        features = [{"input_ids": f} for f in features]
    return dict(tokenizer.pad(features, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt"))


class DataCollatorWithPadding:
    """Pad a list of tokenized examples into a batch; `label` / `label_ids` are renamed `labels`."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch(self.tokenizer, features, self.pad_to_multiple_of)
        for old in ("label", "label_ids"):
            if old in batch:
                batch["labels"] = batch.pop(old)
        return batch


class DataCollatorForTokenClassification:
    """Pad examples whose `labels` has one entry per token; label padding is -100 (ignored by the loss),
    on the same side as the tokenizer pads input_ids."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None, label_pad_token_id: int = IGNORE_INDEX):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad_token_id = label_pad_token_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        label_key = "labels" if "labels" in features[0] else "label"
        labels = [list(map(int, f[label_key])) for f in features] if label_key in features[0] else None
        batch = pad_batch(self.tokenizer, [{k: v for k, v in f.items() if k != label_key} for f in features],
                          self.pad_to_multiple_of)
        if labels is None:
            return batch
        T = batch["input_ids"].shape[1]
        padding = [[self.label_pad_token_id] * (T - len(row)) for row in labels]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch["labels"] = torch.tensor([pad + row if left else row + pad for row, pad in zip(labels, padding)],
                                       dtype=torch.long)  # (B, T)
        return batch


class DataCollatorForLanguageModeling:
    """Batches for masked LM (mlm=True, BERT) or causal LM (mlm=False, GPT).

    mlm=True: every real, non-special token is selected with probability mlm_probability;
    a selected token becomes [MASK] (80%), a random NON-special token (10%) or stays (10%)
    (common.nn.masks.mlm_mask_tokens). labels = the original token at selected positions, -100 elsewhere.
    Special tokens and padding are never selected.
    mlm=False: labels = input_ids with -100 at padding; the model shifts them by one itself.

    Other keys (token_type_ids, next_sentence_label, ...) pass through, padded as needed.
    seed: masks reproducible from the seed (each DataLoader worker adds its worker id); or pass a
    torch.Generator; neither: the global torch RNG.
    """

    def __init__(self, tokenizer, mlm: bool = True, mlm_probability: float = 0.15,
                 pad_to_multiple_of: Optional[int] = None, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None):
        if mlm and tokenizer.mask_token_id is None:
            raise ConfigError("mlm=True needs a tokenizer with a mask token ([MASK]); "
                              "use mlm=False for causal language modelling")
        if mlm and not 0.0 < mlm_probability <= 1.0:
            raise ConfigError(f"mlm_probability must be in (0, 1], got {mlm_probability}; BERT selects 0.15 "
                              "(--mlm_probability 0.15)")
        if seed is not None and generator is not None:
            raise ConfigError("pass either seed or generator to DataCollatorForLanguageModeling, not both")
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.generator = generator
        self._generator_worker = None  # the DataLoader worker that self.generator was seeded for
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        vocab = torch.arange(len(tokenizer))
        self.random_token_ids = vocab[~torch.isin(vocab, self.special_ids)]  # the random branch never adds [CLS]

    def _generator(self) -> Optional[torch.Generator]:
        if self.seed is None:
            return self.generator
        # Each DataLoader worker holds a copy of this collator; seeding by worker id keeps the
        # workers from all drawing the same masks.
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        if self.generator is None or self._generator_worker != worker:
            self.generator = torch.Generator().manual_seed(self.seed + worker + 1)
            self._generator_worker = worker
        return self.generator

    def __call__(self, features: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = pad_batch(self.tokenizer, features, self.pad_to_multiple_of)
        special = batch.pop("special_tokens_mask", None)
        if not self.mlm:
            labels = batch["input_ids"].clone()  # (B, T)
            labels[batch["attention_mask"] == 0] = IGNORE_INDEX
            batch["labels"] = labels
            return batch
        if special is None:
            special = torch.isin(batch["input_ids"], self.special_ids)  # (B, T)
        special = special.bool() | (batch["attention_mask"] == 0)
        batch["input_ids"], batch["labels"] = mlm_mask_tokens(
            batch["input_ids"], self.tokenizer.mask_token_id, len(self.tokenizer),
            special_tokens_mask=special, mlm_probability=self.mlm_probability,
            random_token_ids=self.random_token_ids, generator=self._generator(),
        )
        return batch
