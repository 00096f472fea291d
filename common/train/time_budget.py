"""A learning-rate schedule that ends on time: the decay spans the wall-clock budget (--max_time).

A step schedule needs the number of steps in advance, but a budget of S seconds holds as many
steps as the machine manages, which depends on the machine and on whatever else runs on it. So
progress is measured in time, or in steps when the steps run out first:

    p = max(t / S, k / N)        t = seconds since training began, k = steps done, N = max_steps

and the learning rate is the usual schedule written in p instead of k:

    eta_p = eta * a * d(q)       q = (p - w) / (1 - w) clipped to [0, 1]
    warmup   a = min(1, k / W) with --warmup_steps W (then w = 0), else min(1, p / w), w = warmup_ratio
    decay    linear d = 1 - q;  cosine d = (1 + cos(pi q)) / 2;  constant(_with_warmup) d = 1
             cosine_with_min_lr d = r + (1 - r) (1 + cos(pi q)) / 2   (r = min_lr_rate, its floor)
warmup_stable_decay counts its phases in steps, so it trains by steps only.

The Trainer stops at t >= S (max_time) or k = N, exactly when p reaches 1, so the rate reaches 0
on time on a fast machine, a slow one, or one that slows down part-way. The price: the rate now
depends on the clock, so two runs with the same seed differ slightly; for bit-identical runs
train by steps (--max_steps, no --max_time, or --schedule_by_time false).
"""
from __future__ import annotations

import math
import time

from torch.optim.lr_scheduler import LambdaLR

from common.errors import ConfigError
from common.train.optim import schedule_arguments
from common.train.utils import TrainerCallback


def budget_multiplier(progress: float, step: int, name: str, warmup_steps: int, warmup_ratio: float,
                      min_lr_rate: float = 0.0) -> float:
    """eta_p / eta for progress p in [0, 1] after `step` optimizer steps (see the module docstring)."""
    progress = min(max(progress, 0.0), 1.0)
    if name == "constant":
        return 1.0
    if warmup_steps > 0:
        warm, w = min(1.0, step / warmup_steps), 0.0
    elif warmup_ratio > 0:
        warm, w = min(1.0, progress / warmup_ratio), warmup_ratio
    else:
        warm, w = 1.0, 0.0
    q = min(max((progress - w) / max(1.0 - w, 1e-12), 0.0), 1.0)
    if name == "linear":
        decay = 1.0 - q
    elif name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * q))
    elif name == "cosine_with_min_lr":
        decay = min_lr_rate + (1.0 - min_lr_rate) * 0.5 * (1.0 + math.cos(math.pi * q))
    else:  # constant_with_warmup
        decay = 1.0
    return warm * decay


class BudgetSchedule:
    """The LambdaLR factor: a callable holding only numbers and a name, so a checkpoint's
    scheduler state (its __dict__) loads with torch.load(weights_only=True)."""

    def __init__(self, name: str, max_time: float, max_steps: int, warmup_steps: int, warmup_ratio: float,
                 first_step: int = 0, min_lr_rate: float = 0.0):
        self.min_lr_rate = float(min_lr_rate)
        self.name, self.max_time, self.max_steps = name, float(max_time), int(max_steps)
        self.warmup_steps, self.warmup_ratio, self.first_step = int(warmup_steps), float(warmup_ratio), int(first_step)
        self.started = time.monotonic()

    def progress(self, step: int) -> float:
        """p = max(t / S, k / N)."""
        by_time = (time.monotonic() - self.started) / self.max_time
        by_steps = (self.first_step + step) / self.max_steps if self.max_steps > 0 else 0.0
        return max(by_time, by_steps)

    def __call__(self, step: int) -> float:
        return budget_multiplier(self.progress(step), self.first_step + step, self.name,
                                 self.warmup_steps, self.warmup_ratio, self.min_lr_rate)


class TimeBudgetSchedule(TrainerCallback):
    """Replace the Trainer's step schedule by the time-aware one when training begins.

    The budget is args.max_time, the same clock the Trainer stops on. On resume the budget is
    that of the new call (max_time is per call of train()), while k continues from the checkpoint.
    """

    def on_train_begin(self, trainer) -> None:
        args = trainer.args
        if args.max_time is None:
            return
        if args.lr_scheduler_type == "warmup_stable_decay":
            raise ConfigError("lr_scheduler_type: warmup_stable_decay counts its phases in steps and cannot follow "
                              "the --max_time clock; pass --schedule_by_time false, or use cosine_with_min_lr")
        rate = schedule_arguments(args.lr_scheduler_type, args.scheduler_kwargs, args.learning_rate, 0,
                                  trainer.state.max_steps).get("min_lr_rate", 0.0)
        schedule = BudgetSchedule(args.lr_scheduler_type, args.max_time, trainer.state.max_steps,
                                  args.warmup_steps, args.warmup_ratio, first_step=trainer.state.global_step,
                                  min_lr_rate=rate)
        trainer.lr_scheduler = LambdaLR(trainer.optimizer, schedule)
