"""Direct preference optimisation (DPO, Rafailov et al. 2023): learn from pairs (prompt x, chosen
answer y_w, rejected answer y_l) without a reward model.

    log pi(y | x) = sum over the answer's tokens t of log p_theta(y_t | x, y_<t)      (sequence_log_probs)
    L_DPO = -log sigmoid(beta ((log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))))

pi is the model being tuned, pi_ref a frozen copy of where it started (the SFT model): the loss
raises the chosen answer's probability and lowers the rejected one's, each measured RELATIVE to
the reference, and beta sets how far pi may move from pi_ref (small beta: a weak pull). When
pi = pi_ref the margin is 0 and L = log 2.

Shapes: logits (B, T, V), labels (B, T) with -100 outside the answer (the assistant-only labels of
common/data/instructions.py); log-probabilities (B,); the loss is the mean over the B pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def label_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[t] | < t) at every position, with the causal shift (logits at t - 1 score
    labels[t]), 0 where labels[t] = -100. (B, T, V), (B, T) -> (B, T - 1)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # (B, T-1, V), (B, T-1)
    scored = labels != IGNORE_INDEX  # (B, T-1)
    log_p = torch.log_softmax(logits, dim=-1)  # (B, T-1, V)
    picked = log_p.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked * scored


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum_t log p(labels[t] | < t) over the labeled positions, with the causal shift: logits at
    t - 1 score labels[t]. (B, T, V), (B, T) -> (B,)."""
    return label_log_probs(logits, labels).sum(-1)  # (B,)


# BEGIN EXERCISE dpo_loss
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """mean over pairs of -log sigmoid(beta ((pi_w - ref_w) - (pi_l - ref_l))); each argument (B,)
    holds sequence log-probabilities. logsigmoid keeps large margins finite."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)  # (B,)
    return -F.logsigmoid(beta * margin).mean()
# END EXERCISE dpo_loss
