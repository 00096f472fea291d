"""The same batches for every candidate of a benchmark.

GPT: characters of tinyshakespeare (vocabulary 65, as nanoGPT's shakespeare_char) from $BENCH_TEXT,
data/tinyshakespeare.txt or ../shared/data/tinyshakespeare.txt (next to the repository), else
uniformly random ids (the speed of a step does not depend on which ids it sees; the loss curves of
bench/bf16.py do, and the report says which was used).
BERT: random sentence-pair ids with [CLS] A [SEP] B [SEP] layout, 15% of the non-special
positions selected for MLM with the 80/10/10 rule (common.nn.masks.mlm_mask_tokens), random NSP labels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

import torch

from common.nn.masks import mlm_mask_tokens

ROOT = Path(__file__).resolve().parents[1]


def text_file() -> Optional[Path]:
    """The first tinyshakespeare.txt found, or None."""
    candidates = (os.environ.get("BENCH_TEXT", ""), ROOT / "data" / "tinyshakespeare.txt",
                  ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def shakespeare_ids() -> Optional[torch.Tensor]:
    """The whole text as character ids (sorted character set), or None when the file is absent."""
    path = text_file()
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def gpt_data_source(vocab_size: int) -> str:
    """What gpt_batches draws from, for the report."""
    path, ids = text_file(), shakespeare_ids()
    if ids is None or int(ids.max()) >= vocab_size:
        return "uniformly random token ids"
    return f"character windows of {path.name}"


def gpt_batches(count: int, batch_size: int, block_size: int, vocab_size: int,
                seed: int = 0) -> list[torch.Tensor]:
    """`count` batches (B, T) of token ids: random windows of the text, or random ids."""
    g = torch.Generator().manual_seed(seed)
    ids = shakespeare_ids()
    if ids is None or int(ids.max()) >= vocab_size:
        return [torch.randint(0, vocab_size, (batch_size, block_size), generator=g) for _ in range(count)]
    starts = torch.randint(0, len(ids) - block_size, (count, batch_size), generator=g)
    return [torch.stack([ids[s:s + block_size] for s in row.tolist()]) for row in starts]


def bert_batches(count: int, batch_size: int, seq_len: int, vocab_size: int, mlm_probability: float = 0.15,
                 seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """`count` pre-training batches: input_ids, token_type_ids, attention_mask, labels,
    next_sentence_label. Ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]; no padding, full length."""
    g = torch.Generator().manual_seed(seed)
    cls_id, sep_id, mask_id, first_word = 2, 3, 4, 5
    batches = []
    for _ in range(count):
        ids = torch.randint(first_word, vocab_size, (batch_size, seq_len), generator=g)
        split = seq_len // 2
        ids[:, 0], ids[:, split], ids[:, -1] = cls_id, sep_id, sep_id
        token_type_ids = torch.zeros_like(ids)
        token_type_ids[:, split + 1:] = 1
        special = ids < first_word
        inputs, labels = mlm_mask_tokens(ids, mask_id, vocab_size, special_tokens_mask=special,
                                         mlm_probability=mlm_probability,
                                         random_token_ids=torch.arange(first_word, vocab_size), generator=g)
        batches.append(dict(input_ids=inputs, token_type_ids=token_type_ids,
                            attention_mask=torch.ones_like(ids), labels=labels,
                            next_sentence_label=torch.randint(0, 2, (batch_size,), generator=g)))
    return batches


def cycle(items: list) -> Iterator:
    while True:
        yield from items
