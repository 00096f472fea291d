"""cosine_with_min_lr and warmup_stable_decay (common/train/optim.py), as transformers spells them.

Properties: equal to transformers' schedule of the same name at every step (the oracle), never
below the floor r * eta, continuous where two phases meet; lr_scheduler_kwargs reaches them from
Python (a dict) and from the command line (JSON), and a wrong one is a one-line ConfigError.
"""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from common.cli.args import parse_dataclasses
from common.errors import ConfigError
from common.train.args import TrainingArguments
from common.train.optim import get_scheduler, lr_multiplier
from common.train.time_budget import budget_multiplier

optimization = pytest.importorskip("transformers.optimization")
BASE_LR = 0.5
SHAPES = ("linear", "cosine", "1-sqrt")


def optimizer():
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=BASE_LR)


def rates(scheduler, steps: int) -> list[float]:
    """The learning rate used at steps 0..steps (read before each step, as the Trainer does)."""
    out = []
    for _ in range(steps + 1):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def assert_same(ours, theirs, what):
    worst = max(range(len(ours)), key=lambda t: abs(ours[t] - theirs[t]))
    assert abs(ours[worst] - theirs[worst]) <= 1e-12, \
        f"{what}: step {worst}: ours {ours[worst]}, transformers {theirs[worst]}"


@settings(deadline=None, max_examples=40)
@given(total=st.integers(1, 80), warmup_fraction=st.floats(0, 1), rate=st.floats(0, 1), absolute=st.booleans())
def test_cosine_with_min_lr_equals_transformers_at_every_step_and_never_goes_below_the_floor(
        total, warmup_fraction, rate, absolute):
    warmup = int(warmup_fraction * total)
    kwargs = {"min_lr": rate * BASE_LR} if absolute else {"min_lr_rate": rate}
    ours = rates(get_scheduler("cosine_with_min_lr", optimizer(), warmup, total, kwargs), total)
    theirs = rates(optimization.get_cosine_with_min_lr_schedule_with_warmup(optimizer(), warmup, total, **kwargs),
                   total)
    assert_same(ours, theirs, f"cosine_with_min_lr W={warmup} N={total} {kwargs}")
    floor = rate * BASE_LR
    below = [(t, lr) for t, lr in enumerate(ours) if t >= warmup and lr < floor - 1e-12]
    assert not below, f"after warmup the rate went below the floor {floor}: {below[:3]}"
    assert math.isclose(ours[total], floor, abs_tol=1e-12) or total == warmup, \
        f"the last step should be at the floor {floor}, got {ours[total]}"


@settings(deadline=None, max_examples=60)
@given(warmup=st.integers(0, 20), stable=st.integers(0, 20), decay=st.integers(0, 20), extra=st.integers(0, 5),
       ratio=st.floats(0, 1), warmup_type=st.sampled_from(SHAPES), decay_type=st.sampled_from(SHAPES),
       give_stable=st.booleans())
def test_warmup_stable_decay_equals_transformers_at_every_step_and_never_goes_below_the_floor(
        warmup, stable, decay, extra, ratio, warmup_type, decay_type, give_stable):
    total = warmup + stable + decay
    kwargs = {"num_decay_steps": decay, "min_lr_ratio": ratio, "warmup_type": warmup_type, "decay_type": decay_type}
    if give_stable:
        kwargs["num_stable_steps"] = stable
    ours = rates(get_scheduler("warmup_stable_decay", optimizer(), warmup, total, kwargs), total + extra)
    their_kwargs = dict(kwargs, num_training_steps=None if give_stable else total)
    theirs = rates(optimization.get_wsd_schedule(optimizer(), warmup, **their_kwargs), total + extra)
    assert_same(ours, theirs, f"warmup_stable_decay W={warmup} S={stable} D={decay} {kwargs}")
    floor = ratio * BASE_LR
    assert min(ours) >= floor - 1e-12, f"the rate went below the floor {floor}: min {min(ours)}"
    assert all(math.isclose(lr, floor, abs_tol=1e-12) for lr in ours[total:]), \
        f"from step W + S + D = {total} on the rate should stay at the floor {floor}: {ours[total:]}"


BOUNDARIES = [
    ("cosine_with_min_lr", {"min_lr_rate": 0.1}, 10, 50, [10, 50]),
    *[("warmup_stable_decay", {"num_decay_steps": 15, "min_lr_ratio": 0.2, "warmup_type": w, "decay_type": d},
       10, 50, [10, 35, 50]) for w in SHAPES for d in SHAPES],
]


@pytest.mark.parametrize("name, kwargs, warmup, total, boundaries", BOUNDARIES)
def test_each_schedule_is_continuous_where_two_phases_meet(name, kwargs, warmup, total, boundaries):
    from common.train.optim import schedule_arguments

    extra = schedule_arguments(name, kwargs, BASE_LR, warmup, total)
    for b in boundaries:
        left = lr_multiplier(b - 1e-9, name, warmup, total, **extra)
        right = lr_multiplier(b, name, warmup, total, **extra)
        assert abs(left - right) < 1e-4, f"{name} {kwargs}: jumps at step {b}: {left} just before, {right} at it"


def test_landmarks_of_the_formulas():
    # cosine_with_min_lr, r = 0.1: half-way through the decay the rate is r + (1 - r) / 2
    assert math.isclose(lr_multiplier(30, "cosine_with_min_lr", 10, 50, min_lr_rate=0.1), 0.55)
    wsd = dict(num_stable_steps=20, num_decay_steps=20, min_lr_rate=0.0, decay_type="linear")
    assert lr_multiplier(5, "warmup_stable_decay", 10, 50, **wsd) == 0.5, "half-way through warmup"
    assert lr_multiplier(29, "warmup_stable_decay", 10, 50, **wsd) == 1.0, "stable"
    assert lr_multiplier(40, "warmup_stable_decay", 10, 50, **wsd) == 0.5, "half-way through a linear decay"


