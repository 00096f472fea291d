"""The losses of BERT and GPT, from a hand-written log-softmax.

log-softmax, stabilised with logsumexp (subtracting the row maximum m changes nothing
mathematically but keeps exp() from overflowing):
    log p_v = z_v - logsumexp(z),   logsumexp(z) = m + log sum_u exp(z_u - m),  m = max_u z_u

Cross-entropy of a target y:  CE(z, y) = -log p_y.  Positions whose label is -100 are ignored.

BERT (Devlin et al. 2019), I = the masked positions (each token chosen with Bernoulli(0.15)),
x~ = the corrupted input (every prediction reads the same x~: the independence assumption):
    L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~; theta)   (reduction="mean", the default; "sum" drops 1/|I|)
    L_NSP = -log p(y | c),  c = tanh(H_L[0] W_p + b_p)       (y: 0 = IsNext, 1 = NotNext)
    L     = alpha * L_MLM + beta * L_NSP
GPT (Radford et al. 2018), the chain rule p(x) = prod_{t=1}^{T} p(x_t | x_<t):
    L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t)
    (the mean over every position that has a next-token label: t >= 2, label not -100)
"""
from __future__ import annotations

from typing import Optional

import torch

from common.errors import ConfigError, DataError

IGNORE_INDEX = -100
REDUCTIONS = ("mean", "sum", "none")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 at least (bf16/fp16 logits lose too much in exp/log)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# BEGIN EXERCISE log_softmax
def log_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log p = z - logsumexp(z), with logsumexp(z) = m + log(sum(exp(z - m))), m = max(z).

    logits: any shape; `dim` is the class axis. Returns log p, same shape as `logits`.
    """
    # z - logsumexp(z) = (z - m) - log sum exp(z - m). Subtracting m first keeps log p exact
    # for huge z: m + log(...) would be rounded to the spacing of m (1e-3 at 1e4 in float32).
    m = logits.detach().amax(dim=dim, keepdim=True)  # a constant shift: it does not change the value
    shifted = logits - m  # (z - m) <= 0: exp() cannot overflow
    return shifted - torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))
# END EXERCISE log_softmax


def shifted_log_normaliser(logits: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """(z - m, log sum exp(z - m)) with m = max(z): log_softmax's two terms, log p = first - second.

    logits: (..., V) -> ((..., V), (..., 1)). cross_entropy reads log p at the target only from
    these two terms, without building the whole log p matrix. It stays outside the log_softmax
    exercise on purpose: the same formula, kept apart for cross_entropy's speed, not a new lesson.
    """
    m = logits.detach().amax(dim=dim, keepdim=True)  # a constant shift: no gradient flows through m
    shifted = logits - m
    return shifted, torch.log(torch.exp(shifted).sum(dim=dim, keepdim=True))


def check_targets(targets: torch.Tensor, keep: torch.Tensor, num_classes: int) -> None:
    """Every kept target is a class id in [0, num_classes): a label outside would otherwise index
    past the logits (a cryptic gather error on the CPU, a device-side assert on a GPU)."""
    bad = keep & ((targets < 0) | (targets >= num_classes))
    if bool(bad.any()):
        value = targets[bad][0].item()
        raise DataError(f"label {value} is outside the {num_classes} classes 0..{num_classes - 1} of the "
                        f"logits ({int(bad.sum())} such labels in the batch); check num_labels (or vocab_size) "
                        f"against the labels of the data; -{-IGNORE_INDEX} marks a position to ignore")


# BEGIN EXERCISE cross_entropy
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                  reduction: str = "mean") -> torch.Tensor:
    """CE = -log p_y per row; rows with target == ignore_index contribute nothing.

    logits: (N, V); targets: (N,) long. reduction "sum": sum over kept rows; "mean": that sum
    divided by the number of kept rows (0 when no row is kept, never NaN); "none": (N,) values.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    keep = targets != ignore_index  # (N,)
    check_targets(targets, keep, logits.size(-1))
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))
    # -log p_y = logsumexp(z) - z_y: log_softmax's formula read at y only, so the (N, V) matrix of
    # log p is never built (nor its backward): the same numbers, about 40% less time at V = 8000.
    shifted, log_normaliser = shifted_log_normaliser(_upcast(logits))  # (N, V), (N, 1); float32 under autocast
    rows = torch.arange(shifted.size(0), device=shifted.device)
    # Indexing keeps only the indices for its backward (gather would keep all of `shifted`, N x V).
    nll = log_normaliser.squeeze(-1) - shifted[rows, safe_targets]  # (N,)
    nll = torch.where(keep, nll, torch.zeros_like(nll))
    if reduction == "none":
        return nll
    total = nll.sum()
    if reduction == "sum":
        return total
    return total / keep.sum().clamp_min(1)
