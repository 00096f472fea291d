"""Muon: momentum orthogonalised by Newton-Schulz for the hidden matrices, AdamW for everything else.

For each hidden weight matrix W (out, in) with gradient G_t (Jordan et al. 2024, as in modded-nanogpt):
    B_t = mu B_{t-1} + (1 - mu) G_t                  momentum, B_0 = 0
    M_t = mu B_t + (1 - mu) G_t                      Nesterov: the momentum one step ahead
    O_t = NS_5(M_t)  ~  U V^T   where M_t = U S V^T  every singular value sent near 1
    W <- W (1 - lr_t lambda) - lr_t s O_t            s = sqrt(max(1, out / in)), lambda = weight decay

NS_5, five Newton-Schulz steps of a quintic polynomial, with (a, b, c) = (3.4445, -4.7750, 2.0315):
    X_0 = M / (||M||_F + 1e-7)                       every singular value now in (0, 1]
    X_{k+1} = a X_k + (b A + c A^2) X_k,  A = X_k X_k^T
Each step maps every singular value sigma to p(sigma) = a sigma + b sigma^3 + c sigma^5 and leaves the
singular vectors alone. p'(0) = a = 3.4 makes small values grow fast; the coefficients trade exact
convergence for speed, so after five steps every sigma in [1e-3, 1] lies in a band around 1 (about
0.7 to 1.2, tests/test_muon.py), not on 1 itself. (out > in: X is transposed so that A is the
smaller in x in Gram matrix.)

Why: a gradient matrix is dominated by a few directions; its orthogonalised version moves the
weight by the same amount along every direction it has, so the rare directions learn as fast as
the common ones, and the step's size no longer follows the gradient's scale. This only makes sense
for a matrix that maps hidden features to hidden features. The embeddings (a lookup: each row is
its own vector), the output layer (lm_head, classifier) and every vector (biases, norm gains) keep
AdamW, as in modded-nanogpt:
    m_t = beta_1 m + (1 - beta_1) g;  v_t = beta_2 v + (1 - beta_2) g^2
    theta <- theta (1 - lr_t lambda) - lr_t (m_t / (1 - beta_1^t)) / (sqrt(v_t / (1 - beta_2^t)) + eps)
with the same decay rule as common.train.optim (ndim >= 2 decays, vectors do not).

One torch.optim.Optimizer holds both kinds of group (flag "use_muon"), so one learning-rate
schedule scales both learning rates, and one state_dict (momentum buffers, Adam moments, step
counts) is saved in a checkpoint and restored on resume. The Newton-Schulz products run in float32
here; modded-nanogpt runs them in bfloat16 on GPUs.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn as nn

from common.errors import ConfigError

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
# top-level modules that are output layers (transformers' names): they stay on AdamW
OUTPUT_LAYERS = ("lm_head", "cls", "classifier", "qa_outputs", "score")


def newton_schulz(update: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """NS_5 of the module docstring: (..., m, n) -> (..., m, n) with every singular value near 1.

    Leading dimensions are a batch of independent matrices (each normalised by its own norm).
    """
    a, b, c = NS_COEFFICIENTS
    x = update.float()
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)  # Frobenius norm >= the largest sigma
    for _ in range(steps):
        gram = x @ x.mT  # (..., m, m), m = the smaller side
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(update.dtype)


def muon_parameter_split(model: nn.Module) -> tuple[list, list]:
    """(hidden matrices for Muon, everything else for AdamW), trainable parameters only, each once.

    Hidden matrix: ndim == 2, not the weight of an nn.Embedding (a tied lm_head is that same tensor),
    not under a top-level output module (OUTPUT_LAYERS).
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon, adam = [], []
    for name, param in model.named_parameters():  # a tied weight appears once
        if not param.requires_grad:
            continue
        output_layer = name.split(".")[0] in OUTPUT_LAYERS
        hidden = param.ndim == 2 and id(param) not in embedding_ids and not output_layer
        (muon if hidden else adam).append(param)
    return muon, adam


class Muon(torch.optim.Optimizer):
    """Muon on the groups with use_muon=True, AdamW on the others (see the module docstring).

    Muon group keys: lr, momentum, weight_decay, nesterov. AdamW group keys: lr, betas, eps, weight_decay.
    """

    def __init__(self, param_groups: list[dict]):
        for group in param_groups:
            if group.get("use_muon", False):
                group.setdefault("momentum", 0.95)
                group.setdefault("nesterov", True)
            else:
                group.setdefault("betas", (0.9, 0.999))
                group.setdefault("eps", 1e-8)
            group.setdefault("weight_decay", 0.0)
        # defaults["lr"] is --learning_rate (AdamW's), which a schedule's min_lr is a fraction of
        adamw_lr = next((g["lr"] for g in param_groups if not g.get("use_muon", False)), param_groups[0]["lr"])
        super().__init__(param_groups, defaults={"lr": adamw_lr, "use_muon": False})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        mu, lr = group["momentum"], group["lr"]
        by_shape = defaultdict(list)  # matrices of one shape share one batched Newton-Schulz call
        for param in group["params"]:
            if param.grad is None:
                continue
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param)
            buffer = state["momentum_buffer"]
            buffer.lerp_(param.grad, 1 - mu)  # B = mu B + (1 - mu) G
            look_ahead = param.grad.lerp(buffer, mu) if group["nesterov"] else buffer  # mu B + (1 - mu) G
            by_shape[param.shape].append((param, look_ahead))
        for (rows, cols), items in by_shape.items():
            orthogonal = newton_schulz(torch.stack([m for _, m in items]))
            scale = math.sqrt(max(1.0, rows / cols))
            for (param, _), o in zip(items, orthogonal):
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(o, alpha=-lr * scale)

    def _adamw_step(self, group: dict) -> None:
        (beta1, beta2), lr = group["betas"], group["lr"]
        for param in group["params"]:
            if param.grad is None:
                continue
            state = self.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param)
                state["exp_avg_sq"] = torch.zeros_like(param)
            state["step"] += 1
            t = state["step"].item()
            state["exp_avg"].lerp_(param.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(param.grad, param.grad, value=1 - beta2)
            denominator = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
            param.mul_(1 - lr * group["weight_decay"])
            param.addcdiv_(state["exp_avg"], denominator, value=-lr / (1 - beta1 ** t))


def create_muon(model: nn.Module, learning_rate: float, muon_learning_rate: float, weight_decay: float = 0.0,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, momentum: float = 0.95) -> Muon:
    """Muon over the hidden matrices (lr muon_learning_rate), AdamW over the rest (lr learning_rate)."""
    muon, adam = muon_parameter_split(model)
    if not muon:
        shapes = sorted({tuple(p.shape) for p in adam if p.ndim == 2})
        raise ConfigError("optim: muon updates hidden weight matrices and this model has none (its 2-D weights "
                          f"{shapes or 'do not exist'} are embeddings or output layers, which AdamW trains); "
                          "use --optim adamw_torch")
    muon_ids = {id(p) for p in muon}
    return Muon([{"params": muon, "lr": muon_learning_rate, "momentum": momentum, "weight_decay": weight_decay,
                  "use_muon": True},
                 {"params": [p for p in adam if p.ndim >= 2 and id(p) not in muon_ids], "lr": learning_rate,
                  "betas": betas, "eps": eps, "weight_decay": weight_decay, "use_muon": False},
                 {"params": [p for p in adam if p.ndim < 2], "lr": learning_rate, "betas": betas, "eps": eps,
                  "weight_decay": 0.0, "use_muon": False}])
