"""Transformer blocks: the position-wise feed-forward network, BERT's encoder block (post-LN)
and GPT-2's decoder block (pre-LN, with an optional cross-attention sub-layer).

Feed-forward (Vaswani et al. 2017, eq. 2, with GELU instead of ReLU as in BERT and GPT):
    FFN(x) = GELU(x W_1 + b_1) W_2 + b_2
SwiGLU feed-forward (Shazeer 2020, Llama): a gate, silu(x W_1), multiplies a second projection x W_3:
    SwiGLU(x) = (silu(x W_1) * (x W_3)) W_2,    silu(x) = x * sigmoid(x)
GELU (Hendrycks & Gimpel 2016), exact and the tanh approximation used by GPT-2:
    GELU(x)      = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
    GELU_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))

Post-LN (BERT):  h = LayerNorm(x + Dropout(Sublayer(x)))
Pre-LN (GPT-2):  h = x + Dropout(Sublayer(LayerNorm(x)))    (Llama: RMSNorm in place of LayerNorm)
    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * g + b  over the last axis (biased var; g, b: weight, bias)

Which kernels run: LayerNorm is torch's nn.LayerNorm and each activation torch's fused kernel
(FUSED_ACTIVATIONS below), not the chain of operations written here; both are pinned to these
formulas by tests/test_bench.py::test_fused_activation_kernels_equal_the_formulas and
::test_torch_layer_norm_is_the_formula.
Shapes: x (B, T, d); masks bool, broadcastable to (B, H, T_q, T_k), True = may attend.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.nn.attention import KVCache, MultiHeadAttention
from common.nn.dropout import Dropout
from common.nn.norms import make_norm


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU: 0.5 x (1 + erf(x / sqrt(2))). transformers calls it "gelu"."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). transformers: "gelu_new"."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def relu(x: torch.Tensor) -> torch.Tensor:
    """max(0, x), the activation of the original Transformer."""
    return x.clamp_min(0.0)


def silu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x) = x / (1 + exp(-x)) (Elfwing et al. 2017; "swish"), the gate of SwiGLU."""
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "relu": relu,
    "silu": silu,
}