# ------------------------------------------------------------ from Python and from the command line


def test_lr_scheduler_kwargs_as_a_dict_or_as_json_from_the_command_line_give_the_same_arguments(tmp_path):
    from_python = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine_with_min_lr",
                                    lr_scheduler_kwargs={"min_lr_rate": 0.1})
    parser = argparse.ArgumentParser()
    (from_cli, _) = parse_dataclasses(parser, ["--output_dir", str(tmp_path), "--lr_scheduler_type",
                                               "cosine_with_min_lr", "--lr_scheduler_kwargs",
                                               '{"min_lr_rate": 0.1}'], TrainingArguments)
    assert from_python.scheduler_kwargs == from_cli.scheduler_kwargs == {"min_lr_rate": 0.1}
    assert json.loads(from_python.to_json_string())["lr_scheduler_kwargs"] == '{"min_lr_rate": 0.1}'


def test_the_trainer_decays_to_the_floor(tmp_path):
    from _trainer_toys import ClassificationDataset, ToyClassifier
    from common.train.trainer import Trainer

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                             learning_rate=0.1, warmup_steps=2, lr_scheduler_type="cosine_with_min_lr",
                             lr_scheduler_kwargs={"min_lr": 0.01}, save_strategy="no", logging_steps=1,
                             use_cpu=True, disable_tqdm=True)
    trainer = Trainer(ToyClassifier(), args, train_dataset=ClassificationDataset())
    trainer.train()
    used = [r["learning_rate"] for r in trainer.state.log_history if "learning_rate" in r]
    theirs = rates(optimization.get_cosine_with_min_lr_schedule_with_warmup(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), 2, 6, min_lr=0.01), 5)
    assert used == pytest.approx(theirs, abs=1e-12), f"ours {used}, transformers {theirs}"
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.01), "after the last step: the floor"


def test_the_time_budget_schedule_of_cosine_with_min_lr_ends_at_the_floor():
    assert budget_multiplier(1.0, 100, "cosine_with_min_lr", 0, 0.0, min_lr_rate=0.1) == pytest.approx(0.1)
    assert budget_multiplier(0.5, 50, "cosine_with_min_lr", 0, 0.0, min_lr_rate=0.1) == pytest.approx(0.55)


@pytest.mark.parametrize("kind, kwargs, message", [
    ("cosine_with_min_lr", None, "lr_scheduler_kwargs: cosine_with_min_lr needs exactly one of min_lr (the floor) "
                                 "or min_lr_rate (the floor / learning_rate), e.g. --lr_scheduler_kwargs "
                                 "'{\"min_lr_rate\": 0.1}'"),
    ("cosine_with_min_lr", {"min_lr": 0.1, "min_lr_rate": 0.1}, "needs exactly one of min_lr"),
    ("cosine_with_min_lr", {"min_lr_rate": 1.5}, "lr_scheduler_kwargs: min_lr_rate must be a number in [0, 1]"),
    ("cosine_with_min_lr", {"num_cycles": 1}, "lr_scheduler_kwargs: ['num_cycles'] are not arguments of the "
                                              "'cosine_with_min_lr' schedule (it takes min_lr, min_lr_rate)"),
    ("cosine", {"min_lr_rate": 0.1}, "are not arguments of the 'cosine' schedule (it takes none)"),
    ("warmup_stable_decay", None, "lr_scheduler_kwargs: warmup_stable_decay needs num_decay_steps (the steps of "
                                  "the final decay), e.g. --lr_scheduler_kwargs '{\"num_decay_steps\": 100}'"),
    ("warmup_stable_decay", {"num_decay_steps": 80}, "num_stable_steps must be an integer >= 0, got -30; "
                                                     "warmup + decay steps exceed the total steps"),
    ("warmup_stable_decay", {"num_decay_steps": 5, "decay_type": "exp"},
     "lr_scheduler_kwargs: decay_type must be one of linear, cosine, 1-sqrt, got 'exp'"),
])
def test_a_wrong_lr_scheduler_kwargs_is_one_config_error(tmp_path, kind, kwargs, message):
    with pytest.raises(ConfigError) as raised:
        args = TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type=kind, lr_scheduler_kwargs=kwargs)
        get_scheduler(kind, optimizer(), 10, 60, args.scheduler_kwargs)
    assert message in str(raised.value), str(raised.value)


def test_lr_scheduler_kwargs_that_is_not_json_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^lr_scheduler_kwargs: not valid JSON .*write an object, e\.g\. "):
        TrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine_with_min_lr",
                          lr_scheduler_kwargs="min_lr_rate=0.1")


def test_warmup_stable_decay_under_a_time_budget_says_to_train_by_steps(tmp_path):
    from types import SimpleNamespace

    from common.train.time_budget import TimeBudgetSchedule

    args = TrainingArguments(output_dir=str(tmp_path), max_time=60, lr_scheduler_type="warmup_stable_decay",
                             lr_scheduler_kwargs={"num_decay_steps": 10})
    with pytest.raises(ConfigError, match=r"^lr_scheduler_type: warmup_stable_decay counts its phases in steps and "
                                          r"cannot follow the --max_time clock; pass --schedule_by_time false"):
        TimeBudgetSchedule().on_train_begin(SimpleNamespace(args=args, state=SimpleNamespace(max_steps=100,
                                                                                             global_step=0)))
