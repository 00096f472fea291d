"""Knowledge distillation (Hinton et al. 2015; DistilBERT, Sanh et al. 2019): a small student learns
the teacher's whole output distribution, not only the label.

Soft targets at temperature T (T > 1 spreads the probability over the wrong classes, whose relative
sizes are what the teacher knows beyond the label):

    p_t = softmax(z_t / T),   p_s = softmax(z_s / T)                      z: logits (N, K)

(T is the temperature in this file, Hinton et al.'s letter, not the sequence length; N rows, K classes.)
    L_KD = T^2 * KL(p_t || p_s) = T^2 * (1/N) sum_n sum_k p_t[n,k] (log p_t[n,k] - log p_s[n,k])

Why T^2: without it, dKL/dz_s = (1/T)(p_s - p_t) per row, and for large T (zero-mean logits)
p_s - p_t ~ (z_s - z_t) / (K T), so the gradient shrinks like 1/T^2; the factor T^2 keeps its size
about the same whatever T is, so alpha_ce needs no retuning when T changes (tested).

DistilBERT's objective adds the task loss on the labels and a cosine loss that aligns the hidden
states (both of width d):

    L = alpha_ce * L_KD + alpha_task * L_task + alpha_cos * (1/M) sum_m (1 - cos(h_s[m], h_t[m]))

the cosine term over the M kept positions of the last hidden states (B, T, d).
The student starts from every other teacher layer (DistilBERT's rule): student layer i copies teacher
layer 2i (`every_other_layer`), or from scratch.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.errors import ConfigError
from common.nn.losses import log_softmax


# BEGIN EXERCISE distillation_loss
def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 2.0, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the rows.

    student_logits, teacher_logits: (..., K), the same shape; every leading position is one row
    (a sentence for a classifier, a token for a language model). mask: bool (...), True = row counts
    (e.g. not padding); None = every row. The teacher gets no gradient. Returns a scalar.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ConfigError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                          f"{tuple(teacher_logits.shape)} differ; the two models must share the label set")
    log_p_s = log_softmax(student_logits / temperature, dim=-1)  # (..., K)
    log_p_t = log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (..., K)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)  # (...): KL per row, >= 0
    if mask is not None:
        kl = kl[mask]
    return temperature ** 2 * kl.mean()
# END EXERCISE distillation_loss


def cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(1/M) sum_m (1 - cos(h_s[m], h_t[m])): hidden states (..., d), mask bool (...) True = kept."""
    s, t = student_hidden.float(), teacher_hidden.detach().float()
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1)).clamp_min(1e-8)  # (...)
    if mask is not None:
        cos = cos[mask]
    return (1.0 - cos).mean()


def distillation_objective(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           task_loss: Optional[torch.Tensor], temperature: float = 2.0,
                           alpha_ce: float = 0.5, alpha_task: float = 0.5, alpha_cos: float = 0.0,
                           student_hidden: Optional[torch.Tensor] = None,
                           teacher_hidden: Optional[torch.Tensor] = None,
                           mask: Optional[torch.Tensor] = None,
                           hidden_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
    """L = alpha_ce * L_KD + alpha_task * L_task + alpha_cos * L_cos (module docstring).
    Returns (L, {"loss_kd": ..., "loss_task": ..., "loss_cos": ...}) with the parts detached."""
    parts = {"loss_kd": distillation_loss(student_logits, teacher_logits, temperature, mask)}
    loss = alpha_ce * parts["loss_kd"]
    if alpha_task and task_loss is not None:
        parts["loss_task"] = task_loss
        loss = loss + alpha_task * task_loss
    if alpha_cos:
        if student_hidden is None or teacher_hidden is None:
            raise ConfigError("alpha_cos > 0 needs the hidden states of both models")
        parts["loss_cos"] = cosine_loss(student_hidden, teacher_hidden, hidden_mask)
        loss = loss + alpha_cos * parts["loss_cos"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def every_other_layer(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """DistilBERT's initialisation: student layer i copies teacher layer 2i, i = 0 .. L_s - 1
    (6 teacher layers, 3 student layers -> [0, 2, 4]). Needs L_s <= ceil(L_t / 2); a deeper student
    takes evenly spaced layers, round(i L_t / L_s) (still increasing, first layer 0)."""
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ConfigError(f"the student has {num_student_layers} layers, the teacher {num_teacher_layers}; "
                          f"a student has between 1 and {num_teacher_layers} layers")
    if 2 * (num_student_layers - 1) < num_teacher_layers:
        return [2 * i for i in range(num_student_layers)]
    return [round(i * num_teacher_layers / num_student_layers) for i in range(num_student_layers)]