# The same functions as one fused PyTorch kernel each. The formulas above are the definition
# (tests/test_bench.py::test_fused_activation_kernels_equal_the_formulas checks these kernels against
# them to 1e-12 in float64); the layers run the kernels because
# a chain of eight element-wise operations reads and writes a (B, T, 4d) tensor eight times in the
# forward pass and keeps each intermediate for the backward pass, which costs more than the
# matrix products around it in a small model. One kernel reads x once and keeps only x.
FUSED_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def get_activation(name: str, fused: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """Look up an activation by its transformers name; a clear error lists the known ones.
    fused=True gives PyTorch's single-kernel version of the same function (what the layers use)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return FUSED_ACTIVATIONS[name] if fused else ACTIVATIONS[name]


class FeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2, position-wise: (B, T, d) -> (B, T, d).
    Names as GPT-2 (`c_fc`, `c_proj`)."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str = "gelu",
                 bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.act = get_activation(activation, fused=True)
        self.c_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))  # (B, T, d)


FEED_FORWARDS = ("gelu", "swiglu", "none")


class SwiGLU(nn.Module):
    """SwiGLU(x) = (silu(x W_1) * (x W_3)) W_2 (row vectors, W (in, out)): (B, T, d) -> (B, T, d),
    intermediate width I.

    Names as Llama: W_1 = `gate_proj`, W_3 = `up_proj`, W_2 = `down_proj`. Three (d x I) matrices
    instead of two, so I = 8d/3 gives the parameter count of a 4d-wide GELU feed-forward.
    silu runs as PyTorch's fused F.silu; tests/test_bench.py and tests/test_llama.py pin it to `silu` above.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act = get_activation("silu", fused=True)

    # BEGIN EXERCISE swiglu
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.act(self.gate_proj(x))  # (B, T, I) silu(x W_1)
        return self.down_proj(gate * self.up_proj(x))  # (B, T, d)
    # END EXERCISE swiglu


def make_feed_forward(kind: str, hidden_size: int, intermediate_size: int, activation: str,
                      bias: bool) -> Optional[nn.Module]:
    """"gelu": FeedForward with `activation` (GPT-2's tanh GELU by default); "swiglu": SwiGLU;
    "none": no feed-forward sub-layer at all (an attention-only model, Elhage et al. 2021: every
    layer only moves information between positions, which makes its circuits readable)."""
    if kind == "none":
        return None
    if kind == "gelu":
        return FeedForward(hidden_size, intermediate_size, activation, bias=bias)
    if kind == "swiglu":
        return SwiGLU(hidden_size, intermediate_size, bias=bias)
    raise ValueError(f"feed_forward must be one of {FEED_FORWARDS}, got {kind!r}")


class ResidualLayerNorm(nn.Module):
    """BERT's post-LN sub-layer output: LayerNorm(residual + Dropout(x W + b)).
    Names as transformers' BertSelfOutput / BertOutput (`dense`, `LayerNorm`)."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = Dropout(dropout)  # nn.Dropout's distribution, a cheaper draw (common/nn/dropout.py)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class EncoderAttention(nn.Module):
    """Self-attention sub-layer of BERT: LayerNorm(X + Dropout(MultiHead(X))), MultiHead = Concat(heads) W^O;
    `self` computes Concat(head_1..head_h), `output.dense` is the one W^O."""

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float,
                 hidden_dropout: float, eps: float):
        super().__init__()
        self.self = MultiHeadAttention(hidden_size, num_heads, attention_dropout)
        self.output = ResidualLayerNorm(hidden_size, hidden_size, hidden_dropout, eps)

    def forward(self, x, mask=None, output_attentions=False):
        context, weights = self.self(x, mask=mask, output_attentions=output_attentions)
        return self.output(context, x), weights


class Intermediate(nn.Module):
    """First half of BERT's feed-forward: act(x W_1 + b_1), (B, T, d) -> (B, T, 4d)."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.act = get_activation(activation, fused=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class EncoderBlock(nn.Module):
    """BERT layer (post-LN):
        X' = LayerNorm(X + Dropout(MultiHead(X)))                 `attention` (W^O = attention.output.dense)
        Y  = LayerNorm(X' + Dropout(act(X' W_1 + b_1) W_2 + b_2))  `intermediate`, `output`
    Submodule names are transformers' BertLayer names, so `encoder.layer.N.*` keys load as is.
    forward(x (B, T, d), mask) -> (y (B, T, d), attention weights (B, H, T, T) or None).
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int,
                 activation: str = "gelu", hidden_dropout: float = 0.1,
                 attention_dropout: float = 0.1, layer_norm_eps: float = 1e-12):
        super().__init__()
        self.attention = EncoderAttention(hidden_size, num_heads, attention_dropout,
                                          hidden_dropout, layer_norm_eps)
        self.intermediate = Intermediate(hidden_size, intermediate_size, activation)
        self.output = ResidualLayerNorm(intermediate_size, hidden_size, hidden_dropout, layer_norm_eps)

    # BEGIN EXERCISE encoder_block
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                output_attentions: bool = False):
        h, weights = self.attention(x, mask=mask, output_attentions=output_attentions)
        y = self.output(self.intermediate(h), h)
        return y, weights
    # END EXERCISE encoder_block


class DecoderBlock(nn.Module):
    """GPT-2 block (pre-LN), optionally with cross-attention to an encoder's output:
        x = x + Dropout(MultiHead(LN_1(x)))                       causal self-attention (W^O inside)
        x = x + Dropout(MultiHead(LN_c(x), enc))                  only if add_cross_attention
        x = x + Dropout(FFN(LN_2(x)))
    Names as GPT-2 (`ln_1`, `attn`, `ln_cross_attn`, `crossattention`, `ln_2`, `mlp`).
    The Llama block is the same three lines with other parts: norm="rmsnorm" (LN = RMSNorm),
    feed_forward="swiglu" (FFN = SwiGLU), num_kv_heads < num_heads (grouped-query attention) and
    RoPE's (cos, sin) passed as `rotary` to rotate queries and keys.
    forward(x (B, T, d), mask, encoder_hidden_states (B, S, d), encoder_mask, kv_cache, rotary)
        -> (x (B, T, d), self-attention weights or None).
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: Optional[int] = None,
                 activation: str = "gelu_new", dropout: float = 0.0, attention_dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, bias: bool = True,
                 add_cross_attention: bool = False,
                 norm: str = "layernorm", feed_forward: str = "gelu",
                 num_kv_heads: Optional[int] = None):
        super().__init__()
        intermediate_size = intermediate_size or 4 * hidden_size
        self.ln_1 = make_norm(norm, hidden_size, layer_norm_eps, bias)
        self.attn = MultiHeadAttention(hidden_size, num_heads, attention_dropout, bias=bias,
                                       output_projection=True, num_kv_heads=num_kv_heads)
        if add_cross_attention:
            self.ln_cross_attn = make_norm(norm, hidden_size, layer_norm_eps, bias)
            self.crossattention = MultiHeadAttention(hidden_size, num_heads, attention_dropout,
                                                     bias=bias, output_projection=True)
        else:
            self.ln_cross_attn = self.crossattention = None
        self.mlp = make_feed_forward(feed_forward, hidden_size, intermediate_size, activation, bias)
        self.ln_2 = make_norm(norm, hidden_size, layer_norm_eps, bias) if self.mlp is not None else None
        self.dropout = Dropout(dropout)  # common/nn/dropout.py, the one dropout of the project

    # BEGIN EXERCISE decoder_block
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_mask: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None, output_attentions: bool = False,
                rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
        a, weights = self.attn(self.ln_1(x), mask=mask, kv_cache=kv_cache,
                               output_attentions=output_attentions, rotary=rotary)
        x = x + self.dropout(a)
        if self.crossattention is not None:
            if encoder_hidden_states is None:
                raise ValueError("this decoder block has cross-attention: pass encoder_hidden_states")
            c, _ = self.crossattention(self.ln_cross_attn(x), key_value_states=encoder_hidden_states,
                                       mask=encoder_mask)
            x = x + self.dropout(c)
        if self.mlp is not None:  # feed_forward="none": an attention-only block
            x = x + self.dropout(self.mlp(self.ln_2(x)))
        return x, weights
    # END EXERCISE decoder_block
