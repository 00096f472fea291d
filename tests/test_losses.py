"""The losses, checked against torch's own and against the formulas' properties.

    CE(z, y) = -log softmax(z)_y         L_MLM = sum_{i in I} CE_i        L = alpha L_MLM + beta L_NSP
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from common.nn.losses import (binary_cross_entropy_with_logits, causal_lm_loss, classification_loss,
                           cross_entropy, infer_problem_type, log_softmax, mlm_loss, nsp_loss,
                           pretraining_loss)

seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])
coefficients = st.floats(-3.0, 3.0, allow_nan=False)


def logits_and_labels(seed, shape, V, dtype=torch.float64, ignored=0.3):
    """Random logits (*shape, V) and labels (*shape) with about `ignored` of them set to -100."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(*shape, V, generator=g, dtype=dtype)
    labels = torch.randint(0, V, shape, generator=g)
    labels[torch.rand(shape, generator=g) < ignored] = -100
    return logits, labels


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def close(ours, oracle, dtype):
    """Within 1e-10 (float64) or 1e-5 (float32), relative to the size of the value."""
    tol = (1e-10 if dtype == torch.float64 else 1e-5) * max(1.0, oracle.abs().max().item())
    return max_diff(ours, oracle), tol


# ---------------------------------------------------------------- log-softmax and cross-entropy


@given(seed=seeds, N=st.integers(1, 6), V=st.integers(1, 12), dtype=float_dtypes, dim=st.sampled_from([0, -1]))
def test_log_softmax_equals_torch(seed, N, V, dtype, dim):
    z = 5 * torch.randn(N, V, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    err, tol = close(log_softmax(z, dim=dim), torch.log_softmax(z, dim=dim), dtype)
    assert err <= tol, f"log_softmax differs from torch.log_softmax by {err:.2e} (tolerance {tol:.0e}), dim {dim}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_softmax_is_stable_for_huge_logits(dtype):
    z = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4 + 1, -1e4 - 1]], dtype=dtype)
    ours = log_softmax(z)
    assert torch.isfinite(ours).all(), f"log_softmax of +-1e4 logits gave {ours.tolist()}"
    err = max_diff(ours, torch.log_softmax(z, dim=-1))
    assert err <= 1e-5, f"log_softmax of huge logits differs from torch by {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_is_finite_for_huge_logits(dtype):
    z = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4 + 1, -1e4 - 1]], dtype=dtype)
    ce = cross_entropy(z, torch.tensor([2, 0, 1]), reduction="none")
    assert torch.isfinite(ce).all(), f"cross-entropy of huge logits gave {ce.tolist()}"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(seed=seeds, N=st.integers(1, 10), V=st.integers(1, 12), dtype=float_dtypes)
def test_cross_entropy_equals_torch_with_ignored_positions(reduction, seed, N, V, dtype):
    logits, labels = logits_and_labels(seed, (N,), V, dtype)
    ours = cross_entropy(logits, labels, reduction=reduction)
    if reduction == "mean" and (labels == -100).all():
        assert ours.item() == 0.0, f"mean over no kept position should be 0, got {ours.item()}"
        return
    oracle = F.cross_entropy(logits, labels, ignore_index=-100, reduction=reduction)
    err, tol = close(ours, oracle, dtype)
    assert err <= tol, f"cross_entropy ({reduction}) differs from F.cross_entropy by {err:.2e} (tolerance {tol:.0e})"


def test_cross_entropy_mean_over_no_kept_row_is_zero_not_nan():
    """'mean' divides by the kept rows, at least 1: a batch whose targets are all -100 gives 0,
    with finite gradients (0 / 0 would give NaN and poison the weights)."""
    logits = torch.randn(4, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.full((4,), -100), reduction="mean")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all(), (
        f"mean over no kept row gave {loss.item()}, gradient finite: {bool(torch.isfinite(logits.grad).all())}")


def test_cross_entropy_rejects_an_unknown_reduction():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), reduction="avg")


# ---------------------------------------------------------------- L_MLM


@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 8), V=st.integers(2, 12))
def test_mlm_loss_ignores_the_logits_of_unmasked_positions(seed, B, T, V):
    logits, labels = logits_and_labels(seed, (B, T), V, ignored=0.6)
    unmasked = labels == -100
    changed = logits.clone()
    changed[unmasked] = 100 * torch.randn(int(unmasked.sum()), V, dtype=torch.float64)
    for reduction in ("sum", "mean"):
        a, b = mlm_loss(logits, labels, reduction), mlm_loss(changed, labels, reduction)
        assert abs(a - b).item() <= 1e-12, f"{reduction}: changing unmasked logits moved L_MLM from {a:.6f} to {b:.6f}"
    logits.requires_grad_()
    mlm_loss(logits, labels, "sum").backward()
    leak = logits.grad[unmasked].abs().max().item() if unmasked.any() else 0.0
    assert leak == 0.0, f"unmasked positions receive gradient {leak:.2e}"


