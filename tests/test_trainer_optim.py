"""AdamW parameter groups and learning-rate schedules (common/train/optim.py)."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from common.train.optim import create_optimizer, get_scheduler, lr_multiplier, weight_decay_groups
from common.train.args import SCHEDULER_KWARGS, SCHEDULER_TYPES


class TinyTransformerLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT and BERT
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_only_matrices_decay_biases_and_layernorm_do_not():
    model = TinyTransformerLike()
    decay, no_decay = weight_decay_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = sorted(names[id(p)] for p in decay["params"])
    no_decay_names = sorted(names[id(p)] for p in no_decay["params"])
    assert decay_names == ["embed.weight", "proj.weight"], f"decayed: {decay_names}"
    assert no_decay_names == ["norm.bias", "norm.weight", "proj.bias"], f"not decayed: {no_decay_names}"
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)


def test_optimizer_is_adamw_with_the_given_hyperparameters():
    optimizer = create_optimizer(TinyTransformerLike(), 3e-4, 0.1, (0.8, 0.95), 1e-6)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (3e-4, (0.8, 0.95), 1e-6, 0.1)


def transformers_schedule(name, optimizer, warmup, total):
    optimization = pytest.importorskip("transformers.optimization")
    if name == "constant":
        return optimization.get_constant_schedule(optimizer)
    if name == "constant_with_warmup":
        return optimization.get_constant_schedule_with_warmup(optimizer, warmup)
    make = {"linear": optimization.get_linear_schedule_with_warmup,
            "cosine": optimization.get_cosine_schedule_with_warmup}[name]
    return make(optimizer, warmup, total)


@settings(deadline=None, max_examples=20)
@given(name=st.sampled_from([n for n in SCHEDULER_TYPES if n not in SCHEDULER_KWARGS]), total=st.integers(1, 60), warmup_fraction=st.floats(0, 1))
def test_schedules_match_transformers_at_every_step(name, total, warmup_fraction):
    warmup = int(warmup_fraction * total)
    our_optimizer, their_optimizer = (torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5) for _ in range(2))
    ours = get_scheduler(name, our_optimizer, warmup, total)
    theirs = transformers_schedule(name, their_optimizer, warmup, total)
    for step in range(total + 1):
        a, b = ours.get_last_lr()[0], theirs.get_last_lr()[0]
        assert abs(a - b) <= 1e-12, f"{name} (W={warmup}, N={total}) step {step}: ours {a}, transformers {b}"
        assert 0 <= a <= 0.5, f"{name}: lr {a} outside [0, base lr]"
        our_optimizer.step()
        their_optimizer.step()
        ours.step()
        theirs.step()


def test_schedule_landmarks():
    assert lr_multiplier(5, "linear", 10, 110) == 0.5, "half-way through warmup: half the rate"
    assert lr_multiplier(10, "linear", 10, 110) == 1.0, "end of warmup: the full rate"
    assert lr_multiplier(60, "linear", 10, 110) == 0.5, "half-way through the decay"
    assert lr_multiplier(110, "linear", 10, 110) == 0.0, "the last step reaches 0"
    assert math.isclose(lr_multiplier(60, "cosine", 10, 110), 0.5), "cosine: 0.5 half-way"
    assert lr_multiplier(0, "constant", 10, 110) == 1.0, "constant has no warmup"


def test_optimizer_and_scheduler_state_load_with_weights_only():
    model = TinyTransformerLike()
    optimizer = create_optimizer(model, 1e-3, 0.01)
    scheduler = get_scheduler("cosine", optimizer, 2, 10)
    model.proj.weight.sum().backward()
    optimizer.step()
    scheduler.step()
    for state in (optimizer.state_dict(), scheduler.state_dict()):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        assert loaded.keys() == state.keys()
    fresh = get_scheduler("cosine", create_optimizer(model, 1e-3, 0.01), 2, 10)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.last_epoch == 1 and fresh.get_last_lr() == scheduler.get_last_lr()
