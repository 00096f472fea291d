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
    cosine_with_min_lr:           eta_t = eta * (r + (1 - r) * 0.5 * (1 + cos(pi * (t - W) / (N - W))))
                                  r = min_lr_rate, or min_lr / eta; the rate ends at the floor r * eta
    warmup_stable_decay (WSD), with D = num_decay_steps, S = num_stable_steps (default N - W - D),
    r = min_lr_ratio (default 0), its own warmup from r * eta:
        warmup  t < W:            eta_t = eta * (r + (1 - r) * a(t / W))     a(x) = x | (1 - cos(pi x)) / 2 | 1 - sqrt(1 - x)
        stable  W <= t < W + S:   eta_t = eta
        decay   t < W + S + D:    eta_t = eta * (r + (1 - r) * d(q))         q = (t - W - S) / D
                                  d(q) = 1 - q (linear) | (1 + cos(pi q)) / 2 (cosine, default) | 1 - sqrt(q) (1-sqrt)
        after:                    eta_t = r * eta
Each piece meets the next one where they join (a(1) = d(0) = 1, d(1) = 0), so no schedule jumps
at a phase boundary; the names and kwargs are transformers' (lr_scheduler_kwargs), and so are the
values at every step (tests/test_schedules.py).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LambdaLR

from common.errors import ConfigError
from common.train.args import OPTIMIZERS, SCHEDULER_KWARGS, SCHEDULER_TYPES


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
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, optim: str = "adamw_torch_fused",
                     muon_learning_rate: float = 0.02, muon_momentum: float = 0.95) -> torch.optim.Optimizer:
    """torch.optim.AdamW over `weight_decay_groups(model, weight_decay)`; with optim="muon", Muon
    (common/train/muon.py) on the hidden matrices and AdamW with these settings on the rest."""
    if optim == "muon":
        from common.train.muon import create_muon

        return create_muon(model, learning_rate, muon_learning_rate, weight_decay, betas, eps, muon_momentum)
    if optim not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optim!r}; choose one of {', '.join(OPTIMIZERS)}")
    return torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=learning_rate,
                             betas=betas, eps=eps)


WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def lr_multiplier(step: int, name: str, warmup_steps: int, total_steps: int, min_lr_rate: float = 0.0,
                  num_stable_steps: int = 0, num_decay_steps: int = 0, warmup_type: str = "linear",
                  decay_type: str = "cosine") -> float:
    """eta_t / eta for schedule `name` at optimizer step `step` (see the module docstring).

    min_lr_rate is r of cosine_with_min_lr and warmup_stable_decay; the other arguments are WSD's.
    """
    if name == "warmup_stable_decay":
        return _wsd_multiplier(step, warmup_steps, num_stable_steps, num_decay_steps, min_lr_rate,
                               warmup_type, decay_type)
    if name != "constant" and step < warmup_steps:
        return step / max(1, warmup_steps)
    if name in ("constant", "constant_with_warmup"):
        return 1.0
    if name == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if name == "cosine":
        return max(0.0, cosine)
    if name == "cosine_with_min_lr":
        return max(0.0, min_lr_rate + (1.0 - min_lr_rate) * cosine)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULER_TYPES)}")


def _shape(kind: str, x: float, rising: bool) -> float:
    """a(x) (rising, warmup) or d(x) (falling, decay) of the WSD formulas, x in [0, 1]."""
    if kind == "linear":
        return x if rising else 1.0 - x
    if kind == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * x)) if rising else 0.5 * (1.0 + math.cos(math.pi * x))
    return 1.0 - math.sqrt(1.0 - x) if rising else 1.0 - math.sqrt(x)


def _wsd_multiplier(step: int, warmup: int, stable: int, decay: int, floor: float, warmup_type: str,
                    decay_type: str) -> float:
    if step < warmup:
        return max(0.0, floor + (1.0 - floor) * _shape(warmup_type, step / max(1, warmup), rising=True))
    if step < warmup + stable:
        return 1.0
    if step < warmup + stable + decay:
        q = (step - warmup - stable) / max(1, decay)
        return max(0.0, floor + (1.0 - floor) * _shape(decay_type, q, rising=False))
    return floor


