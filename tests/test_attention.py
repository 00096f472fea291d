"""Properties of scaled dot-product attention, multi-head attention and the KV cache.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V,   M = 0 (allowed) or very negative.

The oracle is PyTorch's fused `F.scaled_dot_product_attention`; the rest are properties any
correct attention has (rows sum to 1, blocked keys get no weight, causality, equivariance).
"""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from common.nn.attention import (ATTENTION_FUNCTIONS, KVCache, MultiHeadAttention, scaled_dot_product_attention,
                                  sdpa_attention, set_attn_implementation)
from common.nn.masks import causal_mask, combine_masks, padding_mask

seeds = st.integers(0, 2**31 - 1)
small = st.integers(1, 5)
float_dtypes = st.sampled_from([torch.float32, torch.float64])
MASK_SHAPES = ("key_padding", "per_query", "per_head")

# Implementations that are a graded exercise of their own are checked against eager in their own file,
# so that the attention and kv_cache exercises never depend on a later one (tests/test_ladder.py).
GRADED_ELSEWHERE = {"flash": "tests/test_flash_attention.py (exercise online_softmax)"}


def qkv(seed, B, H, T_q, T_k, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T_q, d, generator=g, dtype=dtype)
    k = torch.randn(B, H, T_k, d, generator=g, dtype=dtype)
    v = torch.randn(B, H, T_k, d, generator=g, dtype=dtype)
    return q, k, v


def random_mask(seed, B, H, T_q, T_k, shape="per_head", keep=0.6):
    """A random bool mask broadcastable to (B, H, T_q, T_k); rows may be fully blocked."""
    g = torch.Generator().manual_seed(seed + 1)
    size = {"key_padding": (B, 1, 1, T_k), "per_query": (B, 1, T_q, T_k), "per_head": (B, H, T_q, T_k)}
    return torch.rand(size[shape], generator=g) < keep


def right_padding(seed, B, T):
    """attention_mask (B, T) with 1 for the first length_b tokens (length_b >= 1), 0 after."""
    g = torch.Generator().manual_seed(seed + 2)
    lengths = torch.randint(1, T + 1, (B, 1), generator=g)
    return (torch.arange(T)[None, :] < lengths).long()


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


# ---------------------------------------------------------------- the softmax weights


@given(seed=seeds, B=small, H=small, T_q=small, T_k=small, d=small, dtype=float_dtypes,
       shape=st.sampled_from(MASK_SHAPES))
def test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero(seed, B, H, T_q, T_k, d, dtype, shape):
    q, k, v = qkv(seed, B, H, T_q, T_k, d, dtype)
    mask = random_mask(seed, B, H, T_q, T_k, shape)
    _, w = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    row_sums = w.double().sum(-1)
    err = (row_sums - 1).abs().max().item()
    assert err <= 1e-6, f"attention rows sum to 1 +- {err:.2e} (tolerance 1e-6)"
    blocked = (~mask).expand_as(w) & mask.any(-1, keepdim=True).expand_as(w)
    leaked = w[blocked].abs().max().item() if blocked.any() else 0.0
    assert leaked == 0.0, f"a blocked key got weight {leaked:.3e}; it must be exactly 0"


@given(seed=seeds, B=small, H=small, T_q=small, T_k=small, d=small, shape=st.sampled_from(MASK_SHAPES))
def test_changing_blocked_keys_and_values_never_changes_the_output(seed, B, H, T_q, T_k, d, shape):
    """Change the keys and values at a random set S of positions: every query row that is
    blocked from all of S (and may see some key) keeps exactly its output."""
    q, k, v = qkv(seed, B, H, T_q, T_k, d)
    mask = random_mask(seed, B, H, T_q, T_k, shape).expand(B, H, T_q, T_k)
    g = torch.Generator().manual_seed(seed + 3)
    changed = torch.rand(B, H, T_k, 1, generator=g) < 0.5  # the set S
    k2 = torch.where(changed, 100 * torch.randn(k.shape, generator=g, dtype=k.dtype), k)
    v2 = torch.where(changed, 100 * torch.randn(v.shape, generator=g, dtype=v.dtype), v)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    out2, _ = scaled_dot_product_attention(q, k2, v2, mask)
    sees_changed = (mask & changed.transpose(-2, -1)).any(-1)  # (B, H, T_q)
    untouched = ~sees_changed & mask.any(-1)
    err = max_diff(out[untouched], out2[untouched])
    assert err <= 1e-12, (f"changing blocked keys/values moved the output of "
                          f"{int(untouched.sum())} untouched rows by {err:.2e}")


