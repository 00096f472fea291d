"""FlashAttention's tiled online softmax (common/nn/flash_attention.py) against the textbook path.

    O = softmax(Q K^T * scale + bias + M) V,   computed block by block with running (m, l, acc)

The oracle is common.nn.attention.scaled_dot_product_attention: outputs and the gradients of
Q, K, V and the bias agree to 1e-5 (float32) / 1e-10 (float64) for every mask the models build
(padding, causal, per query, per head, rows blocked everywhere), any block size, bias and scale.
The test_online_softmax_* tests grade the exercise (online_softmax_update).
"""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from common.nn.attention import MultiHeadAttention, scaled_dot_product_attention, set_attn_implementation
from common.nn.flash_attention import _FlashAttention, flash_attention, online_softmax_update
from common.nn.masks import causal_mask, combine_masks, padding_mask

seeds = st.integers(0, 2**31 - 1)
MASKS = ("none", "padding", "causal", "padding_causal", "per_query", "per_head")


def tensors(seed, B, H, T_q, T_k, d, dtype):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, d, generator=g, dtype=dtype)
    k = torch.randn(B, H, T_k, d, generator=g, dtype=dtype)
    v = torch.randn(B, H, T_k, d + 1, generator=g, dtype=dtype)
    bias = torch.randn(1, H, T_q, T_k, generator=g, dtype=dtype)
    return q, k, v, bias


