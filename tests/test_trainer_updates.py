"""The update the Trainer actually applies: gradient clipping and the learning rate of each step.

A model whose loss is the linear function w . c has the gradient c at every step, whatever the
batch. With plain SGD (no momentum, no decay; the Trainer's AdamW swapped out) every step moves w by
exactly -eta_t * clip(c): the weight change measures the applied learning rate and the clipping
directly, independently of the schedule code and of clip_grad_norm_'s own bookkeeping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
import torch.nn as nn

from _trainer_toys import RaggedTokenDataset, ToyTokenizer
from common.train import trainer as trainer_module
from common.train.args import TrainingArguments
from common.train.trainer import Trainer
from common.train.utils import TrainerCallback

C = torch.tensor([3.0, -4.0, 12.0])  # |c| = 13


@dataclass
class Output:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor


class LinearLoss(nn.Module):
    """loss = w . c, so d loss / d w = c at every step, for every batch."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = torch.zeros(*input_ids.shape, 2)
        return Output((self.w * C).sum(), logits)


class RecordWeights(TrainerCallback):
    def __init__(self, model):
        self.model, self.weights = model, [model.w.detach().clone()]

    def on_step_end(self, trainer):
        self.weights.append(self.model.w.detach().clone())


def plain_sgd(monkeypatch):
    """The Trainer builds torch.optim.SGD(lr) instead of AdamW: a step is w -= eta_t * g."""
    monkeypatch.setattr(trainer_module, "create_optimizer",
                        lambda model, learning_rate, *args, **kwargs:
                        torch.optim.SGD(model.parameters(), lr=learning_rate))


def train(tmp_path, monkeypatch, **overrides):
    plain_sgd(monkeypatch)
    model = LinearLoss()
    recorder = RecordWeights(model)
    settings = dict(output_dir=str(tmp_path / "out"), use_cpu=True, disable_tqdm=True, logging_steps=1,
                    save_strategy="no", per_device_train_batch_size=4, seed=1, weight_decay=0.0,
                    max_grad_norm=0.0)
    settings.update(overrides)
    Trainer(model, TrainingArguments(**settings), train_dataset=RaggedTokenDataset(n=64),
            tokenizer=ToyTokenizer(), callbacks=[recorder]).train()
    steps = [before - after for before, after in zip(recorder.weights, recorder.weights[1:])]
    return steps  # one (3,) update per optimizer step: eta_t * clip(c)


@pytest.mark.parametrize("max_grad_norm", [1.0, 5.0, 100.0, 0.0], ids=["clip_1", "clip_5", "above_norm", "off"])
def test_one_step_with_max_grad_norm_moves_the_weights_by_the_clipped_gradient(tmp_path, monkeypatch,
                                                                               max_grad_norm):
    """g = c, |c| = 13: the step is eta * c * min(1, max_grad_norm / |c|) (0 = no clipping)."""
    eta = 0.1
    (step,) = train(tmp_path, monkeypatch, learning_rate=eta, max_steps=1, max_grad_norm=max_grad_norm,
                    lr_scheduler_type="constant")
    norm = C.norm().item()
    factor = 1.0 if max_grad_norm == 0 else min(1.0, max_grad_norm / norm)
    expected = eta * C * factor
    err = (step - expected).abs().max().item()
    assert err <= 1e-5 * eta * norm, (
        f"max_grad_norm={max_grad_norm}: the step moved w by {step.tolist()}, the clipped update is "
        f"eta * c * {factor:.4f} = {expected.tolist()} (|c| = {norm})")


def expected_linear_schedule(eta, warmup, total):
    """transformers' linear schedule read before step t+1 (t = 0, 1, ...): eta * t / W while t < W,
    then eta * (N - t) / (N - W)."""
    return [eta * t / warmup if t < warmup else eta * max(0.0, (total - t) / (total - warmup))
            for t in range(total)]


def expected_cosine_schedule(eta, warmup, total):
    return [eta * t / warmup if t < warmup else
            eta * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) for t in range(total)]


@pytest.mark.parametrize("schedule,expected_of", [("linear", expected_linear_schedule),
                                                  ("cosine", expected_cosine_schedule)])
def test_the_learning_rate_applied_at_each_step_follows_warmup_then_decay(tmp_path, monkeypatch, schedule,
                                                                          expected_of):
    """Step t+1 applies eta_t: 0 at the first step of a warmup, eta at step W+1, decaying to eta/(N-W)
    at the last. Calling the scheduler before the optimizer would apply eta_{t+1} instead."""
    eta, warmup, total = 0.5, 4, 12
    steps = train(tmp_path, monkeypatch, learning_rate=eta, max_steps=total, warmup_steps=warmup,
                  lr_scheduler_type=schedule)
    applied = [(step / C).mean().item() for step in steps]  # eta_t, read off the weight change
    expected = expected_of(eta, warmup, total)
    assert len(applied) == total, f"{len(applied)} optimizer steps, expected {total}"
    bad = [(t + 1, round(a, 6), round(e, 6)) for t, (a, e) in enumerate(zip(applied, expected))
           if abs(a - e) > 1e-6]
    assert not bad, (f"{schedule}, warmup {warmup} of {total}: (step, applied lr, expected) differ at "
                     f"{bad}; applied {[round(a, 4) for a in applied]}")
