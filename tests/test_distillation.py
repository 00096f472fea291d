"""Distillation's loss (common/nn/distillation.py): T^2 KL(p_t || p_s) is zero for a student equal to its
teacher, positive otherwise, and its gradient keeps its size across temperatures because of the T^2."""
import math

import pytest
import torch
from hypothesis import given, strategies as st

from common.errors import ConfigError
from common.nn.distillation import (cosine_loss, distillation_loss, distillation_objective,
                                    every_other_layer)

seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds, N=st.integers(1, 6), K=st.integers(2, 12), T=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]))
def test_kl_is_zero_when_the_student_is_the_teacher(seed, N, K, T):
    z = torch.randn(N, K, generator=torch.Generator().manual_seed(seed)) * 3
    loss = distillation_loss(z.clone(), z, T)
    assert abs(float(loss)) <= 1e-6, f"student = teacher must give KL 0, got {float(loss):.3g} at T={T}"


@given(seed=seeds, N=st.integers(1, 6), K=st.integers(2, 12), T=st.sampled_from([1.0, 2.0, 4.0]))
def test_loss_is_t_squared_times_kl_of_the_softened_distributions(seed, N, K, T):
    g = torch.Generator().manual_seed(seed)
    z_s, z_t = torch.randn(N, K, generator=g) * 2, torch.randn(N, K, generator=g) * 2
    p_t, p_s = torch.softmax(z_t.double() / T, -1), torch.softmax(z_s.double() / T, -1)
    expected = T * T * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()  # KL(p_t || p_s), not KL(p_s || p_t)
    got = distillation_loss(z_s, z_t, T)
    assert float(got) >= -1e-6, "a KL divergence is never negative"
    assert math.isclose(float(got), float(expected), rel_tol=1e-4, abs_tol=1e-6), (
        f"T^2 KL(p_t || p_s) = {float(expected):.6g}, distillation_loss gave {float(got):.6g}")


def grad_norms(z_s, z_t, temperatures, loss=distillation_loss):
    norms = []
    for T in temperatures:
        z = z_s.clone().requires_grad_(True)
        loss(z, z_t, T).backward()
        norms.append(float(z.grad.norm()))
    return norms


@given(seed=seeds, K=st.integers(2, 10))
def test_t_squared_keeps_the_gradient_size_across_temperatures(seed, K):
    """Soft logits (std 0.2, 32 rows), the regime of Hinton et al.'s argument: dL/dz_s ~ (z_s - z_t) / K
    whatever T. Without T^2 the gradient at T = 8 is 64 times smaller than at T = 1."""
    g = torch.Generator().manual_seed(seed)
    z_t = torch.randn(32, K, generator=g) * 0.2
    z_s = z_t + torch.randn(32, K, generator=g) * 0.2
    norms = grad_norms(z_s, z_t, (1.0, 2.0, 4.0, 8.0))
    assert max(norms) <= 1.1 * min(norms), f"|dL/dz_s| at T = 1, 2, 4, 8: {norms}; more than 10% apart"
    plain = grad_norms(z_s, z_t, (1.0, 8.0), loss=lambda a, b, T: distillation_loss(a, b, T) / T**2)
    assert plain[0] > 30 * plain[1], f"without T^2 the gradient should shrink ~T^2: {plain}"


def test_teacher_gets_no_gradient_and_mask_selects_rows():
    z_t = torch.randn(2, 5, 7, requires_grad=True)
    z_s = torch.randn(2, 5, 7, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    loss = distillation_loss(z_s, z_t, 2.0, mask)
    loss.backward()
    assert z_t.grad is None, "the teacher is fixed: no gradient may reach its logits"
    assert z_s.grad[~mask].abs().max() == 0, "masked rows (padding) must not contribute"
    rows = distillation_loss(z_s[mask], z_t[mask], 2.0)
    assert torch.allclose(loss, rows), "the mask must average over the kept rows only"


def test_objective_weights_its_parts():
    z_s, z_t, h_s, h_t = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 6, 8), torch.randn(4, 6, 8)
    task = torch.tensor(0.7)
    loss, parts = distillation_objective(z_s, z_t, task, 2.0, alpha_ce=0.3, alpha_task=0.5, alpha_cos=0.2,
                                         student_hidden=h_s, teacher_hidden=h_t)
    expected = 0.3 * distillation_loss(z_s, z_t, 2.0) + 0.5 * task + 0.2 * cosine_loss(h_s, h_t)
    assert torch.allclose(loss, expected) and set(parts) == {"loss_kd", "loss_task", "loss_cos"}
    assert float(cosine_loss(h_t, h_t)) <= 1e-6, "equal hidden states: cosine loss 0"


def test_bad_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="label set"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ConfigError, match="temperature"):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_every_other_layer_is_distilberts_rule():
    assert every_other_layer(6, 3) == [0, 2, 4]
    assert every_other_layer(12, 6) == [0, 2, 4, 6, 8, 10]
    assert every_other_layer(6, 1) == [0]
    assert every_other_layer(6, 6) == list(range(6))
    deeper = every_other_layer(6, 5)
    assert deeper == sorted(set(deeper)) and len(deeper) == 5 and deeper[0] == 0
    with pytest.raises(ConfigError, match="between 1 and 6"):
        every_other_layer(6, 7)
