"""GRPO's math (common/nn/grpo.py): group advantages, the clipped ratio, the KL term, and what a step does.

Each test names the wrong version it catches: advantages normalised over the whole batch instead of
each group, a forgotten baseline, an unclipped ratio, a clip applied to the wrong side.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from common.nn.grpo import (check_group_size, clipped_surrogate, group_advantages, grpo_loss, informative_fraction,
                            kl_to_reference)

rewards_strategy = st.integers(1, 4).flatmap(lambda p: st.integers(2, 6).flatmap(
    lambda g: st.lists(st.lists(st.floats(-5, 5), min_size=g, max_size=g), min_size=p, max_size=p)))


@settings(max_examples=50, deadline=None)
@given(rewards_strategy)
def test_advantages_have_mean_zero_in_every_group(rows):
    rewards = torch.tensor(rows, dtype=torch.float64)
    for normalize in (True, False):
        A = group_advantages(rewards, normalize)
        assert A.shape == rewards.shape
        means = A.mean(dim=1)
        assert torch.allclose(means, torch.zeros_like(means), atol=1e-6), \
            f"group means of the advantages {means.tolist()} (normalize_by_std={normalize}); each must be 0"


def test_advantages_are_the_group_z_scores_not_the_batch_ones():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    A = group_advantages(rewards, eps=0.0)
    # by hand: group means 1/4 and 3/4; sample std sqrt(((3/4)^2 + 3 (1/4)^2) / 3) = 1/2 in both groups
    expected = (rewards - torch.tensor([[0.25], [0.75]])) / 0.5
    assert torch.allclose(A, expected), f"got {A.tolist()}, per-group z-scores are {expected.tolist()}"
    assert A[0, 0] > A[1, 0] > 0, "a lone right answer should earn more than one right answer among three"
    assert torch.allclose(group_advantages(torch.full((2, 3), 7.0)), torch.zeros(2, 3)), \
        "a group with one reward for all has nothing to learn: A = 0 (and finite)"


def test_group_of_one_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 2"):
        check_group_size(1)


def test_clip_bounds_the_ratio_on_the_side_the_advantage_favours():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[0.5, 0.9, 1.1, 1.5]])).requires_grad_(True)  # ratios
    for sign in (1.0, -1.0):
        surrogate, clipped = clipped_surrogate(new, old, torch.tensor([sign]), 0.2)
        ratio = torch.exp(new.detach())
        expected = torch.minimum(ratio * sign, ratio.clamp(0.8, 1.2) * sign)
        assert torch.allclose(surrogate.detach(), expected), f"A={sign}: {surrogate.tolist()} vs {expected.tolist()}"
        (grad,) = torch.autograd.grad(surrogate.sum(), new)
        # A > 0: the ratio 1.5 is cut to 1.2 (no gradient), 0.5 is kept (the min is the unclipped term)
        stuck = [3] if sign > 0 else [0]
        for i in range(4):
            if i in stuck:
                assert grad[0, i] == 0 and clipped[0, i], f"A={sign}: ratio {ratio[0, i]:.2f} should be clipped"
            else:
                assert grad[0, i] != 0, f"A={sign}: ratio {ratio[0, i]:.2f} inside or on the safe side lost its gradient"


def test_kl_is_nonnegative_and_zero_at_the_reference():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    assert (kl_to_reference(a, b) >= 0).all() and torch.allclose(kl_to_reference(a, a), torch.zeros(3, 5))


def tiny_policy():
    from minigpt import GPT, GPTConfig
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=11))


def log_probs_of(model, tokens, mask):
    from common.nn.dpo import label_log_probs
    labels = tokens.masked_fill(mask == 0, -100)
    return label_log_probs(model(tokens).logits, labels)


def test_a_constant_reward_gives_a_zero_gradient():
    model = tiny_policy()
    tokens = torch.randint(0, 11, (6, 10))
    mask = torch.zeros(6, 10, dtype=torch.long)
    mask[:, 4:] = 1
    rewards = torch.full((2, 3), 1.0)
    logp = log_probs_of(model, tokens, mask)
    loss, _ = grpo_loss(logp, logp.detach(), group_advantages(rewards).flatten(), mask[:, 1:], 0.2)
    loss.backward()
    biggest = max(p.grad.abs().max().item() for p in model.parameters())
    assert biggest == 0.0, f"every answer scored the same, yet the largest gradient entry is {biggest}"


def test_a_step_raises_the_probability_of_the_rewarded_answers():
    model = tiny_policy()
    torch.manual_seed(1)
    tokens = torch.randint(0, 11, (8, 10))
    mask = torch.zeros(8, 10, dtype=torch.long)
    mask[:, 4:] = 1
    rewards = torch.tensor([[1.0, 0, 0, 1], [0, 1.0, 0, 0]])
    logp = log_probs_of(model, tokens, mask)
    loss, stats = grpo_loss(logp, logp.detach(), group_advantages(rewards).flatten(), mask[:, 1:], 0.2)
    assert stats["clip_fraction"] == 0.0, "on the first update rho = 1: nothing is clipped"
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.05 * p.grad
        new = log_probs_of(model, tokens, mask)
    change = (new - logp.detach()).sum(-1).view(2, 4)
    right, wrong = change[rewards == 1].mean().item(), change[rewards == 0].mean().item()
    assert right > wrong, f"log-probability change: rewarded {right:.4f}, unrewarded {wrong:.4f}"


def test_informative_fraction_counts_the_groups_with_a_nonzero_advantage():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    moving = (group_advantages(rewards).abs().sum(dim=1) > 0).float().mean().item()
    got = informative_fraction(rewards)
    assert got == 0.5, f"2 of the 4 groups have rewards that differ, got a fraction of {got}"
    assert got == moving, f"the fraction {got} differs from the fraction of groups with a non-zero advantage {moving}"