# ---------------------------------------------------------------- the fused-kernel oracle


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "both"])
@given(seed=seeds, B=small, H=small, T=st.integers(1, 7), d=small, dtype=float_dtypes)
def test_hand_written_attention_equals_torch_sdpa(mask_kind, seed, B, H, T, d, dtype):
    q, k, v = qkv(seed, B, H, T, T, d, dtype)
    pad = padding_mask(right_padding(seed, B, T))
    causal = causal_mask(T)
    mask = {"none": None, "padding": pad, "causal": causal, "both": combine_masks(pad, causal)}[mask_kind]
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    oracle = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    err = max_diff(ours, oracle)
    assert err <= tol, f"{mask_kind} mask, {dtype}: differs from F.scaled_dot_product_attention by {err:.2e} (tolerance {tol:.0e})"


@given(seed=seeds, B=small, H=st.integers(1, 4), T_q=small, T_k=small, dtype=float_dtypes,
       shape=st.sampled_from(MASK_SHAPES), output_projection=st.booleans(),
       impl=st.sampled_from([name for name in ATTENTION_FUNCTIONS if name not in ("eager", *GRADED_ELSEWHERE)]))
def test_multi_head_attention_every_registered_implementation_gives_eager_numbers(seed, B, H, T_q, T_k, dtype, shape,
                                                                                 output_projection, impl):
    """Every entry of the registry (sdpa, and any added later) against the hand-written path; also on
    fully blocked rows: every path gives the uniform average of the values there."""
    C = 2 * H
    torch.manual_seed(seed)
    eager = MultiHeadAttention(C, H, output_projection=output_projection).to(dtype)
    sdpa = set_attn_implementation(MultiHeadAttention(C, H, output_projection=output_projection).to(dtype), impl)
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(B, T_q, C, dtype=dtype)
    y = torch.randn(B, T_k, C, dtype=dtype)
    mask = random_mask(seed, B, H, T_q, T_k, shape)
    a, _ = eager(x, key_value_states=y, mask=mask)
    b, _ = sdpa(x, key_value_states=y, mask=mask)
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    err = max_diff(a, b)
    assert err <= tol, f"eager vs {impl} differ by {err:.2e} (tolerance {tol:.0e}), {dtype}, mask {shape}"


# ---------------------------------------------------------------- multi-head structure


@given(seed=seeds, B=small, H=st.integers(1, 4), T=st.integers(1, 7), use_mask=st.booleans())
def test_self_attention_without_positions_is_permutation_equivariant(seed, B, H, T, use_mask):
    """MHA(P x) = P MHA(x): attention sees a set, order comes only from position embeddings."""
    C = 2 * H
    torch.manual_seed(seed)
    mha = MultiHeadAttention(C, H, output_projection=True).double()
    x = torch.randn(B, T, C, dtype=torch.float64)
    attention_mask = right_padding(seed, B, T)
    perm = torch.randperm(T)
    mask = padding_mask(attention_mask) if use_mask else None
    mask_perm = padding_mask(attention_mask[:, perm]) if use_mask else None
    out, _ = mha(x, mask=mask)
    out_perm, _ = mha(x[:, perm], mask=mask_perm)
    err = max_diff(out_perm, out[:, perm])
    assert err <= 1e-12, f"MHA(permuted x) differs from permuted MHA(x) by {err:.2e}, permutation {perm.tolist()}"