# END EXERCISE cross_entropy


# BEGIN EXERCISE mlm_loss
def mlm_loss(prediction_logits: torch.Tensor, labels: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~; theta), I = {i : labels_i != -100}.

    prediction_logits: (B, T, V) or (N, V); labels: (B, T) or (N,), -100 outside I.
    "mean" (the default, what BERT reports) is the formula; "sum" drops the 1/|I|. Empty I gives 0.
    """
    V = prediction_logits.size(-1)
    return cross_entropy(prediction_logits.reshape(-1, V), labels.reshape(-1), reduction=reduction)
# END EXERCISE mlm_loss


# BEGIN EXERCISE nsp_loss
def nsp_loss(seq_relationship_logits: torch.Tensor, next_sentence_label: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """L_NSP = -log p(y | c), c the pooled [CLS] vector; y = 0 if B follows A (IsNext), 1 if not (NotNext).
    seq_relationship_logits: (B, 2); next_sentence_label: (B,)."""
    return cross_entropy(seq_relationship_logits.reshape(-1, 2), next_sentence_label.reshape(-1),
                         reduction=reduction)
# END EXERCISE nsp_loss


def pretraining_loss(prediction_logits: torch.Tensor, labels: torch.Tensor,
                     seq_relationship_logits: torch.Tensor, next_sentence_label: torch.Tensor,
                     alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """L = alpha * L_MLM + beta * L_NSP (both means, as BERT's pre-training reports them)."""
    return (alpha * mlm_loss(prediction_logits, labels)
            + beta * nsp_loss(seq_relationship_logits, next_sentence_label))


# BEGIN EXERCISE causal_lm_loss
def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t).

    The logits at position t - 1 predict the token at t, so the shift is done here.

    logits: (B, T, V); labels: (B, T), usually the input ids, -100 at padding. The shift is done
    here: logits[:, :-1] are scored against labels[:, 1:]. "mean" (the default) divides by the N
    scored tokens; "sum" gives N * L_LM.
    """
    V = logits.size(-1)
    shifted_logits = logits[:, :-1, :].reshape(-1, V)  # (B * (T-1), V)
    shifted_labels = labels[:, 1:].reshape(-1)  # (B * (T-1),)
    return cross_entropy(shifted_logits, shifted_labels, reduction=reduction)
# END EXERCISE causal_lm_loss


def binary_cross_entropy_with_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean of -[y log sigma(z) + (1 - y) log(1 - sigma(z))], computed stably as
    max(z, 0) - z y + log(1 + exp(-|z|))."""
    z = _upcast(logits)
    y = targets.to(z.dtype)
    return (z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()


def mse_loss(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean of (prediction - target)^2."""
    p = _upcast(predictions)
    return (p - targets.to(p.dtype)).pow(2).mean()


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """transformers' rule: 1 label -> regression; integer labels -> single-label
    classification; float labels with num_labels > 1 -> multi-label classification."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int,
                        problem_type: Optional[str] = None) -> torch.Tensor:
    """The loss of a sequence classifier, chosen as transformers' `problem_type` does:
        regression                  MSE(logits, y)                 logits (B, 1), y (B,)
        single_label_classification CE(logits, y)                  logits (B, K), y (B,) long
        multi_label_classification  BCE(sigma(logits), y)          logits (B, K), y (B, K) float
    """
    problem_type = problem_type or infer_problem_type(num_labels, labels)
    if problem_type == "regression":
        if num_labels == 1:
            return mse_loss(logits.squeeze(-1), labels.squeeze(-1) if labels.dim() > 1 else labels)
        return mse_loss(logits, labels)
    if problem_type == "single_label_classification":
        return cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1))
    if problem_type == "multi_label_classification":
        return binary_cross_entropy_with_logits(logits, labels)
    raise ConfigError(
        f"unknown problem_type {problem_type!r}; use 'regression', "
        "'single_label_classification' or 'multi_label_classification'"
    )
