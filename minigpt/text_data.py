"""One text file -> a training and a validation token stream -> the fixed-length windows a GPT reads.

Validation split (the custom for tiny shakespeare, and nanoGPT's): the LAST p percent of the
text, contiguous, cut at a character position before tokenizing:

    n_train = floor(n * (100 - p) / 100)      train = text[:n_train],  validation = text[n_train:]

A contiguous tail keeps the two apart: a random set of lines would put near-copies of training
passages (repeated speeches, stage directions) into the validation set.

Windows of L = block_size tokens from a stream x_0 .. x_{N-1}; there are K = floor(N / L) of them:

    evaluation  window i starts at s_i = i L                       every token scored once
    training    window i starts at s_i = min(i L + u_i, N - L)     u_i ~ Uniform{0 .. L-1}

The training jitter u_i (drawn from torch's global generator, which the Trainer seeds and
checkpoints, so runs repeat and resume exactly) makes every start position possible, as nanoGPT's
random batches do, while an epoch still covers the stream once. Item: {"input_ids": (L,),
"labels": (L,)}; the model shifts the labels, so a window scores L - 1 next-token predictions.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from common.errors import ConfigError, DataError


def split_train_validation(text: str, validation_percentage: float) -> tuple[str, str]:
    """(train, validation) = (text[:n_train], text[n_train:]), n_train = floor(n (100 - p) / 100)."""
    if not 0 <= validation_percentage < 100:
        raise ConfigError(f"validation_split_percentage must be in [0, 100), got {validation_percentage}; "
                          "10 keeps the last 10% of the file for validation, 0 keeps none")
    n_train = int(len(text) * (100 - validation_percentage) / 100)
    return text[:n_train], text[n_train:]


def encode_stream(tokenizer, text: str, what: str) -> torch.Tensor:
    """The whole text as one LongTensor (N,) of token ids, no special tokens added."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise DataError(f"the {what} gave no tokens; give a text with content in it")
    return torch.tensor(ids, dtype=torch.long)


class TokenBlocks(Dataset):
    """K = floor(N / block_size) windows of a token stream (see the module docstring).

    random_offset=False: consecutive windows (evaluation); True: jittered starts (training).
    """

    def __init__(self, ids: torch.Tensor, block_size: int, random_offset: bool, what: str = "text"):
        if block_size < 2:
            raise ConfigError(f"block_size must be >= 2 (a window scores block_size - 1 predictions), "
                              f"got {block_size}")
        if len(ids) < block_size:
            raise DataError(f"the {what} has {len(ids)} tokens, fewer than one window of block_size={block_size}; "
                            "use a longer text or a smaller --block_size")
        self.ids = ids  # (N,)
        self.block_size = block_size
        self.random_offset = random_offset

    def __len__(self) -> int:
        return len(self.ids) // self.block_size

    def start(self, i: int) -> int:
        """s_i: where window i begins."""
        start = i * self.block_size
        if self.random_offset:
            jitter = int(torch.randint(self.block_size, ()))
            start = min(start + jitter, len(self.ids) - self.block_size)
        return start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        s = self.start(i)
        window = self.ids[s: s + self.block_size]  # (L,) a view of the stream
        return {"input_ids": window, "labels": window}