@given(seed=seeds, B=small, H=st.integers(1, 4), T=st.integers(2, 8), data=st.data(),
       attn_impl=st.sampled_from(["eager", "sdpa"]))
def test_with_a_causal_mask_a_later_token_never_changes_earlier_outputs(seed, B, H, T, data, attn_impl):
    t = data.draw(st.integers(0, T - 2), label="t")
    later = data.draw(st.integers(t + 1, T - 1), label="t + k")
    C = 2 * H
    torch.manual_seed(seed)
    mha = set_attn_implementation(MultiHeadAttention(C, H, output_projection=True).double(), attn_impl)
    x = torch.randn(B, T, C, dtype=torch.float64)
    x2 = x.clone()
    x2[:, later] = 10 * torch.randn(B, C, dtype=torch.float64)
    out, _ = mha(x, mask=causal_mask(T))
    out2, _ = mha(x2, mask=causal_mask(T))
    err = max_diff(out[:, : t + 1], out2[:, : t + 1])
    assert err <= 1e-12, f"changing token {later} moved outputs at positions <= {t} by {err:.2e}"
    moved = max_diff(out[:, later], out2[:, later])
    assert moved > 1e-6, f"changing token {later} did not change its own output ({moved:.2e}): test is vacuous"


@given(seed=seeds, B=small, H=st.integers(1, 4), T_q=small, T_k=small)
def test_need_weights_and_cross_attention_shapes(seed, B, H, T_q, T_k):
    C, d = 3 * H, 3
    q, k, v = qkv(seed, B, H, T_q, T_k, d)
    out, w = scaled_dot_product_attention(q, k, v, need_weights=True)
    assert out.shape == (B, H, T_q, d), f"output shape {tuple(out.shape)}, expected {(B, H, T_q, d)}"
    assert w.shape == (B, H, T_q, T_k), f"weights shape {tuple(w.shape)}, expected {(B, H, T_q, T_k)}"
    assert scaled_dot_product_attention(q, k, v)[1] is None, "weights returned without need_weights"
    for impl in ("eager", "sdpa"):
        mha = set_attn_implementation(MultiHeadAttention(C, H), impl)
        x, y = torch.randn(B, T_q, C), torch.randn(B, T_k, C)
        context, weights = mha(x, key_value_states=y, output_attentions=True)
        assert context.shape == (B, T_q, C), f"{impl}: context {tuple(context.shape)}, expected {(B, T_q, C)}"
        assert weights.shape == (B, H, T_q, T_k), f"{impl}: weights {tuple(weights.shape)}, expected {(B, H, T_q, T_k)}"
        assert mha(x, key_value_states=y)[1] is None, f"{impl}: weights returned without output_attentions"


# ---------------------------------------------------------------- dropout


def test_attention_dropout_acts_on_the_weights_and_only_in_training():
    B, H, T, C, p = 2, 2, 5, 8, 0.5
    mha = MultiHeadAttention(C, H, dropout=p)
    x = torch.randn(B, T, C)
    mha.eval()
    a, w_eval = mha(x, output_attentions=True)
    b, _ = mha(x, output_attentions=True)
    assert torch.equal(a, b), f"eval mode is not deterministic: two calls differ by {max_diff(a, b):.2e}"

    mha.train()
    c, w_train = mha(x, output_attentions=True)
    assert max_diff(a, c) > 1e-3, f"train mode with dropout {p} equals eval mode ({max_diff(a, c):.2e})"
    # each weight is either dropped (0) or kept and rescaled by 1 / (1 - p)
    dropped = w_train == 0
    kept_err = max_diff(w_train[~dropped], w_eval[~dropped] / (1 - p))
    assert dropped.any() and kept_err <= 1e-6, (
        f"{dropped.float().mean():.2f} of weights dropped; kept weights differ from w / (1 - p) by {kept_err:.2e}")

    q, k, v = qkv(0, B, H, T, T, 4)
    same = scaled_dot_product_attention(q, k, v, dropout_p=0.9, training=False)[0]
    plain = scaled_dot_product_attention(q, k, v)[0]
    assert torch.equal(same, plain), "dropout_p applied although training=False"

    no_dropout = MultiHeadAttention(C, H, dropout=0.0).train()
    no_dropout.load_state_dict(mha.state_dict())
    d, _ = no_dropout(x)
    assert torch.equal(a, d), f"train mode with p=0 differs from eval by {max_diff(a, d):.2e}"