@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 8), V=st.integers(2, 12))
def test_mlm_loss_is_unchanged_by_adding_a_constant_to_a_row(seed, B, T, V):
    logits, labels = logits_and_labels(seed, (B, T), V)
    shift = 50 * torch.randn(B, T, 1, dtype=torch.float64)
    a, b = mlm_loss(logits, labels, "sum"), mlm_loss(logits + shift, labels, "sum")
    assert abs(a - b).item() <= 1e-10 * max(1.0, a.item()), f"softmax shift changed L_MLM from {a:.12f} to {b:.12f}"


@given(B=st.integers(1, 3), T=st.integers(1, 8), V=st.integers(1, 50), seed=seeds)
def test_mlm_loss_of_uniform_logits_is_log_V_per_masked_token(B, T, V, seed):
    _, labels = logits_and_labels(seed, (B, T), V)
    n_masked = int((labels != -100).sum())
    uniform = torch.full((B, T, V), 0.7, dtype=torch.float64)
    total, mean = mlm_loss(uniform, labels, "sum").item(), mlm_loss(uniform, labels, "mean").item()
    expected_mean = math.log(V) if n_masked else 0.0
    assert abs(total - n_masked * math.log(V)) <= 1e-9, f"sum {total:.9f}, expected |I| log V = {n_masked} * log {V}"
    assert abs(mean - expected_mean) <= 1e-12, f"mean {mean:.12f}, expected log V = {expected_mean:.12f}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mlm_loss_with_no_masked_position_is_zero_not_nan(reduction):
    logits = torch.randn(2, 5, 7, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 5), -100), reduction)
    assert loss.item() == 0.0, f"L_MLM over an empty I is {loss.item()}, expected 0"
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all(), "an empty I must give zero, finite gradients"


@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 8), V=st.integers(2, 12))
def test_mlm_loss_equals_torch_cross_entropy_on_the_flattened_batch(seed, B, T, V):
    logits, labels = logits_and_labels(seed, (B, T), V, ignored=0.5)
    labels[0, 0] = 1  # at least one masked position, so torch's mean is defined
    for reduction in ("sum", "mean"):
        oracle = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction=reduction)
        err, tol = close(mlm_loss(logits, labels, reduction), oracle, torch.float64)
        assert err <= tol, f"L_MLM ({reduction}) differs from F.cross_entropy by {err:.2e}"


# ---------------------------------------------------------------- L_NSP and L = alpha L_MLM + beta L_NSP


@given(seed=seeds, B=st.integers(1, 8))
def test_nsp_loss_equals_torch_cross_entropy_on_two_classes(seed, B):
    logits, labels = logits_and_labels(seed, (B,), 2, ignored=0.0)
    err, tol = close(nsp_loss(logits, labels), F.cross_entropy(logits, labels), torch.float64)
    assert err <= tol, f"L_NSP differs from F.cross_entropy by {err:.2e}"


@given(seed=seeds, alpha=coefficients, beta=coefficients)
def test_pretraining_loss_is_linear_in_alpha_and_beta_in_value_and_gradient(seed, alpha, beta):
    mlm_logits, labels = logits_and_labels(seed, (2, 6), 9)
    labels[0, 0] = 4
    nsp_logits, nsp_labels = logits_and_labels(seed + 1, (2,), 2, ignored=0.0)
    mlm_logits.requires_grad_()
    nsp_logits.requires_grad_()

    def value_and_grads(loss):
        grads = torch.autograd.grad(loss, (mlm_logits, nsp_logits), allow_unused=True)
        return loss.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (mlm_logits, nsp_logits))]

    L, grads = value_and_grads(pretraining_loss(mlm_logits, labels, nsp_logits, nsp_labels, alpha, beta))
    L_mlm, grads_mlm = value_and_grads(mlm_loss(mlm_logits, labels))
    L_nsp, grads_nsp = value_and_grads(nsp_loss(nsp_logits, nsp_labels))
    expected = alpha * L_mlm + beta * L_nsp
    assert abs(L - expected).item() <= 1e-12, f"L = {L:.12f}, alpha L_MLM + beta L_NSP = {expected:.12f}"
    for name, g, gm, gn in zip(("MLM logits", "NSP logits"), grads, grads_mlm, grads_nsp):
        err = max_diff(g, alpha * gm + beta * gn)
        assert err <= 1e-12, f"gradient wrt {name} differs from alpha dL_MLM + beta dL_NSP by {err:.2e}"


# ---------------------------------------------------------------- causal LM