def schedule_arguments(name: str, kwargs: Optional[dict], learning_rate: float, num_warmup_steps: int,
                       num_training_steps: int) -> dict:
    """lr_scheduler_kwargs (transformers' names) -> the keyword arguments of `lr_multiplier`, checked.

    cosine_with_min_lr: exactly one of min_lr (absolute) or min_lr_rate (r = min_lr / learning_rate).
    warmup_stable_decay: num_decay_steps D required; S = num_stable_steps, default N - W - D.
    """
    kwargs = dict(kwargs or {})
    allowed = SCHEDULER_KWARGS.get(name, ())
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"lr_scheduler_kwargs: {unknown} are not arguments of the {name!r} schedule "
                          + (f"(it takes {', '.join(allowed)})" if allowed else "(it takes none)"))
    if name == "cosine_with_min_lr":
        if ("min_lr" in kwargs) == ("min_lr_rate" in kwargs):
            raise ConfigError("lr_scheduler_kwargs: cosine_with_min_lr needs exactly one of min_lr (the floor) or "
                              "min_lr_rate (the floor / learning_rate), e.g. --lr_scheduler_kwargs "
                              "'{\"min_lr_rate\": 0.1}'")
        rate = kwargs["min_lr_rate"] if "min_lr_rate" in kwargs else kwargs["min_lr"] / max(learning_rate, 1e-30)
        _require_rate(rate, "min_lr_rate" if "min_lr_rate" in kwargs else "min_lr / learning_rate")
        return {"min_lr_rate": float(rate)}
    if name == "warmup_stable_decay":
        if "num_decay_steps" not in kwargs:
            raise ConfigError("lr_scheduler_kwargs: warmup_stable_decay needs num_decay_steps (the steps of the "
                              "final decay), e.g. --lr_scheduler_kwargs '{\"num_decay_steps\": 100}'")
        decay = kwargs["num_decay_steps"]
        stable = kwargs.get("num_stable_steps", num_training_steps - num_warmup_steps - decay)
        for key, value in (("num_decay_steps", decay), ("num_stable_steps", stable)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"lr_scheduler_kwargs: {key} must be an integer >= 0, got {value!r}"
                                  + ("; warmup + decay steps exceed the total steps" if isinstance(value, int) else ""))
        for key in ("warmup_type", "decay_type"):
            if kwargs.get(key, "linear") not in WSD_SHAPES:
                raise ConfigError(f"lr_scheduler_kwargs: {key} must be one of {', '.join(WSD_SHAPES)}, "
                                  f"got {kwargs[key]!r}")
        rate = kwargs.get("min_lr_ratio", 0.0)
        _require_rate(rate, "min_lr_ratio")
        return {"min_lr_rate": float(rate), "num_stable_steps": stable, "num_decay_steps": decay,
                "warmup_type": kwargs.get("warmup_type", "linear"), "decay_type": kwargs.get("decay_type", "cosine")}
    return {}


def _require_rate(rate, what: str) -> None:
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"lr_scheduler_kwargs: {what} must be a number in [0, 1] (a fraction of the "
                          f"learning rate), got {rate!r}")


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, num_warmup_steps: int,
                  num_training_steps: int, scheduler_specific_kwargs: Optional[dict] = None) -> LambdaLR:
    """A LambdaLR whose factor is `lr_multiplier`; call scheduler.step() after each optimizer step.

    scheduler_specific_kwargs: lr_scheduler_kwargs, as transformers' get_scheduler takes them.
    The factor is a functools.partial of a module-level function, so the scheduler's state_dict
    holds only numbers and strings (it loads with torch.load(weights_only=True)).
    """
    if name not in SCHEDULER_TYPES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULER_TYPES)}")
    extra = schedule_arguments(name, scheduler_specific_kwargs, optimizer.defaults["lr"], num_warmup_steps,
                               num_training_steps)
    factor = functools.partial(lr_multiplier, name=name, warmup_steps=num_warmup_steps,
                               total_steps=num_training_steps, **extra)
    return LambdaLR(optimizer, factor)
