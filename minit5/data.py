"""Text-to-text data for T5: source/target pairs from files, tokenized examples, padded batches.

Pairs come from a table (.tsv/.csv/.jsonl with a source and a target column, read by
common/data/labeled.py) or from two parallel files, line i of one translating line i of the other
(Multi30k's train.de / train.en). Each example is {"input_ids": prefix + source </s>,
"labels": target </s>}; DataCollatorForSeq2Seq pads input_ids with pad (attention_mask 0 there)
and labels with -100, so the loss skips the padding; the model shifts labels right itself.
"""
from __future__ import annotations

from pathlib import Path
import math
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from common.data.labeled import load_classification_file
from common.errors import DataError, read_text
from common.nn.losses import IGNORE_INDEX


def read_parallel_files(source_file, target_file, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Line i of source_file with line i of target_file; both must have the same number of lines."""
    sources = read_text(source_file, encoding=encoding, what="source file").splitlines()
    targets = read_text(target_file, encoding=encoding, what="target file").splitlines()
    if len(sources) != len(targets):
        raise DataError(f"{source_file} has {len(sources)} lines but {target_file} has {len(targets)}; parallel "
                        "files need one target line per source line")
    pairs = [(s, t) for s, t in zip(sources, targets) if s.strip() or t.strip()]
    if not pairs:
        raise DataError(f"{source_file} and {target_file} hold no text")
    return pairs


def read_pair_table(path, source_column: str, target_column: str, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """(source, target) rows of a .tsv/.csv/.jsonl file with those two named columns."""
    examples = load_classification_file(path, text_column_name=source_column, text_pair_column_name=target_column,
                                        label_column_name=None, encoding=encoding)
    return [(e.text, e.text_pair) for e in examples]


def read_pairs(table=None, source_file=None, target_file=None, source_column: str = "source",
               target_column: str = "target", encoding: str = "utf-8", what: str = "train") -> list[tuple[str, str]]:
    if table is not None and (source_file or target_file):
        raise DataError(f"--{what}_file and --{what}_source_file/--{what}_target_file both given; use one of them")
    if table is not None:
        return read_pair_table(table, source_column, target_column, encoding)
    if source_file and target_file:
        return read_parallel_files(source_file, target_file, encoding)
    raise DataError(f"no {what} data: pass --{what}_file (a .tsv/.csv/.jsonl with --source_column and "
                    f"--target_column) or both --{what}_source_file and --{what}_target_file")


class Seq2SeqDataset(Dataset):
    """Tokenized pairs: input_ids = tokens(prefix + source)[:max_source_length - 1] + </s>,
    labels = tokens(target)[:max_target_length - 1] + </s>."""

    def __init__(self, tokenizer, pairs: Sequence[tuple[str, str]], max_source_length: int = 128,
                 max_target_length: int = 128, source_prefix: str = ""):
        eos = tokenizer.eos_token_id
        self.examples = []
        for source, target in pairs:
            src = tokenizer.encode(source_prefix + source, add_special_tokens=False)[:max_source_length - 1]
            tgt = tokenizer.encode(target, add_special_tokens=False)[:max_target_length - 1]
            self.examples.append({"input_ids": src + [eos], "labels": tgt + [eos]})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


class DataCollatorForSeq2Seq:
    """Pad a list of {"input_ids", "labels"} to the longest of the batch: input_ids with pad_token_id,
    attention_mask 1/0, labels with -100 (B, T)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        S = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), S), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), S), dtype=torch.long)
        for row, f in enumerate(features):
            input_ids[row, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
            attention_mask[row, :len(f["input_ids"])] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "labels" in features[0]:
            T = max(len(f["labels"]) for f in features)
            labels = torch.full((len(features), T), IGNORE_INDEX, dtype=torch.long)
            for row, f in enumerate(features):
                labels[row, :len(f["labels"])] = torch.tensor(f["labels"])
            batch["labels"] = labels
        return batch


def target_budget(max_new_tokens: int, source_length: int, max_length_ratio: Optional[float]) -> int:
    """The longest target for a source of `source_length` tokens: min(max_new_tokens, ceil(r S) + 4)
    with r = max_length_ratio (None: max_new_tokens). A translation is about as long as its source, so
    a greedy output that loops stops near there instead of at max_new_tokens."""
    if max_length_ratio is None:
        return max_new_tokens
    return min(max_new_tokens, math.ceil(max_length_ratio * source_length) + 4)


def translate_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, max_source_length: int = 128,
                    max_new_tokens: int = 64, num_beams: int = 1, source_prefix: str = "",
                    max_length_ratio: Optional[float] = None, streamer_for=None, **generate_kwargs) -> list[str]:
    """Generate a target for each text, in batches (sources right-padded: T5 has no absolute positions).
    max_length_ratio bounds each target by its own source's length (target_budget); streamer_for(i)
    gives text i a streamer (common/generation/streamers.py; then batch_size must be 1)."""
    collate = DataCollatorForSeq2Seq(tokenizer.pad_token_id)
    eos = tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        features = [{"input_ids": tokenizer.encode(source_prefix + t, add_special_tokens=False)[:max_source_length - 1]
                     + [eos]} for t in chunk]
        batch = collate(features)
        budgets = [target_budget(max_new_tokens, int(n), max_length_ratio) for n in batch["attention_mask"].sum(1)]
        streamer = streamer_for(start) if streamer_for is not None else None
        tokens = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                                max_new_tokens=max(budgets), num_beams=num_beams, streamer=streamer, **generate_kwargs)
        rows = len(tokens) // len(budgets)  # num_return_sequences rows per source
        tokens = [row[:1 + budgets[i // rows]] for i, row in enumerate(tokens.tolist())]  # each by its own source
        out += tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return [s.strip() for s in out]


def read_lines(path: Optional[str], encoding: str = "utf-8") -> list[str]:
    return read_text(Path(path), encoding=encoding, what="input file").splitlines()
