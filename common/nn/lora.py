"""LoRA (Hu et al. 2021): fine-tune a frozen Linear through a low-rank update.

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T          W (out, in) frozen; b frozen
    A (r, in) ~ kaiming-uniform(a = sqrt(5))  (nn.Linear's own init),   B (out, r) = 0

Only A and B learn: r (in + out) numbers per matrix instead of in * out. Because B starts at zero
the update B A is zero at step 0, so the adapted model computes exactly what the base model did;
A must be random, else both gradients dL/dA = B^T G and dL/dB = G A would stay zero forever.
alpha / r keeps the size of the update about the same when r changes (retune alpha, not the
learning rate). After training the update folds into the weight, W' = W + (alpha / r) B A
(`merge`): the merged Linear costs nothing extra at inference, and `unmerge` takes it back out.

Names are peft's, so adapters convert by renaming at most: the wrapped Linear is `base_layer`,
the factors `lora_A` and `lora_B` (Linears without bias); `target_modules` picks modules by name
as peft does (module_matches); `modules_to_save` are modules trained in full (a task head).
Saving and loading adapters in peft's file format is common/hub/adapters.py.

Shapes: x (..., in) -> y (..., out).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional, Union

import torch
import torch.nn as nn

from common.errors import ConfigError
from common.nn.dropout import dropout


class LoRALinear(nn.Module):
    """y = base_layer(x) + (lora_alpha / r) * lora_B(lora_A(dropout(x))); base_layer frozen."""

    def __init__(self, base_layer: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0):
        super().__init__()
        if not isinstance(r, int) or r < 1:
            raise ConfigError(f"lora r must be a positive integer (the rank of B A), got {r!r}")
        if not 0.0 <= lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {lora_dropout!r}")
        self.base_layer = base_layer
        self.r, self.lora_alpha, self.lora_dropout = r, lora_alpha, lora_dropout
        self.scaling = lora_alpha / r
        weight = base_layer.weight
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, device=weight.device, dtype=weight.dtype)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, device=weight.device, dtype=weight.dtype)
        self.reset_lora_parameters()
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def reset_lora_parameters(self) -> None:
        """A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform with a = sqrt(5), as nn.Linear and peft), B = 0."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    # BEGIN EXERCISE lora_linear
    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, shape (out, in): what the adapter adds to W."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x W^T + b + (alpha / r) dropout(x) A^T B^T (just x W'^T + b once merged); (..., in) -> (..., out)."""
        y = self.base_layer(x)  # x W^T + b, (..., out)
        if self.merged:
            return y  # W already holds W + (alpha / r) B A
        h = self.lora_A(dropout(x, self.lora_dropout, self.training))  # (..., r)
        return y + self.scaling * self.lora_B(h)  # (..., out)
    # END EXERCISE lora_linear

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A; forward then skips the two small products (same outputs)."""
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A: the frozen weight back (up to float rounding)."""
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout}, merged={self.merged}"


@dataclasses.dataclass
class LoraConfig:
    """What to adapt and how; the fields (and their meaning) are peft's LoraConfig's.

    target_modules: a list of names, each matching a module whose dotted path equals it or ends
    with "." + it ("query" matches "bert.encoder.layer.0.attention.self.query"), or one string
    taken as a regular expression that must match the WHOLE path. modules_to_save: names (same
    suffix rule) of modules trained in full and saved with the adapter, e.g. a new classifier.
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: Union[list[str], str, None] = None
    modules_to_save: Optional[list[str]] = None
    bias: str = "none"
    task_type: Optional[str] = None
    base_model_name_or_path: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ConfigError(f"lora r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias != "none":
            raise ConfigError(f"lora bias={self.bias!r} is not supported: only 'none' (biases stay frozen)")
        if not self.target_modules:
            raise ConfigError("lora target_modules is empty; name the Linear layers to adapt, "
                              "e.g. query,value for BERT or c_fc for GPT")
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = sorted(self.target_modules)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r


def module_matches(name: str, patterns: Union[list[str], str, None]) -> bool:
    """peft's rule: a string is a regex for the whole dotted path (re.fullmatch); a list matches a
    path equal to one of its names or ending with "." + name."""
    if not patterns:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def inject_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Freeze every parameter, wrap each nn.Linear whose name matches config.target_modules in a
    LoRALinear (trainable A, B), unfreeze config.modules_to_save. In place; returns the wrapped names.

    A matched module that is not an nn.Linear, or no match at all, is a ConfigError naming the
    candidates (a typo in a name would otherwise train nothing).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    modules = dict(model.named_modules())
    targets = [n for n in modules if n and module_matches(n, config.target_modules)
               and not any(part in ("lora_A", "lora_B", "base_layer") for part in n.split("."))]
    linear_names = sorted({n.rpartition(".")[2] for n, m in modules.items() if isinstance(m, nn.Linear)})
    if not targets:
        raise ConfigError(f"lora target_modules {config.target_modules!r} match no module of "
                          f"{type(model).__name__}; its Linear layers are named {', '.join(linear_names)}")
    for name in targets:
        module = modules[name]
        if isinstance(module, LoRALinear):
            continue
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"lora target_modules: {name} is a {type(module).__name__}, not an nn.Linear; "
                              f"target Linear layers only ({', '.join(linear_names)})")
        _replace(model, name, LoRALinear(module, config.r, config.lora_alpha, config.lora_dropout))
    saved = [n for n in modules if n and module_matches(n, config.modules_to_save)]
    if config.modules_to_save and not saved:
        raise ConfigError(f"lora modules_to_save {config.modules_to_save!r} match no module of "
                          f"{type(model).__name__}")
    for name in saved:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)
    return targets


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """W <- W + (alpha / r) B A in every LoRALinear (outputs unchanged; the adapter stays in place)."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put each base_layer back in place of its LoRALinear: a plain model again, with
    the state-dict keys of the base model (what save_pretrained and fast decoding expect)."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        _replace(model, name, layer.base_layer)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied weight is counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_parameters_line(model: nn.Module) -> str:
    """peft's print_trainable_parameters line: 'trainable params: 1,234 || all params: ... || trainable%: ...'."""
    trainable, total = trainable_parameters(model)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