@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 8), V=st.integers(2, 12))
def test_causal_lm_loss_equals_the_manual_shift_with_torch_cross_entropy(seed, B, T, V):
    logits, labels = logits_and_labels(seed, (B, T), V, ignored=0.0)
    lengths = torch.randint(1, T + 1, (B, 1), generator=torch.Generator().manual_seed(seed))
    labels[torch.arange(T)[None, :] >= lengths] = -100  # right padding
    scored = int((labels[:, 1:] != -100).sum())
    for reduction in ("sum", "mean"):
        ours = causal_lm_loss(logits, labels, reduction)
        if scored == 0:
            assert ours.item() == 0.0, f"no scored token, but loss {ours.item()}"
            continue
        oracle = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction=reduction)
        err, tol = close(ours, oracle, torch.float64)
        assert err <= tol, f"causal_lm_loss ({reduction}) differs from shift + F.cross_entropy by {err:.2e}"


def test_causal_lm_loss_on_fully_masked_labels_is_zero_with_finite_gradients():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    loss = causal_lm_loss(logits, torch.full((2, 5), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all(), f"loss {loss.item()}, gradient finite: {torch.isfinite(logits.grad).all()}"
    one_token = causal_lm_loss(torch.randn(2, 1, 11), torch.ones(2, 1, dtype=torch.long))
    assert one_token.item() == 0.0, f"a length-1 sequence has nothing to predict, loss {one_token.item()}"


# ---------------------------------------------------------------- classification


@given(seed=seeds, B=st.integers(1, 6), K=st.integers(2, 5))
def test_classification_loss_picks_the_problem_type_like_transformers(seed, B, K):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, K, generator=g, dtype=torch.float64)
    regression_logits, targets = torch.randn(B, 1, generator=g, dtype=torch.float64), torch.randn(B, generator=g, dtype=torch.float64)
    classes = torch.randint(0, K, (B,), generator=g)
    multi_hot = (torch.rand(B, K, generator=g) < 0.5).double()
    cases = [
        ("regression", classification_loss(regression_logits, targets, 1), F.mse_loss(regression_logits.squeeze(-1), targets)),
        ("single_label_classification", classification_loss(scores, classes, K), F.cross_entropy(scores, classes)),
        ("multi_label_classification", classification_loss(scores, multi_hot, K),
         F.binary_cross_entropy_with_logits(scores, multi_hot)),
        ("regression (explicit, K outputs)", classification_loss(scores, multi_hot, K, problem_type="regression"),
         F.mse_loss(scores, multi_hot)),
    ]
    for name, ours, oracle in cases:
        err, tol = close(ours, oracle, torch.float64)
        assert err <= tol, f"{name}: {ours.item():.10f} vs torch {oracle.item():.10f} ({err:.2e})"
    inferred = [infer_problem_type(1, targets), infer_problem_type(K, classes), infer_problem_type(K, multi_hot)]
    assert inferred == ["regression", "single_label_classification", "multi_label_classification"], f"inferred {inferred}"


def test_classification_loss_rejects_an_unknown_problem_type():
    with pytest.raises(ValueError, match="unknown problem_type 'ranking'") as info:
        classification_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 3, problem_type="ranking")
    for name in ("regression", "single_label_classification", "multi_label_classification"):
        assert name in str(info.value), f"the message does not name {name!r}: {info.value}"


def test_binary_cross_entropy_with_logits_is_stable_for_huge_logits():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 30.0]])
    y = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    ours, oracle = binary_cross_entropy_with_logits(z, y), F.binary_cross_entropy_with_logits(z, y)
    assert torch.isfinite(ours), f"BCE of +-1e4 logits is {ours.item()}"
    assert abs(ours - oracle).item() <= 1e-5 * oracle.item(), f"BCE {ours.item():.6f} vs torch {oracle.item():.6f}"


# ---------------------------------------------------------------- gradients


def test_cross_entropy_and_log_softmax_gradients_match_finite_differences():
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, -100, 1, 2])
    for reduction in ("mean", "sum", "none"):
        ok = torch.autograd.gradcheck(lambda z: cross_entropy(z, labels, reduction=reduction), (logits,))
        assert ok, f"gradcheck of cross_entropy ({reduction}) failed"
    assert torch.autograd.gradcheck(lambda z: log_softmax(z, dim=-1), (logits,)), "gradcheck of log_softmax failed"
    assert torch.autograd.gradcheck(lambda z: log_softmax(z, dim=0), (logits,)), "gradcheck of log_softmax (dim 0) failed"


@pytest.mark.parametrize("bad_label", [5, 7, -3])
def test_cross_entropy_label_outside_the_classes_is_a_data_error_naming_it(bad_label):
    """A label >= V (or negative, other than -100) would index past the logits: a DataError naming
    the label and the class count, not a cryptic gather error."""
    from common.errors import DataError
    with pytest.raises(DataError, match=rf"label {bad_label} is outside the 5 classes"):
        cross_entropy(torch.randn(3, 5), torch.tensor([0, bad_label, -100]))
