"""int8 post-training quantization by hand: symmetric absmax, per output channel for the weights and
per token (dynamic, at run time) for the activations.

Absmax quantization of a row x (length n) to b = 8 bits, q_max = 2^(b-1) - 1 = 127:

    s = max_j |x_j| / 127                         one float scale per row (s = 1 for an all-zero row)
    q_j = clamp(round(x_j / s), -127, 127)        int8;  -128 is never used, so the grid is symmetric
    dequant(q)_j = s * q_j                        |x_j - s q_j| <= s / 2  (round to the nearest step)

A Linear y = x W^T + b with W (out, in) quantizes each output row W[o] with its own scale s_w[o]
(per channel: one large weight spoils only its own row's resolution), and each input token x[t]
with its own s_x[t] at run time (dynamic: the activations' range is not known before the input is):

    y[t, o] = sum_j (s_x[t] qx[t, j]) (s_w[o] qw[o, j]) + b[o] = s_x[t] s_w[o] sum_j qx[t, j] qw[o, j] + b[o]

The textbook path (Int8Linear, kernel "textbook") dequantizes both and multiplies in float32, the
first form; the fast path (kernel "int_mm") computes the integer sums with torch._int_mm (int8 x int8
-> int32, exact) and scales once, the second form. The two are the same number up to float32
rounding of the sums; tests/test_quantization.py pins them together. The fast path trades nothing in
accuracy; where torch has no int8 kernel for the device, use_int8_kernel falls back with one line.
A third kernel, "fbgemm", hands our int8 weights and scales to torch.ao's fused dynamic linear
(quantize the input, multiply, rescale in one call; the fastest on a CPU), which trades the per-token
input scale for ONE asymmetric scale per call over 7 bits (x86's reduce_range): its input rounding
is coarser; the test bounds its distance to the textbook path by the two paths' rounding errors.

Embeddings quantize per row (each token's vector has its own scale) and dequantize the rows they
look up. On disk an int8 weight costs 1 byte instead of 4, plus one float32 scale per row.
Shapes: weights (out, in), scales (out, 1); activations (..., in), their scales (..., 1).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import ConfigError

QMAX = 127  # 2^(8-1) - 1
KERNELS = ("textbook", "int_mm", "fbgemm")
QUANT_METHOD = "absmax_int8"  # quantization_config["quant_method"] of our folders


# BEGIN EXERCISE quantize_absmax
def quantize_absmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax int8 per row of the last axis: x (..., n) -> (q int8 (..., n), s float32 (..., 1)),
    s = max_j |x_j| / 127 (1 for an all-zero row), q = clamp(round(x / s), -127, 127); x ~ s * q."""
    x = x.float()
    absmax = x.abs().amax(dim=-1, keepdim=True)  # (..., 1)
    scale = torch.where(absmax > 0, absmax / QMAX, torch.ones_like(absmax))  # (..., 1)
    q = torch.round(x / scale).clamp(-QMAX, QMAX).to(torch.int8)  # (..., n)
    return q, scale
# END EXERCISE quantize_absmax


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """s * q in float32: q int8 (..., n), s (..., 1)."""
    return q.float() * scale


