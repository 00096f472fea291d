"""Span corruption (common/data/span_corruption.py) against T5's definitions."""
import random

from hypothesis import given
from hypothesis import strategies as st

from common.data.span_corruption import (
    DataCollatorForSpanCorruption,
    compute_input_and_target_lengths,
    corrupt_spans,
    noise_span_counts,
    random_spans_noise_mask,
)

VOCAB = 1000
FIRST_SENTINEL = VOCAB - 1  # <extra_id_0>
EOS, PAD = 1, 0


def runs(mask):
    """[(start, length)] of the runs of True."""
    out, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        if not m and start is not None:
            out.append((start, i - start))
            start = None
    return out


def reconstruct(inputs, targets, first_sentinel=FIRST_SENTINEL, num_sentinels=100):
    """Put each sentinel's span (the target tokens after it, up to the next sentinel) back into the inputs."""
    is_sentinel = lambda t: first_sentinel - num_sentinels < t <= first_sentinel  # noqa: E731
    spans, current = {}, None
    for t in targets:
        if is_sentinel(t):
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans[t] if is_sentinel(t) else [t]
    return out


@given(st.integers(2, 600), st.sampled_from([0.15, 0.3, 0.5]), st.sampled_from([1.0, 3.0, 5.0]), st.integers(0, 10**6))
def test_noise_count_and_span_count_follow_t5s_formulas(length, density, mean_span, seed):
    mask = random_spans_noise_mask(length, density, mean_span, random.Random(seed))
    num_noise = min(max(int(round(length * density)), 1), length - 1)
    num_spans = min(max(int(round(num_noise / mean_span)), 1), length - num_noise)
    assert len(mask) == length
    assert sum(mask) == num_noise, f"L={length}: {sum(mask)} noise tokens, T5 has round(L * {density}) = {num_noise}"
    assert len(runs(mask)) == num_spans, f"L={length}: {len(runs(mask))} spans, T5 has {num_spans}"
    assert (sum(mask), len(runs(mask))) == noise_span_counts(length, density, mean_span)
    assert not mask[0] and mask[-1], "T5's mask starts with kept tokens and ends with a noise span"


def test_counts_at_known_lengths():
    """Half-way cases round to even, as tf.round in T5: 0.15 * 10 = 1.5 -> 2; 2 / 3 -> 1 span."""
    assert noise_span_counts(10) == (2, 1)
    assert noise_span_counts(100) == (15, 5)
    assert noise_span_counts(512) == (77, 26)
    assert noise_span_counts(1) == (1, 1)  # counted as 2 tokens, like T5


@given(st.lists(st.integers(2, FIRST_SENTINEL - 100), min_size=1, max_size=300), st.integers(0, 10**6))
def test_inputs_and_targets_reconstruct_the_original(tokens, seed):
    mask = random_spans_noise_mask(len(tokens), rng=random.Random(seed))
    inputs, targets = corrupt_spans(tokens, mask, FIRST_SENTINEL)
    assert reconstruct(inputs, targets) == tokens
    num_spans = len(runs(mask))
    sentinels = [t for t in inputs if t > FIRST_SENTINEL - 100]
    assert sentinels == [FIRST_SENTINEL - k for k in range(num_spans)], "one sentinel per span, counting down"
    assert [t for t in targets if t > FIRST_SENTINEL - 100] == sentinels
    assert len(inputs) == len(tokens) - sum(mask) + num_spans
    assert len(targets) == sum(mask) + num_spans


def test_the_papers_example():
    """Raffel et al., figure 2: 'for inviting' and 'last' dropped."""
    words = "Thank you for inviting me to your party last week .".split()
    ids = list(range(10, 10 + len(words)))
    mask = [w in ("for", "inviting", "last") for w in words]
    inputs, targets = corrupt_spans(ids, mask, FIRST_SENTINEL)
    name = dict(zip(ids, words)) | {FIRST_SENTINEL: "<X>", FIRST_SENTINEL - 1: "<Y>"}
    assert " ".join(name[i] for i in inputs) == "Thank you <X> me to your party <Y> week ."
    assert " ".join(name[i] for i in targets) == "<X> for inviting <Y> last"


@given(st.integers(16, 1024), st.sampled_from([0.15, 0.25, 0.4]))
def test_input_and_target_lengths_are_what_corruption_gives(inputs_length, density):
    """A block of tokens_length raw tokens corrupts into at most inputs_length tokens (eos included),
    one more raw token would not fit, and the target has targets_length tokens. (From 16 tokens up:
    below about 10 the mask clamps n_noise and n_spans to >= 1, which T5's length formula does not.)"""
    tokens_length, targets_length = compute_input_and_target_lengths(inputs_length, density, 3.0)
    collator = DataCollatorForSpanCorruption(FIRST_SENTINEL, EOS, PAD, density, 3.0, seed=inputs_length)
    inputs, targets = collator.corrupt(list(range(2, 2 + tokens_length)))
    assert len(inputs) <= inputs_length and len(targets) == targets_length, (len(inputs), len(targets))
    num_noise = int(round((tokens_length + 1) * density))
    longer = tokens_length + 1 - num_noise + int(round(num_noise / 3.0)) + 1
    assert longer > inputs_length


def test_lengths_of_t5s_setting():
    """The flax T5 pretraining example's numbers: inputs 512 -> 568 raw tokens, 114 target tokens."""
    assert compute_input_and_target_lengths(512) == (568, 114)


def test_collator_appends_eos_pads_and_never_touches_specials():
    collator = DataCollatorForSpanCorruption(FIRST_SENTINEL, EOS, PAD, seed=0)
    features = [{"input_ids": list(range(2, 42))}, {"input_ids": list(range(2, 12))}]
    batch = collator(features)
    for row, feature in enumerate(features):
        n_in = int(batch["attention_mask"][row].sum())
        inputs = batch["input_ids"][row, :n_in].tolist()
        targets = [t for t in batch["labels"][row].tolist() if t != -100]
        assert inputs[-1] == EOS and targets[-1] == EOS, "eos ends both"
        assert EOS not in inputs[:-1] and EOS not in targets[:-1], "no span covers eos"
        assert batch["input_ids"][row, n_in:].eq(PAD).all(), "inputs padded with pad"
        assert reconstruct(inputs[:-1], targets[:-1]) == feature["input_ids"]
    again = DataCollatorForSpanCorruption(FIRST_SENTINEL, EOS, PAD, seed=0)(features)
    assert all(again[k].equal(batch[k]) for k in batch), "the same seed gives the same batch"
