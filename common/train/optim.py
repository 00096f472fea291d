"""AdamW with the usual weight-decay groups, and the learning-rate schedules of BERT and GPT.

AdamW (Loshchilov & Hutter 2019), for each parameter theta with gradient g at step t:
    m_t = beta_1 m_{t-1} + (1 - beta_1) g            v_t = beta_2 v_{t-1} + (1 - beta_2) g^2
    m_hat = m_t / (1 - beta_1^t)                     v_hat = v_t / (1 - beta_2^t)
    theta <- theta - lr_t * (m_hat / (sqrt(v_hat) + eps) + lambda * theta)
The decay term lambda * theta is "decoupled": it is not part of g, so Adam's scaling does not touch it.

Which parameters decay: the rule is **ndim < 2 gets no decay**. That covers every bias and every
LayerNorm weight and bias (all vectors), while embedding and projection matrices decay. Shrinking
a LayerNorm gain or a bias toward 0 is not a useful prior, which is why BERT excluded them.

Schedules, with base learning rate eta, W warmup steps, N total steps, t the current step:
    warmup (all but 'constant'):  eta_t = eta * t / W                        for t < W
    linear:                       eta_t = eta * max(0, (N - t) / (N - W))    for t >= W
    cosine:                       eta_t = eta * 0.5 * (1 + cos(pi * (t - W) / (N - W)))
    constant_with_warmup:         eta_t = eta                                for t >= W
    constant:                     eta_t = eta                                (no warmup)
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from common.train.args import SCHEDULER_TYPES


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: ndim >= 2 with `weight_decay`, ndim < 2 with 0.

    Frozen parameters (requires_grad=False) are left out; tied parameters appear once.
    """
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() already yields a tied weight only once
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, learning_rate: float, weight_decay: float = 0.0,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """torch.optim.AdamW over `weight_decay_groups(model, weight_decay)`."""
    return torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=learning_rate,
                             betas=betas, eps=eps)


def lr_multiplier(step: int, name: str, warmup_steps: int, total_steps: int) -> float:
    """eta_t / eta for schedule `name` at optimizer step `step` (see the module docstring)."""
    if name != "constant" and step < warmup_steps:
        return step / max(1, warmup_steps)
    if name in ("constant", "constant_with_warmup"):
        return 1.0
    if name == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if name == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULER_TYPES)}")


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, num_warmup_steps: int,
                  num_training_steps: int) -> LambdaLR:
    """A LambdaLR whose factor is `lr_multiplier`; call scheduler.step() after each optimizer step.

    The factor is a functools.partial of a module-level function, so the scheduler's state_dict
    holds only numbers (it loads with torch.load(weights_only=True)).
    """
    if name not in SCHEDULER_TYPES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULER_TYPES)}")
    factor = functools.partial(lr_multiplier, name=name, warmup_steps=num_warmup_steps,
                               total_steps=num_training_steps)
    return LambdaLR(optimizer, factor)
