"""Span corruption, T5's pretraining objective (Raffel et al. 2020, section 3.1.4).

A fraction of the tokens (noise_density, 0.15) is dropped in spans of mean length 3; each span is
replaced in the input by one sentinel, and the target lists each sentinel followed by the tokens it
replaced. The sentinels count DOWN from the top of the vocabulary, as in T5's tokenizer:
<extra_id_0> = vocab_size - 1, <extra_id_1> = vocab_size - 2, ...

    tokens   Thank you for inviting me to your party last week .
    inputs   Thank you <X> me to your party <Y> week .
    targets  <X> for inviting <Y> last
what corrupt_spans returns (<X> = <extra_id_0>, <Y> = <extra_id_1>); the collator then appends </s>
to both. The paper's figure 2 ends the target with one more sentinel <Z>; T5's code, and this one,
end it after the last span.

T5's random_spans_noise_mask, for a sequence of L tokens:
    n_noise = min(max(round(L * density), 1), L - 1)             noise tokens
    n_spans = max(round(n_noise / mean_span_length), 1)          noise spans (<= L - n_noise)
    the n_noise noise tokens are cut into n_spans non-empty spans, the L - n_noise others into
    n_spans non-empty gaps, each cut uniformly at random; gaps and spans alternate, a gap first.
For blocks of raw text T5 chooses the block length so that the corrupted input has exactly the
model's input length (compute_input_and_target_lengths). Python's round() is round-half-to-even,
like tf.round in T5's code. Nothing here knows about special tokens: the collator corrupts the text
tokens and appends eos after corruption, so a span never covers eos or padding.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

import torch

from common.errors import ConfigError
from common.nn.losses import IGNORE_INDEX


def noise_span_counts(length: int, noise_density: float = 0.15,
                      mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(n_noise, n_spans) for a sequence of `length` tokens, as T5's random_spans_noise_mask
    computes them (a sequence shorter than 2 is counted as 2, then the mask cut back)."""
    length = max(length, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Every span needs a kept token before it; only a tiny L at a high density hits this clamp
    # (T5's own code fails there instead).
    return num_noise, min(num_spans, length - num_noise)


def random_segmentation(num_items: int, num_segments: int, rng: random.Random) -> list[int]:
    """Cut num_items into num_segments non-empty parts, every cut equally likely: choose
    num_segments - 1 of the num_items - 1 gaps between items. Returns the part lengths (sum = num_items)."""
    cuts = sorted(rng.sample(range(1, num_items), num_segments - 1))
    bounds = [0, *cuts, num_items]
    return [b - a for a, b in zip(bounds, bounds[1:])]


# BEGIN EXERCISE span_corruption
def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            rng: Optional[random.Random] = None) -> list[bool]:
    """True at the noise tokens: n_spans spans of n_noise tokens in all (noise_span_counts), between
    n_spans gaps of the other tokens, gap first, both cut by random_segmentation. -> list of `length`."""
    rng = rng or random.Random()
    padded = max(length, 2)
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)
    keep_lengths = random_segmentation(padded - num_noise, num_spans, rng)
    mask: list[bool] = []
    for keep, noise in zip(keep_lengths, noise_lengths):
        mask += [False] * keep + [True] * noise
    return mask[:length]


def corrupt_spans(tokens: Sequence[int], noise_mask: Sequence[bool],
                  first_sentinel_id: int) -> tuple[list[int], list[int]]:
    """(inputs, targets): each run of noise tokens becomes one sentinel in the inputs; the targets
    hold each sentinel followed by the run it replaced. Sentinel k (0, 1, ...) is first_sentinel_id - k."""
    inputs: list[int] = []
    targets: list[int] = []
    sentinel = first_sentinel_id
    for i, (token, noise) in enumerate(zip(tokens, noise_mask)):
        starts_span = noise and (i == 0 or not noise_mask[i - 1])
        if starts_span:
            inputs.append(sentinel)
            targets.append(sentinel)
            sentinel -= 1
        (targets if noise else inputs).append(token)
    return inputs, targets
# END EXERCISE span_corruption


def compute_input_and_target_lengths(inputs_length: int, noise_density: float = 0.15,
                                     mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """(tokens_length, targets_length): the longest block of raw tokens whose corrupted input,
    with one sentinel per span and eos, fits inputs_length; and the target length it gives.
    For n raw tokens: input = (n - n_noise) + n_spans + 1, target = n_noise + n_spans + 1,
    n_noise = round(n * density), n_spans = round(n_noise / mean) (T5's formula, without clamps)."""

    def lengths(n: int) -> tuple[int, int]:
        num_noise = int(round(n * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return n - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    # At density 0.5 the target can come out one longer than the input; T5 trims one token then.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


class DataCollatorForSpanCorruption:
    """Per batch: corrupt each example's tokens, append eos to inputs and targets, pad.

    features: dicts with "input_ids" (text token ids, no eos). Returns input_ids (B, S) padded
    with pad_token_id, attention_mask (B, S), labels (B, T) padded with -100. A fresh random mask
    every time an example is seen (seeded by `seed`, so a run reproduces).
    first_sentinel_id: <extra_id_0>'s id, normally vocab_size - 1 (T5Tokenizer.sentinel_id(0)).
    """

    def __init__(self, first_sentinel_id: int, eos_token_id: int, pad_token_id: int,
                 noise_density: float = 0.15, mean_noise_span_length: float = 3.0, seed: int = 0):
        if not 0.0 < noise_density < 1.0:
            raise ConfigError(f"noise_density must be in (0, 1), got {noise_density}")
        if not mean_noise_span_length >= 1.0:
            raise ConfigError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
        self.first_sentinel_id, self.eos_token_id, self.pad_token_id = first_sentinel_id, eos_token_id, pad_token_id
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length
        self.rng = random.Random(seed)

    def corrupt(self, tokens: Sequence[int]) -> tuple[list[int], list[int]]:
        """One example: (inputs + [eos], targets + [eos])."""
        mask = random_spans_noise_mask(len(tokens), self.noise_density, self.mean_noise_span_length, self.rng)
        inputs, targets = corrupt_spans(list(tokens), mask, self.first_sentinel_id)
        return inputs + [self.eos_token_id], targets + [self.eos_token_id]

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        pairs = [self.corrupt(list(f["input_ids"])) for f in features]
        S = max(len(i) for i, _ in pairs)
        T = max(len(t) for _, t in pairs)
        input_ids = torch.full((len(pairs), S), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), S), dtype=torch.long)
        labels = torch.full((len(pairs), T), IGNORE_INDEX, dtype=torch.long)
        for row, (inputs, targets) in enumerate(pairs):
            input_ids[row, :len(inputs)] = torch.tensor(inputs)
            attention_mask[row, :len(inputs)] = 1
            labels[row, :len(targets)] = torch.tensor(targets)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
