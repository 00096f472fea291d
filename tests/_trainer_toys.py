"""Tiny models and data sets for the Trainer tests (and the scripts those tests launch).

They honour the only contract the Trainer has: `model(**batch)` returns an object with `.loss`
and `.logits`. Nothing here depends on minibert or minigpt.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from common.nn.losses import cross_entropy
from common.train.utils import default_data_collator

PAD_ID = 0


@dataclass
class ToyOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor


class ToyTokenLM(nn.Module):
    """Per-token classifier: embedding -> LayerNorm -> dropout -> linear; loss = mean CE over labels != -100."""

    def __init__(self, vocab_size: int = 13, hidden: int = 8, dropout: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)
        self.poisoned = False  # tests set it to make the loss NaN

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.dropout(self.norm(self.embed(input_ids))))  # (B, T, V)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
            if self.poisoned:
                loss = loss * float("nan")
        return ToyOutput(loss, logits)


class ToyClassifier(nn.Module):
    """Per-sequence labels: mean of the embeddings -> linear; loss = mean CE over the batch."""

    def __init__(self, vocab_size: int = 13, hidden: int = 8, num_labels: int = 3):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.head(self.embed(input_ids).mean(dim=1))  # (B, K)
        return ToyOutput(None if labels is None else cross_entropy(logits, labels), logits)


class ToyPretrained(ToyTokenLM):
    """A ToyTokenLM with save_pretrained (config.json + model.safetensors), like the real models."""

    def save_pretrained(self, folder) -> None:
        from common.hub.pretrained import WEIGHTS_NAME, atomic_save_file, clean_state_dict

        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"model_type": "toy", "vocab_size": self.embed.num_embeddings}, f)
        atomic_save_file(clean_state_dict(self.state_dict()), os.path.join(folder, WEIGHTS_NAME))


class ToyTokenizer:
    pad_token_id = PAD_ID

    def save_pretrained(self, folder) -> None:
        with open(os.path.join(folder, "vocab.txt"), "w") as f:
            f.write("\n".join(f"tok{i}" for i in range(13)) + "\n")


class RaggedTokenDataset(Dataset):
    """Sequences of random lengths (lists of ids); labels = ids with some positions set to -100,
    so micro-batches hold very different numbers of label tokens."""

    def __init__(self, n: int = 24, min_len: int = 2, max_len: int = 12, vocab_size: int = 13, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
            ids = torch.randint(1, vocab_size, (length,), generator=g)
            labels = torch.where(torch.rand(length, generator=g) < 0.3, torch.full_like(ids, -100), ids)
            self.items.append({"input_ids": ids.tolist(), "labels": labels.tolist()})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class ClassificationDataset(Dataset):
    def __init__(self, n: int = 20, length: int = 5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 13, (n, length), generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def random_replacement_collator(features: list[dict]) -> dict:
    """Pad, then replace about 20% of the input ids by random ones (draws from torch's global RNG,
    as MLM masking does), so an exact resume must restore the RNG too."""
    batch = default_data_collator(features, pad_token_id=PAD_ID)
    replace = (torch.rand(batch["input_ids"].shape) < 0.2) & batch["attention_mask"].bool()
    batch["input_ids"] = torch.where(replace, torch.randint(1, 13, batch["input_ids"].shape), batch["input_ids"])
    return batch