def make_mask(kind, seed, B, H, T_q, T_k):
    """Masks as the models build them; per_query / per_head are random and block some rows fully."""
    g = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, T_k + 1, (B, 1), generator=g)
    pad = padding_mask((torch.arange(T_k)[None, :] < lengths).long())  # (B, 1, 1, T_k)
    causal = causal_mask(T_q, T_k) if T_k >= T_q else None
    return {"none": None, "padding": pad, "causal": causal, "padding_causal": combine_masks(pad, causal),
            "per_query": torch.rand(B, 1, T_q, T_k, generator=g) < 0.4,
            "per_head": torch.rand(B, H, T_q, T_k, generator=g) < 0.4}[kind]


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def outputs_and_grads(attend, q, k, v, bias, mask, scale, grad_out, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    b = None if bias is None else bias.detach().clone().requires_grad_()
    out, _ = attend(*leaves, mask, scale=scale, bias=b, **kw)
    grads = torch.autograd.grad(out, leaves + ([b] if b is not None else []), grad_out)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(seed=seeds, B=st.integers(1, 2), H=st.integers(1, 3), T_q=st.integers(1, 12),
       T_k=st.integers(1, 12), d=st.integers(1, 6), block=st.integers(1, 5),
       kind=st.sampled_from(MASKS), use_bias=st.booleans(), scale=st.sampled_from([None, 1.0, 0.3]))
def test_flash_outputs_and_gradients_equal_the_textbook_attention(dtype, seed, B, H, T_q, T_k, d, block,
                                                                   kind, use_bias, scale):
    q, k, v, bias = tensors(seed, B, H, T_q, T_k, d, dtype)
    bias = bias if use_bias else None
    mask = make_mask(kind, seed, B, H, T_q, T_k)
    grad_out = torch.randn(B, H, T_q, d + 1, dtype=dtype, generator=torch.Generator().manual_seed(seed + 3))
    ref, ref_grads = outputs_and_grads(scaled_dot_product_attention, q, k, v, bias, mask, scale, grad_out)
    out, grads = outputs_and_grads(flash_attention, q, k, v, bias, mask, scale, grad_out, block_size=block)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    err = max_diff(out, ref)
    assert err <= tol, f"output differs from the textbook attention by {err:.2e} (tol {tol:.0e}), mask {kind}, block {block}"
    for name, g, r in zip(("dQ", "dK", "dV", "dbias"), grads, ref_grads):
        err = max_diff(g, r)
        assert err <= tol, f"{name} differs from the textbook attention's by {err:.2e} (tol {tol:.0e}), mask {kind}, block {block}"


def test_flash_gives_a_fully_blocked_row_the_uniform_average_like_the_textbook_path():
    """A row blocked everywhere: every score is mask_value, softmax is uniform, O = mean of V."""
    q, k, v, _ = tensors(0, 1, 1, 3, 6, 4, torch.float64)
    mask = torch.ones(1, 1, 3, 6, dtype=torch.bool)
    mask[0, 0, 1] = False
    out, _ = flash_attention(q, k, v, mask, block_size=2)
    err = max_diff(out[0, 0, 1], v[0, 0].mean(0))
    assert err <= 1e-12, f"fully blocked row: output differs from the mean of the values by {err:.2e}"


def test_flash_gradient_matches_finite_differences_also_with_dropout():
    """With dropout the per-block masks are replayed from the call's seed in the backward, so the
    function of (Q, K, V, bias) is fixed and gradcheck applies."""
    q, k, v, bias = (t.requires_grad_() for t in tensors(1, 1, 2, 5, 6, 3, torch.float64))
    mask = combine_masks(padding_mask(torch.tensor([[1, 1, 1, 1, 1, 0]])), causal_mask(5, 6))
    for p in (0.0, 0.3):
        ok = torch.autograd.gradcheck(
            lambda q, k, v, b: _FlashAttention.apply(q, k, v, b, mask, 0.5, p, 1234, 2), (q, k, v, bias))
        assert ok, f"gradcheck of the flash path failed (dropout_p {p})"


def test_flash_dropout_keeps_the_expected_output_and_is_off_at_evaluation():
    """E[Dropout(P)] = P: the mean over many draws approaches the output without dropout."""
    q, k, v, _ = tensors(2, 1, 1, 4, 8, 3, torch.float64)
    expected, _ = scaled_dot_product_attention(q, k, v)
    evaluation, _ = flash_attention(q, k, v, dropout_p=0.5, training=False)
    assert max_diff(evaluation, expected) <= 1e-12, "dropout applied at evaluation"
    torch.manual_seed(0)
    draws = torch.stack([flash_attention(q, k, v, dropout_p=0.5, training=True, block_size=3)[0]
                         for _ in range(2000)])
    err = max_diff(draws.mean(0), expected)
    assert draws.std(0).min() > 0, "dropout drew no randomness"
    assert err <= 0.08, f"mean of 2000 dropout draws differs from the output without dropout by {err:.3f}"


def test_flash_rejects_need_weights_and_non_bool_masks():
    q, k, v, _ = tensors(0, 1, 1, 2, 2, 2, torch.float32)
    with pytest.raises(ValueError, match="never forms the attention weights"):
        flash_attention(q, k, v, need_weights=True)
    with pytest.raises(ValueError, match="mask must be bool"):
        flash_attention(q, k, v, torch.ones(1, 1, 2, 2))


def test_flash_saves_no_T_by_T_tensor_for_the_backward():
    """What autograd keeps for the backward, counted with saved_tensors_hooks (float tensors, each
    storage once; the bool mask is the caller's either way): the textbook path keeps the (B, H, T, T)
    weights; the flash path keeps Q, K, V, O and m, l per row, O(T d)."""
    T, d = 512, 8
    q, k, v, _ = tensors(0, 1, 2, T, T, d, torch.float32)
    mask = causal_mask(T)

    def saved_bytes(attend):
        seen = {}

        def pack(t):
            if t.is_floating_point():
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            attend(*leaves, mask)[0].sum()
        return sum(seen.values())

    textbook, flash = saved_bytes(scaled_dot_product_attention), saved_bytes(flash_attention)
    assert flash * 10 <= textbook, f"flash saves {flash} bytes, the textbook path {textbook}: not 10x less"


@given(seed=seeds, B=st.integers(1, 2), T=st.integers(1, 9), causal=st.booleans())
def test_multi_head_attention_flash_gives_the_eager_numbers(seed, B, T, causal):
    torch.manual_seed(seed)
    eager = MultiHeadAttention(8, 2, output_projection=True)
    flash = set_attn_implementation(MultiHeadAttention(8, 2, output_projection=True), "flash")
    flash.load_state_dict(eager.state_dict())
    x = torch.randn(B, T, 8)
    mask = causal_mask(T) if causal else None
    a, _ = eager(x, mask=mask)
    b, _ = flash(x, mask=mask)
    assert max_diff(a, b) <= 1e-5, f"attn_impl flash differs from eager by {max_diff(a, b):.2e}"
    _, weights = flash(x, mask=mask, output_attentions=True)  # asking for weights takes the textbook path
    assert weights is not None and weights.shape == (B, 2, T, T)


# ---------------------------------------------------------------- the exercise: online_softmax_update


def fold(scores, values, splits, keep=None):
    """softmax(S) V by folding the key blocks given by `splits` one at a time."""
    m = torch.full(scores.shape[:-1] + (1,), -math.inf, dtype=scores.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(scores.shape[:-1] + (values.size(-1),), dtype=scores.dtype)
    bounds = [0] + sorted(set(splits)) + [scores.size(-1)]
    for a, b in zip(bounds, bounds[1:]):
        if b > a:
            k = None if keep is None else keep[..., a:b]
            m, l, acc = online_softmax_update(m, l, acc, scores[..., a:b], values[..., a:b, :], k)
    return m, l, acc


@given(seed=seeds, T_q=st.integers(1, 5), T_k=st.integers(1, 10),
       splits=st.lists(st.integers(1, 9), max_size=4), spread=st.sampled_from([1.0, 30.0]))
def test_online_softmax_folded_block_by_block_equals_softmax_times_values(seed, T_q, T_k, splits, spread):
    """acc / l = softmax(S) V, m = rowmax(S), l = sum exp(S - m), whatever the block boundaries;
    spread 30 makes later blocks hold a larger maximum, so every rescaling is exercised."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(T_q, T_k, generator=g, dtype=torch.float64) * spread
    values = torch.randn(T_k, 3, generator=g, dtype=torch.float64)
    m, l, acc = fold(scores, values, [s for s in splits if s < T_k])
    expected = torch.softmax(scores, -1) @ values
    err = max_diff(acc / l, expected)
    assert err <= 1e-10, f"acc / l differs from softmax(S) V by {err:.2e} (splits {splits})"
    assert max_diff(m, scores.amax(-1, keepdim=True)) == 0, "m is not the row maximum of all blocks"
    err = max_diff(l, torch.exp(scores - m).sum(-1, keepdim=True))
    assert err <= 1e-10, f"l differs from sum_j exp(S_j - m) by {err:.2e}"


def test_online_softmax_rescales_the_old_sums_when_a_larger_maximum_arrives():
    """Two blocks, the second with the larger score: exp(m - m') must shrink both l and acc."""
    scores = torch.tensor([[0.0, 1.0, 5.0, 2.0]], dtype=torch.float64)
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    m, l, acc = fold(scores, values, [2])
    p = torch.softmax(scores, -1)
    assert m.item() == 5.0, f"running maximum {m.item()}, expected 5"
    assert abs(l.item() - torch.exp(scores - 5).sum().item()) <= 1e-12, f"l = {l.item()}: old sum not rescaled"
    assert abs((acc / l).item() - (p @ values).item()) <= 1e-12, f"output {(acc / l).item()}, expected {(p @ values).item()}"


def test_online_softmax_applies_dropout_to_the_values_sum_but_not_to_the_normaliser():
    """keep = m_ij / (1 - p) multiplies the weights: O = (P * keep) V with P the undropped softmax."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 8, generator=g, dtype=torch.float64)
    values = torch.randn(8, 2, generator=g, dtype=torch.float64)
    keep = (torch.rand(3, 8, generator=g) >= 0.5).double() / 0.5
    m, l, acc = fold(scores, values, [3, 5], keep)
    expected = (torch.softmax(scores, -1) * keep) @ values
    err = max_diff(acc / l, expected)
    assert err <= 1e-10, f"with dropout, acc / l differs from (softmax(S) * keep) V by {err:.2e}"


def test_gpt_with_the_tiled_attention_gives_the_eager_loss_and_gradients():
    from minigpt.config import GPTConfig
    from minigpt.model import GPT
    torch.manual_seed(0)
    config = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=11)
    eager, flash = GPT(GPTConfig(**config)), GPT(GPTConfig(**config, attn_impl="flash"))
    flash.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 11, (2, 13))
    mask = torch.tensor([[1] * 13, [1] * 9 + [0] * 4])
    losses = [m(ids, attention_mask=mask, labels=ids).loss for m in (eager, flash)]
    for loss in losses:
        loss.backward()
    assert abs(losses[0].item() - losses[1].item()) <= 1e-6, f"losses {losses[0].item()} vs {losses[1].item()}"
    err = max(max_diff(a.grad, b.grad) for a, b in zip(eager.parameters(), flash.parameters()))
    assert err <= 1e-5, f"GPT gradients with flash attention differ from eager by {err:.2e}"


def test_bert_with_the_tiled_attention_gives_the_eager_hidden_states_with_padding():
    from minibert.config import BertConfig
    from minibert.model import BertModel
    torch.manual_seed(0)
    config = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32, vocab_size=30)
    eager, flash = BertModel(BertConfig(**config)).eval(), BertModel(BertConfig(**config, attn_impl="flash")).eval()
    flash.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 30, (2, 11))
    mask = torch.tensor([[1] * 11, [1] * 5 + [0] * 6])
    a, b = (m(ids, attention_mask=mask).last_hidden_state for m in (eager, flash))
    assert max_diff(a, b) <= 1e-5, f"BERT hidden states with flash attention differ from eager by {max_diff(a, b):.2e}"
