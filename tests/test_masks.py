"""Masks (True = may attend) and BERT's MLM corruption (80% [MASK], 10% random, 10% unchanged)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from common.nn.attention import MultiHeadAttention, scaled_dot_product_attention, sdpa_attention, set_attn_implementation
from common.nn.masks import (additive_mask, causal_mask, combine_masks, mask_value, mlm_mask_tokens,
                          padding_mask)

seeds = st.integers(0, 2**31 - 1)
small = st.integers(1, 6)


def random_attention_mask(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, generator=g) < 0.7).long()


# ---------------------------------------------------------------- attention masks


@given(seed=seeds, B=small, T=small)
def test_padding_mask_is_B11T_and_true_exactly_at_real_tokens(seed, B, T):
    attention_mask = random_attention_mask(seed, B, T)
    m = padding_mask(attention_mask)
    assert m.shape == (B, 1, 1, T), f"padding_mask shape {tuple(m.shape)}, expected {(B, 1, 1, T)}"
    assert m.dtype == torch.bool, f"padding_mask dtype {m.dtype}, expected torch.bool"
    wrong = (m[:, 0, 0, :] != attention_mask.bool()).sum().item()
    assert wrong == 0, f"{wrong} positions of padding_mask disagree with attention_mask {attention_mask.tolist()}"


def test_padding_mask_rejects_a_mask_that_is_not_batch_by_length():
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, seq_len\), got \(5,\)"):
        padding_mask(torch.ones(5))


@given(T=st.integers(1, 10))
def test_causal_mask_is_the_lower_triangle(T):
    m = causal_mask(T)
    expected = torch.tril(torch.ones(T, T, dtype=torch.bool))
    assert m.shape == (1, 1, T, T), f"causal_mask shape {tuple(m.shape)}, expected {(1, 1, T, T)}"
    assert torch.equal(m[0, 0], expected), f"causal_mask({T}) =\n{m[0, 0].int()}\nexpected\n{expected.int()}"


@given(T_k=st.integers(1, 10), data=st.data())
def test_causal_mask_with_fewer_queries_is_the_last_rows_of_the_full_triangle(T_k, data):
    """With a KV cache the T_q new queries are the last T_q positions: row i sees keys <= i + T_k - T_q."""
    T_q = data.draw(st.integers(1, T_k), label="T_q")
    m = causal_mask(T_q, T_k)
    expected = torch.tril(torch.ones(T_k, T_k, dtype=torch.bool))[T_k - T_q:]
    assert m.shape == (1, 1, T_q, T_k), f"shape {tuple(m.shape)}, expected {(1, 1, T_q, T_k)}"
    assert torch.equal(m[0, 0], expected), f"causal_mask({T_q}, {T_k}) =\n{m[0, 0].int()}\nexpected\n{expected.int()}"


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match=r"k_len \(2\) must be >= q_len \(3\)"):
        causal_mask(3, 2)


@given(seed=seeds, B=small, T=small)
def test_combine_masks_is_logical_and_with_broadcasting(seed, B, T):
    pad, causal = padding_mask(random_attention_mask(seed, B, T)), causal_mask(T)
    both = combine_masks(pad, None, causal)
    assert both.shape == (B, 1, T, T), f"combined shape {tuple(both.shape)}, expected {(B, 1, T, T)}"
    for b in range(B):
        for i in range(T):
            for j in range(T):
                expected = bool(pad[b, 0, 0, j]) and j <= i
                assert bool(both[b, 0, i, j]) == expected, f"combined[{b}, 0, {i}, {j}] = {bool(both[b, 0, i, j])}"
    assert combine_masks(None, None) is None, "combining no masks must give None (no constraint)"
    assert combine_masks(pad) is pad, "combining one mask must return it unchanged"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_additive_mask_is_zero_where_allowed_and_most_negative_finite_where_blocked(dtype):
    mask = torch.tensor([[True, False, True], [False, False, True]])
    m = additive_mask(mask, dtype)
    lowest = torch.finfo(dtype).min
    assert m.dtype == dtype, f"additive mask dtype {m.dtype}, expected {dtype}"
    assert mask_value(dtype) == lowest, f"mask_value({dtype}) = {mask_value(dtype)}, expected {lowest}"
    assert torch.isfinite(m).all(), f"additive mask has non-finite entries: {m}"
    assert (m[mask] == 0).all() and (m[~mask] == lowest).all(), f"additive mask {m.tolist()} for {mask.tolist()}"


@given(seed=seeds, B=small, T=small)
def test_additive_mask_added_to_scores_gives_the_same_attention_as_the_bool_mask(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, 2, T, 3, generator=g, dtype=torch.float64) for _ in range(3))
    mask = padding_mask(random_attention_mask(seed, B, T))
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    oracle = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(mask, torch.float64))
    rows = mask.any(-1).squeeze(-1).squeeze(-1)  # (B,): sequences with at least one token
    err = (ours[rows] - oracle[rows]).abs().max().item() if rows.any() else 0.0
    assert err <= 1e-10, f"bool mask vs additive mask attention differ by {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_fully_blocked_row_gives_finite_outputs_never_nan(dtype):
    q, k, v = (torch.randn(2, 2, 4, 8).to(dtype) for _ in range(3))
    mask = causal_mask(4).repeat(2, 1, 1, 1)
    mask[:, :, 0] = False  # query 0 may see nothing
    mask[1] = False  # the whole second sequence is padding
    out, w = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(w).all(), f"eager path, {dtype}: non-finite output {out[:, :, 0]}"
    uniform = v.float().mean(dim=2)  # a fully blocked row averages all values
    err = (out[:, :, 0].float() - uniform).abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert err <= tol, f"eager path, {dtype}: blocked row is not the uniform average ({err:.2e})"
    fused = sdpa_attention(q, k, v, mask)
    assert torch.isfinite(fused).all(), f"sdpa path, {dtype}: non-finite output on a fully blocked row"
    for impl in ("eager", "sdpa"):
        mha = set_attn_implementation(MultiHeadAttention(16, 2), impl).to(dtype)
        context, _ = mha(torch.randn(2, 4, 16).to(dtype), mask=mask)
        assert torch.isfinite(context).all(), f"MultiHeadAttention({impl}), {dtype}: non-finite output"


# ---------------------------------------------------------------- MLM masking

MASK_ID, VOCAB = 3, 1000
ORIGINAL_IDS = (10, 100)  # the ids of the text
RANDOM_IDS = torch.arange(100, VOCAB)  # the random branch draws from here: disjoint from the text


def text_batch(seed, B, T):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(*ORIGINAL_IDS, (B, T), generator=g)
    special = torch.rand(B, T, generator=g) < 0.2
    return input_ids, special


@given(seed=seeds, B=small, T=st.integers(1, 30), p=st.floats(0.0, 1.0))
def test_mlm_labels_are_the_original_ids_exactly_at_selected_positions(seed, B, T, p):
    input_ids, special = text_batch(seed, B, T)
    g = torch.Generator().manual_seed(seed)
    inputs, labels = mlm_mask_tokens(input_ids, MASK_ID, VOCAB, special, p, RANDOM_IDS, generator=g)
    selected = labels != -100
    assert not (selected & special).any(), f"special positions selected: {(selected & special).nonzero().tolist()}"
    assert torch.equal(labels[selected], input_ids[selected]), "labels inside I differ from the original ids"
    assert (labels[~selected] == -100).all(), "labels outside I must be exactly -100"
    assert torch.equal(inputs[~selected], input_ids[~selected]), "a position outside I was corrupted"
    corrupted = inputs[selected]
    allowed = (corrupted == MASK_ID) | (corrupted == input_ids[selected]) | torch.isin(corrupted, RANDOM_IDS)
    assert allowed.all(), f"selected positions hold ids {corrupted[~allowed].tolist()}: not [MASK], original or random"
    assert inputs.shape == labels.shape == input_ids.shape, f"shapes {inputs.shape}, {labels.shape}"
    assert torch.equal(input_ids, text_batch(seed, B, T)[0]), "mlm_mask_tokens modified its input in place"


def test_mlm_split_is_80_10_10_within_binomial_noise():
    """Each fraction f is checked against |observed - f| <= 5 sqrt(f (1 - f) / n)."""
    input_ids, special = text_batch(0, 200, 500)
    p = 0.3
    g = torch.Generator().manual_seed(1234)
    inputs, labels = mlm_mask_tokens(input_ids, MASK_ID, VOCAB, special, p, RANDOM_IDS, generator=g)
    selected = labels != -100
    n_candidates = int((~special).sum())
    n = int(selected.sum())
    fractions = {"selected": (n / n_candidates, p, n_candidates)}
    corrupted, original = inputs[selected], input_ids[selected]
    fractions["[MASK]"] = ((corrupted == MASK_ID).float().mean().item(), 0.8, n)
    fractions["random"] = (torch.isin(corrupted, RANDOM_IDS).float().mean().item(), 0.1, n)
    fractions["unchanged"] = ((corrupted == original).float().mean().item(), 0.1, n)
    report = ", ".join(f"{k} {obs:.4f} (expected {f})" for k, (obs, f, _) in fractions.items())
    for name, (observed, expected, count) in fractions.items():
        sigma = math.sqrt(expected * (1 - expected) / count)
        assert abs(observed - expected) <= 5 * sigma, f"{name}: off by {abs(observed - expected) / sigma:.1f} sigma; {report}"
    total = sum(fractions[k][0] for k in ("[MASK]", "random", "unchanged"))
    assert abs(total - 1) < 1e-6, f"the three branches cover {total:.6f} of I, expected all of it; {report}"


def test_mlm_random_tokens_come_only_from_random_token_ids_and_cover_them():
    input_ids, _ = text_batch(0, 200, 500)
    inputs, labels = mlm_mask_tokens(input_ids, MASK_ID, VOCAB, None, 0.5, RANDOM_IDS[::2],
                                     generator=torch.Generator().manual_seed(0))
    selected = labels != -100
    replaced = inputs[selected & (inputs != MASK_ID) & (inputs != input_ids)]
    outside = replaced[~torch.isin(replaced, RANDOM_IDS[::2])]
    assert outside.numel() == 0, f"random tokens outside random_token_ids: {outside[:10].tolist()}"
    coverage = torch.unique(replaced).numel() / RANDOM_IDS[::2].numel()
    assert coverage > 0.9, f"only {coverage:.0%} of random_token_ids ever drawn from {replaced.numel()} draws"

    default_inputs, _ = mlm_mask_tokens(input_ids, MASK_ID, 50, None, 0.5, generator=torch.Generator().manual_seed(0))
    changed = default_inputs[(default_inputs != input_ids) & (default_inputs != MASK_ID)]
    assert changed.numel() > 0 and changed.max() < 50, f"default draws exceed vocab_size 50: max {changed.max()}"


def test_mlm_probability_zero_selects_nothing_and_one_selects_every_non_special_position():
    input_ids, special = text_batch(0, 8, 40)
    inputs, labels = mlm_mask_tokens(input_ids, MASK_ID, VOCAB, special, 0.0, RANDOM_IDS)
    assert (labels == -100).all(), f"p=0 selected {(labels != -100).sum()} positions"
    assert torch.equal(inputs, input_ids), "p=0 changed the input"
    _, labels = mlm_mask_tokens(input_ids, MASK_ID, VOCAB, special, 1.0, RANDOM_IDS)
    selected = labels != -100
    assert torch.equal(selected, ~special), f"p=1 selected {int(selected.sum())} of {int((~special).sum())} non-special positions"
    with pytest.raises(ValueError, match=r"mlm_probability must be in \[0, 1\], got 1.5"):
        mlm_mask_tokens(input_ids, MASK_ID, VOCAB, mlm_probability=1.5)


def test_mlm_masking_with_a_seeded_generator_is_deterministic():
    input_ids, special = text_batch(0, 16, 64)

    def run(seed):
        return mlm_mask_tokens(input_ids, MASK_ID, VOCAB, special, 0.15, RANDOM_IDS,
                               generator=torch.Generator().manual_seed(seed))

    (a, la), (b, lb), (c, lc) = run(7), run(7), run(8)
    assert torch.equal(a, b) and torch.equal(la, lb), "same seed, different masking"
    assert not torch.equal(la, lc), "different seeds gave the same selection"
