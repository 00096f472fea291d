"""GRPO (group relative policy optimisation, Shao et al. 2024): policy gradient with checkable rewards.

For each prompt x, G answers o_1 .. o_G are sampled from the current policy pi_old and scored by a
reward r_i (1 if the answer is right, else 0, say). No value network: the baseline is the group.

    advantage      A_i = (r_i - mean_j r_j) / (std_j r_j + eps)            the same for every token of o_i
    ratio          rho_{i,t} = pi(o_{i,t} | x, o_{i,<t}) / pi_old(o_{i,t} | x, o_{i,<t})
    clipped        s_{i,t} = min(rho A_i, clip(rho, 1 - epsilon, 1 + epsilon) A_i)
    KL (optional)  k_{i,t} = exp(q) - q - 1,  q = log pi_ref - log pi    (Schulman's k3: >= 0, unbiased)
    loss           L = -(1/G) sum_i (1/|o_i|) sum_t (s_{i,t} - beta_KL k_{i,t})

A right answer in a group that is mostly wrong gets a large positive A, a wrong one in a mostly right
group a negative A; a group whose answers all score the same teaches nothing (A = 0, and the mean
over the group is 0 in every group). The clip stops one batch from moving the policy far: once rho
leaves [1 - epsilon, 1 + epsilon] in the direction A favours, the minimum picks the constant clipped
term and that token's gradient is 0. With one update per batch rho = 1 and the loss is plain
REINFORCE with the group baseline; the clip matters from the second update on the same samples.
eps keeps a group with std 0 finite. std is the sample standard deviation (divisor G - 1), so G >= 2.

Shapes: rewards (P, G) for P prompts; log-probabilities (B, T) with B = P G, mask (B, T) 1 on the
answer's tokens; the loss is a scalar.
"""
from __future__ import annotations

import torch

from common.errors import ConfigError


# BEGIN EXERCISE grpo_advantages
def group_advantages(rewards: torch.Tensor, normalize_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """A_i = (r_i - mean of its group) / (std of its group + eps), or only r_i - mean with
    normalize_by_std=False (Dr. GRPO's choice). rewards (P, G), one row per prompt -> (P, G).
    std is the sample standard deviation (divisor G - 1)."""
    mean = rewards.mean(dim=1, keepdim=True)  # (P, 1)
    centred = rewards - mean  # (P, G): every row sums to 0
    if not normalize_by_std:
        return centred
    std = rewards.std(dim=1, keepdim=True)  # (P, 1), divisor G - 1
    return centred / (std + eps)
# END EXERCISE grpo_advantages


def informative_fraction(rewards: torch.Tensor) -> float:
    """The fraction of the P groups (rewards (P, G)) whose rewards are not all equal: the only groups
    with a non-zero advantage, so the only ones that move the policy. With a 0/1 reward and success
    rate p per sample it is about 1 - p^G - (1 - p)^G: small when p is near 0 or 1."""
    return (rewards.max(dim=1).values > rewards.min(dim=1).values).float().mean().item()


def check_group_size(group_size: int) -> None:
    if group_size < 2:
        raise ConfigError(f"the group size (--num_generations) is {group_size}: GRPO's advantage compares an answer "
                          "with the other answers to the same prompt, which needs at least 2 (e.g. 8)")


def clipped_surrogate(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                      clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s (B, T), clipped (B, T) bool): s = min(rho A, clip(rho, 1 - e, 1 + e) A) per token, rho =
    exp(log pi - log pi_old); `clipped` marks the tokens where the clipped term is the smaller one.
    log_probs, old_log_probs (B, T); advantages (B,)."""
    ratio = torch.exp(log_probs - old_log_probs)  # (B, T)
    A = advantages[:, None]  # (B, 1)
    unclipped = ratio * A
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * A
    return torch.minimum(unclipped, clipped), clipped < unclipped


def kl_to_reference(log_probs: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(q) - q - 1 with q = log pi_ref - log pi, per token (B, T); >= 0, 0 where pi = pi_ref."""
    q = reference_log_probs - log_probs
    return torch.exp(q) - q - 1


def grpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              clip_range: float = 0.2, reference_log_probs=None, kl_coef: float = 0.0) -> tuple[torch.Tensor, dict]:
    """L of the module docstring and its statistics {clip_fraction, kl}. log_probs (B, T) of the
    policy being trained (with gradient), old_log_probs (B, T) of the sampling policy, advantages (B,),
    mask (B, T) 1 on the answer's tokens; reference_log_probs (B, T) needed when kl_coef > 0."""
    mask = mask.to(log_probs.dtype)
    per_token, clipped = clipped_surrogate(log_probs, old_log_probs, advantages, clip_range)
    kl = torch.zeros_like(per_token)
    if kl_coef > 0:
        kl = kl_to_reference(log_probs, reference_log_probs)
        per_token = per_token - kl_coef * kl
    lengths = mask.sum(-1).clamp_min(1.0)  # |o_i|, (B,)
    loss = -((per_token * mask).sum(-1) / lengths).mean()
    tokens = mask.sum().clamp_min(1.0)
    stats = {"clip_fraction": ((clipped.to(mask.dtype) * mask).sum() / tokens).item(),
             "kl": ((kl * mask).sum() / tokens).item()}
    return loss, stats
