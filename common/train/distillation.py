"""DistillationTrainer: the Trainer whose loss is distillation's (common/nn/distillation.py).

    L = alpha_ce * T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + alpha_task * L_task + alpha_cos * L_cos

Each micro-batch runs the frozen teacher (eval mode, no gradient) and the student on the same
inputs; the student's own loss on the labels is L_task. Token-level logits (B, T, K) count only the
positions whose label is not -100 (padding, non-first word pieces); the cosine term compares the last
hidden states at the positions the attention mask keeps. Evaluation and saving are the Trainer's:
what is evaluated and saved is the student alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.nn.distillation import distillation_objective
from common.nn.losses import IGNORE_INDEX
from common.train.trainer import Trainer


class DistillationTrainer(Trainer):
    def __init__(self, model: nn.Module, args=None, *, teacher: nn.Module, temperature: float = 2.0,
                 alpha_ce: float = 0.5, alpha_task: float = 0.5, alpha_cos: float = 0.0, **kwargs):
        super().__init__(model, args, **kwargs)
        self.teacher = teacher.to(self.ctx.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha_ce, self.alpha_task, self.alpha_cos = temperature, alpha_ce, alpha_task, alpha_cos

    def _loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        hidden = bool(self.alpha_cos)
        student = model(**batch, output_hidden_states=hidden) if hidden else model(**batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            teacher = self.teacher(**inputs, output_hidden_states=hidden) if hidden else self.teacher(**inputs)
        labels = batch.get("labels")
        mask = None
        if student.logits.dim() == 3 and labels is not None and labels.dim() == 2:
            mask = labels != IGNORE_INDEX  # (B, T): the positions the task loss reads
        attention = batch.get("attention_mask")
        loss, _ = distillation_objective(
            student.logits, teacher.logits, student.loss, self.temperature, self.alpha_ce, self.alpha_task,
            self.alpha_cos, student_hidden=student.hidden_states[-1] if hidden else None,
            teacher_hidden=teacher.hidden_states[-1] if hidden else None, mask=mask,
            hidden_mask=attention.bool() if hidden and attention is not None else None)
        return loss