# ---------------------------------------------------------------- KV cache


@given(seed=seeds, B=small, H=st.integers(1, 3), T=st.integers(1, 8), data=st.data(),
       attn_impl=st.sampled_from(["eager", "sdpa"]))
def test_incremental_attention_with_kv_cache_equals_full_causal_attention(seed, B, H, T, data, attn_impl):
    """Prefill a prompt of n tokens, then feed the rest one token at a time."""
    n = data.draw(st.integers(1, T), label="prompt length")
    C = 2 * H
    torch.manual_seed(seed)
    mha = set_attn_implementation(MultiHeadAttention(C, H, output_projection=True).double(), attn_impl).eval()
    x = torch.randn(B, T, C, dtype=torch.float64)
    full, _ = mha(x, mask=causal_mask(T))
    cache = KVCache(B, H, max_length=T, head_dim=C // H, dtype=torch.float64)
    pieces = [mha(x[:, :n], mask=causal_mask(n), kv_cache=cache)[0]]
    for t in range(n, T):
        pieces.append(mha(x[:, t:t + 1], mask=causal_mask(1, t + 1), kv_cache=cache)[0])
    incremental = torch.cat(pieces, dim=1)
    err = max_diff(full, incremental)
    assert err <= 1e-10, f"cached attention differs from full attention by {err:.2e} (prompt {n}, T {T})"
    assert cache.length == T, f"cache holds {cache.length} positions after {T} tokens"


def test_kv_cache_overflow_raises_a_clear_error():
    cache = KVCache(batch_size=1, num_heads=2, max_length=3, head_dim=4)
    kv = torch.randn(1, 2, 2, 4)
    cache.append(kv, kv)
    with pytest.raises(ValueError, match=r"overflow: 4 positions needed, cache holds 3") as info:
        cache.append(kv, kv)
    assert "max_length" in str(info.value), f"message does not say how to fix it: {info.value}"
    assert cache.length == 2, f"a failed append changed the cache length to {cache.length}"


def test_multi_head_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"hidden_size \(10\) must be divisible by num_heads \(4\)"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        set_attn_implementation(MultiHeadAttention(8, 2), "no-such-kernel")



# ---------------------------------------------------------------- gradients


def test_attention_gradient_matches_finite_differences():
    q, k, v = (t.requires_grad_() for t in qkv(0, 2, 2, 3, 4, 3))
    mask = combine_masks(padding_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])), causal_mask(3, 4))
    ok = torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask)[0], (q, k, v))
    assert ok, "gradcheck failed"
    ok = torch.autograd.gradcheck(lambda q, k, v: sdpa_attention(q, k, v, mask), (q, k, v))
    assert ok, "gradcheck of the sdpa path failed"


def test_sdpa_attention_applies_no_dropout_at_evaluation():
    """The fused path drops attention weights only when training: at evaluation, with dropout_p
    0.5, it equals the hand-written attention exactly (up to rounding) and repeats itself."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    expected, _ = scaled_dot_product_attention(q, k, v)
    runs = [sdpa_attention(q, k, v, dropout_p=0.5, training=False) for _ in range(2)]
    err = max((r - expected).abs().max().item() for r in runs)
    assert err <= 1e-12, f"sdpa at evaluation with dropout_p=0.5 differs from no dropout by {err:.2e}"