class Int8Linear(nn.Module):
    """y = dequant(quantize_absmax(x)) dequant(W_q, s_w)^T + b, W_q int8 (out, in), s_w (out, 1), b float.

    `weight` and `weight_scale` are buffers (saved, not trained); `kernel` picks the textbook path or
    the int8 matrix product (module docstring). Built empty (zeros) for loading, or by from_linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features, 1))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.kernel = "textbook"

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        new.weight, new.weight_scale = quantize_absmax(linear.weight.detach())
        if linear.bias is not None:
            new.bias.data.copy_(linear.bias.detach().float())
        return new.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "fbgemm":
            return fbgemm_linear(self, x)
        q_x, s_x = quantize_absmax(x)  # (..., in) int8, (..., 1): one scale per token, at run time
        if self.kernel == "int_mm":
            y = int_mm_product(q_x, s_x, self.weight, self.weight_scale)  # (..., out)
        else:
            y = dequantize(q_x, s_x) @ dequantize(self.weight, self.weight_scale).T  # (..., out)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel={self.kernel}")


def int_mm_product(q_x: torch.Tensor, s_x: torch.Tensor, q_w: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """The fast path: s_x[t] s_w[o] sum_j q_x[t, j] q_w[o, j], the sums exact in int32 (torch._int_mm).
    q_x (..., in) int8, s_x (..., 1), q_w (out, in) int8, s_w (out, 1) -> (..., out) float32."""
    lead = q_x.shape[:-1]
    rows = q_x.reshape(-1, q_x.size(-1))
    if rows.size(1) == 1:  # torch 2.13's CPU _int_mm returns garbage for in = 1 (tests/test_quantization.py found it)
        acc = rows.int() * q_w.int().T  # (N, out) int32, the same exact sums
    else:
        acc = torch._int_mm(rows, q_w.T)  # (N, out) int32
    return acc.float().view(*lead, -1) * s_x * s_w.view(-1)  # (..., out)


def fbgemm_linear(layer: "Int8Linear", x: torch.Tensor) -> torch.Tensor:
    """torch.ao's fused dynamic int8 linear on the layer's own int8 weights and per-channel scales
    (packed once, kept on the layer): x (..., in) float32 -> (..., out). See the module docstring."""
    packed = getattr(layer, "_fbgemm_packed", None)
    key = (layer.weight.data_ptr(), layer.weight._version, layer.weight_scale._version,
           None if layer.bias is None else layer.bias._version)  # repacked after a load changes any of them
    if packed is None or packed[0] != key:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's quantized-tensor constructors warn of their deprecation
            w = torch._make_per_channel_quantized_tensor(
                layer.weight, layer.weight_scale.view(-1).double(),
                torch.zeros(layer.out_features, dtype=torch.long), 0)
            packed = (key, torch.ops.quantized.linear_prepack(
                w, None if layer.bias is None else layer.bias.detach().float()))
        layer._fbgemm_packed = packed
    lead = x.shape[:-1]
    y = torch.ops.quantized.linear_dynamic(x.reshape(-1, x.size(-1)).float(), packed[1], True)
    return y.view(*lead, layer.out_features).to(x.dtype)


class Int8Embedding(nn.Module):
    """E[i] ~ s[i] q[i]: each row of the table quantized with its own absmax scale; forward looks up
    the int8 rows and their scales and dequantizes only those: (B, T) ids -> (B, T, d) float32."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, 1))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "Int8Embedding":
        new = cls(embedding.num_embeddings, embedding.embedding_dim)
        new.weight, new.weight_scale = quantize_absmax(embedding.weight.detach())
        return new.to(embedding.weight.device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return dequantize(F.embedding(input_ids, self.weight), F.embedding(input_ids, self.weight_scale))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


def _tied_modules(model: nn.Module) -> set[str]:
    """Names of Linear/Embedding modules whose weight is shared with another module (tied weights):
    they stay in float, since one int8 copy could not be both a Parameter and a buffer."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            owners.setdefault(id(module.weight), []).append(name)
    return {name for names in owners.values() if len(names) > 1 for name in names}


def _skipped(name: str, skip: Iterable[str]) -> bool:
    return any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip)


def quantize_model(model: nn.Module, modules_to_not_convert: Optional[Iterable[str]] = None,
                   quantize_embeddings: bool = True) -> dict:
    """Replace every nn.Linear by an Int8Linear (and every nn.Embedding by an Int8Embedding) in place,
    except the modules named in modules_to_not_convert (a full name, or its last part(s), e.g.
    "classifier") and modules whose weight is tied to another's. Returns the quantization_config
    that config.json carries (the exact list of modules left in float, so a load rebuilds the same)."""
    skip = list(modules_to_not_convert or [])
    if any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules()):
        raise ConfigError("this model is already quantized to int8; quantize the float model it came from")
    kept = sorted(set(_tied_modules(model)) | {n for n, m in model.named_modules()
                                               if isinstance(m, (nn.Linear, nn.Embedding)) and _skipped(n, skip)})
    _convert(model, kept, quantize_embeddings, from_float=True)
    return {"quant_method": QUANT_METHOD, "bits": 8, "weights": "symmetric absmax per output channel",
            "activations": "dynamic symmetric absmax per token", "quantize_embeddings": quantize_embeddings,
            "modules_to_not_convert": kept}


def prepare_quantized_model(model: nn.Module, quantization_config: dict) -> None:
    """Give a freshly built float model the int8 modules a quantized folder holds (empty, to be
    filled by load_state_dict): the same modules quantize_model replaced."""
    if quantization_config.get("quant_method") != QUANT_METHOD:
        raise ConfigError(f"quantization_config.quant_method is {quantization_config.get('quant_method')!r}; "
                          f"this project reads {QUANT_METHOD!r} folders (written by minibert/minigpt.quantize)")
    _convert(model, list(quantization_config.get("modules_to_not_convert", [])),
             bool(quantization_config.get("quantize_embeddings", True)), from_float=False)


def _convert(model: nn.Module, kept: list[str], quantize_embeddings: bool, from_float: bool) -> None:
    for name, module in list(model.named_modules()):
        if name in kept:
            continue
        if isinstance(module, nn.Linear):
            new = (Int8Linear.from_linear(module) if from_float else
                   Int8Linear(module.in_features, module.out_features, module.bias is not None))
        elif isinstance(module, nn.Embedding) and quantize_embeddings:
            new = (Int8Embedding.from_embedding(module) if from_float else
                   Int8Embedding(module.num_embeddings, module.embedding_dim))
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


def int8_kernel_available(device=None, kernel: str = "int_mm") -> bool:
    """Whether the kernel runs here: a tiny product checked against the exact answer."""
    try:
        if kernel == "fbgemm":
            if torch.device(device or "cpu").type != "cpu":
                return False
            layer = Int8Linear.from_linear(nn.Linear(8, 2))
            return fbgemm_linear(layer, torch.zeros(1, 8)).shape == (1, 2)
        a = torch.ones(2, 8, dtype=torch.int8, device=device)
        return int(torch._int_mm(a, a.new_ones(8, 8))[0, 0]) == 8
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def use_int8_kernel(model: nn.Module, kernel="int_mm") -> str:
    """Switch every Int8Linear of the model to an int8 kernel: "int_mm" (True), "fbgemm", or back to
    "textbook" (False). Where the kernel does not run, one line says so and the textbook path stays.
    Returns the kernel in use."""
    kernel = {True: "int_mm", False: "textbook"}.get(kernel, kernel)
    if kernel not in KERNELS:
        raise ConfigError(f"int8 kernel must be one of {KERNELS}, got {kernel!r}")
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    if kernel != "textbook" and layers and not int8_kernel_available(layers[0].weight.device, kernel):
        what = ("torch._int_mm (int8 x int8 -> int32)" if kernel == "int_mm"
                else "torch.ao's quantized linear_dynamic (fbgemm)")
        warnings.warn(f"{what} is not available on {layers[0].weight.device} with torch {torch.__version__}; "
                      "the int8 model runs the textbook path (dequantize, then multiply in float32): same "
                      "numbers, slower", stacklevel=2)
        kernel = "textbook"
    for layer in layers:
        layer.kernel = kernel
    return kernel


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules())
