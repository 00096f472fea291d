"""One text file -> a training and a validation token stream -> the fixed-length windows a GPT reads.

Validation split (the custom for tiny shakespeare, and nanoGPT's): the LAST p percent of the
text, contiguous, cut at a character position before tokenizing:

    n_train = floor(n * (100 - p) / 100)      train = text[:n_train],  validation = text[n_train:]

A contiguous tail keeps the two apart: a random set of lines would put near-copies of training
passages (repeated speeches, stage directions) into the validation set.

Windows of L = block_size tokens from a stream x_0 .. x_{N-1}; there are K = floor(N / L) of them,
and M = N - L + 1 places a window can start (0 .. N - L):

    evaluation  window i starts at s_i = i L                          every token scored once
    training    window i starts at s_i = floor((i M + w_i) / K)       w_i ~ Uniform{0 .. M-1}

Training (stratified sampling): window i draws its start uniformly from its own stretch of the
M starts, [i M / K, (i + 1) M / K), about L wide, so an epoch's K windows still sweep the stream
once from front to back. And every start is equally likely: the K M pairs (i, w) give the
numbers i M + w = 0 .. K M - 1 once each, and floor(. / K) sends exactly K of them to each start,
so a window of an epoch picked at random starts at s with probability exactly 1 / M, as
nanoGPT's random batches do. (Jittering i L by u ~ Uniform{0 .. L-1} and clamping at N - L, as
this module did before, piles the clamped draws onto the last start: for N = 100, L = 8 it got
4/96 = 0.042 against 1/96 for every other; tests/test_minigpt_cli.py measures the difference.)
w_i comes from torch's global generator, which the Trainer seeds and checkpoints, so runs repeat
and resume exactly. Item: {"input_ids": (L,), "labels": (L,)}; the model shifts the labels, so a
window scores L - 1 next-token predictions.
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


def stratified_start(i: int, w: int, n_windows: int, n_starts: int) -> int:
    """floor((i M + w) / K) for window i of K, draw w in 0 .. M-1: uniform over window i's stretch of the
    M starts, and over all (i, w) pairs each start comes out exactly K times (module docstring)."""
    return (i * n_starts + w) // n_windows


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
        """s_i: where window i begins: i L, or with random_offset floor((i M + w) / K), w ~ U{0 .. M-1}."""
        if not self.random_offset:
            return i * self.block_size
        n_starts = len(self.ids) - self.block_size + 1  # M
        return stratified_start(i, int(torch.randint(n_starts, ())), len(self), n_starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        s = self.start(i)
        window = self.ids[s: s + self.block_size]  # (L,) a view of the stream
        return {"input_ids": window, "labels": window}
