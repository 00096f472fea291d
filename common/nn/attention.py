"""Scaled dot-product attention and multi-head attention, written out by hand.

Vaswani et al. (2017), eq. 1, with an attention mask M (0 = allowed, very negative = blocked):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V

Multi-head attention projects the width-d input h times into d_k = d / h dimensional heads,
attends in each head independently, and concatenates the heads again (notation: docs/notation.md;
the code's shape comments write the heads H = h):

    head_i = Attention(X W_i^Q, Y W_i^K, Y W_i^V)        (Y = X for self-attention)
    MultiHead(X, Y) = Concat(head_1, ..., head_h) W^O     (W^O applied once)

W^O is optional here (`output_projection=True` creates it as `out_proj`): BERT keeps W^O in its
residual + LayerNorm sub-layer (`attention.output.dense`), so its checkpoints need it outside.

Why written out instead of calling `torch.nn.functional.scaled_dot_product_attention`? So that
every step (scores, mask, softmax, dropout, weighted sum) is a line you can read and test.

The attention implementation is chosen once per model, as transformers' `attn_implementation`: the
config's `attn_impl` names an entry of ATTENTION_FUNCTIONS, and the model calls
set_attn_implementation(self, config.attn_impl) once after building its layers (no block or layer
constructor takes it). The registry:

    "eager"  scaled_dot_product_attention below, the hand-written default the course teaches
    "sdpa"   PyTorch's fused kernel (sdpa_attention), an explicit opt-in fast path and test oracle
    "flash"  FlashAttention's tiled online softmax in plain PyTorch (common/nn/flash_attention.py):
             O(T) memory instead of the (T_q, T_k) score matrix, a backward that recomputes

Every entry has one signature, the one of scaled_dot_product_attention's first six arguments:

    fn(query (B, H, T_q, d_k), key (B, H, T_k, d_k), value (B, H, T_k, d_v), mask bool or None,
       dropout_p, training) -> (output (B, H, T_q, d_v), weights (B, H, T_q, T_k) or None)

Adding one is a line next to the others in ATTENTION_FUNCTIONS (with its import at the top of this
file), after which `GPTConfig(attn_impl=NAME)` and `BertConfig(attn_impl=NAME)` accept it. A call that
asks for the weights (output_attentions=True) always runs "eager": only it forms them. The tests
check every entry against "eager" (tests/test_attention.py).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.nn.checkpointing import run_attention
from common.nn.dropout import dropout
from common.nn.flash_attention import flash_attention
from common.nn.masks import mask_value
from common.nn.rope import apply_rope

# BEGIN EXERCISE attention
def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    training: bool = False,
    need_weights: bool = False,
    scale: Optional[float] = None,
    bias: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """softmax(Q K^T / sqrt(d_k) + M) V.

    query: (B, H, T_q, d_k); key: (B, H, T_k, d_k); value: (B, H, T_k, d_v).
    mask: bool, broadcastable to (B, H, T_q, T_k), True = may attend (see common.nn.masks).
    Dropout is applied to the attention weights, and only when `training` is True.
    scale: the factor on Q K^T instead of 1 / sqrt(d_k) (T5 passes 1.0: it folds 1 / sqrt(d_k) into
    its initialisation of W^Q). bias: float, broadcastable to (B, H, T_q, T_k), added to the scores
    before the mask (T5's relative position bias): softmax(Q K^T * scale + bias + M) V.
    Returns (output (B, H, T_q, d_v), weights (B, H, T_q, T_k) or None).
    """
    d_k = query.size(-1)
    if scale is None:
        scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)  # (B, H, T_q, T_k)
    else:
        scores = query @ key.transpose(-2, -1) * scale  # (B, H, T_q, T_k)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, mask_value(scores.dtype))
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    if training and dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)  # common/nn/dropout.py
    output = weights @ value  # (B, H, T_q, d_v)
    return output, (weights if need_weights else None)
# END EXERCISE attention


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """The same computation through PyTorch's fused kernel (opt-in fast path, and test oracle).

    A fully blocked row gives NaN (older torch) or 0 in the fused kernel, while the hand-written
    path gives it equal scores, i.e. a uniform average of the values. To match it exactly we
    unblock such a row AND zero its query, so its scores are all equal here too.
    """
    if mask is not None:
        has_key = mask.any(dim=-1, keepdim=True)  # (B, H, T_q, 1)
        mask = mask | ~has_key
        query = query.masked_fill(~has_key, 0.0)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout_p if training else 0.0
    )


def _sdpa_entry(query, key, value, mask=None, dropout_p=0.0, training=False):
    """The registry's "sdpa": sdpa_attention with the registry's return value (no weights)."""
    return sdpa_attention(query, key, value, mask, dropout_p, training), None


# name -> attention function, the signature in the module docstring; add an implementation here.
ATTENTION_FUNCTIONS: dict[str, Callable] = {
    "eager": scaled_dot_product_attention,
    "sdpa": _sdpa_entry,
    "flash": flash_attention,
}


def check_attn_implementation(name: str) -> None:
    """ValueError naming the registered implementations unless `name` is one."""
    if name not in ATTENTION_FUNCTIONS:
        raise ValueError(f"attn_impl must be one of {tuple(ATTENTION_FUNCTIONS)}, got {name!r}")


def set_attn_implementation(model: nn.Module, name: str) -> nn.Module:
    """Make every MultiHeadAttention inside `model` attend with ATTENTION_FUNCTIONS[name]; returns model.

    The one place the choice is made: a model calls it once with its config's attn_impl, and a user
    may call it again later (model.config.attn_impl is updated too, so a save keeps the choice)."""
    check_attn_implementation(name)
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.attn_impl = name
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "attn_impl"):
        config.attn_impl = name
    return model


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention's sharing of keys and values (Ainslie et al. 2023):
    (B, H_kv, T, d_k) -> (B, H_kv * n_rep, T, d), kv head j repeated for query heads j n_rep .. j n_rep + n_rep - 1.

    With H query heads and H_kv = H / n_rep key/value heads, query head h attends with kv head
    h // n_rep. n_rep = 1 is multi-head attention; H_kv = 1 is multi-query attention (Shazeer 2019).
    Only H_kv heads are projected and cached, which is the point: the KV cache shrinks n_rep times.
    """
    if n_rep == 1:
        return x
    B, H_kv, T, d = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, d).reshape(B, H_kv * n_rep, T, d)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, d) -> (B, H, T, d_k), d_k = d / H."""
    B, T, d = x.shape
    return x.view(B, T, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d_k) -> (B, T, H d_k) = (B, T, d): concatenate the heads."""
    B, H, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d_k)


class KVCache:
    """A preallocated key/value cache for one attention layer, for fast generation.

    Generating token t+1 needs the keys and values of tokens 1..t. Recomputing them costs
    O(t) rows through W^K and W^V per layer per step; caching them costs one write. Attention
    itself still reads all t cached keys (O(t) per step): T tokens cost O(T^2), not O(T^3). The buffers are allocated once at
    full size (B, H, max_length, d) so a step never reallocates or copies the past.
    """

    def __init__(self, batch_size: int, num_heads: int, max_length: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device=None):
        shape = (batch_size, num_heads, max_length, head_dim)
        self.key = torch.zeros(shape, dtype=dtype, device=device)
        self.value = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # how many positions are filled

    @property
    def max_length(self) -> int:
        return self.key.size(2)

    # BEGIN EXERCISE kv_cache
    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new (B, H, T_new, d_k) keys/values after the filled part; return all of them
        (B, H, length + T_new, d) as views of the buffers."""
        start, end = self.length, self.length + key.size(2)
        if end > self.max_length:
            raise ValueError(
                f"KV cache overflow: {end} positions needed, cache holds {self.max_length}; "
                "allocate a longer cache (max_length) or crop the context."
            )
        self.key[:, :, start:end] = key
        self.value[:, :, start:end] = value
        self.length = end
        return self.key[:, :, :end], self.value[:, :, :end]
    # END EXERCISE kv_cache


class MultiHeadAttention(nn.Module):
    """Multi-head attention for self-attention (Y = X) and cross-attention (Y = encoder output).

    Parameters are named as in BERT (`query`, `key`, `value`) so checkpoints load unchanged;
    with output_projection=True the module also applies W^O (`out_proj`).
    forward(hidden_states (B, T_q, d), key_value_states (B, T_k, d) or None, mask bool broadcastable
    to (B, H, T_q, T_k), kv_cache, rotary = RoPE's (cos, sin) or None)
        -> (context (B, T_q, d), weights (B, H, T_q, T_k) or None).
    num_kv_heads < num_heads projects (and caches) only that many key/value heads (see repeat_kv).
    attn_impl: the registry entry it attends with, "eager" until set_attn_implementation says otherwise.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 output_projection: bool = False,
                 num_kv_heads: Optional[int] = None):
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})"
            )
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads  # < num_heads: grouped-query attention (see repeat_kv)
        self.head_dim = hidden_size // num_heads
        self.dropout_p = dropout
        self.attn_impl = "eager"  # chosen per model: set_attn_implementation
        self.gradient_checkpointing = False  # "selective": the core is recomputed (gradient_checkpointing_enable)
        kv_size = num_kv_heads * self.head_dim
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.key = nn.Linear(hidden_size, kv_size, bias=bias)
        self.value = nn.Linear(hidden_size, kv_size, bias=bias)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=bias) if output_projection else None
        self.pruned_heads: set[int] = set()  # heads removed by prune_heads, numbered as built

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
        output_attentions: bool = False,
        rotary: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        source = hidden_states if key_value_states is None else key_value_states
        q = split_heads(self.query(hidden_states), self.num_heads)  # (B, H, T_q, d_k)
        k = split_heads(self.key(source), self.num_kv_heads)  # (B, H_kv, T_k, d_k)
        v = split_heads(self.value(source), self.num_kv_heads)  # (B, H_kv, T_k, d_k)
        if rotary is not None:  # RoPE (common/nn/rope.py): rotate q and k by their positions' angles
            cos, sin = rotary  # (B, T, d_k) each
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, H_kv, T_past + T_k, d): the cache holds H_kv heads
        n_rep = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T_k, d_k)
        if output_attentions:  # only the hand-written path forms the weights
            out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout_p, self.training,
                                                        need_weights=True)
        else:
            # "selective" checkpointing recomputes the (T x T) core in the backward (common/nn/checkpointing.py);
            # "flash" recomputes inside its own backward, "sdpa" is torch's kernel: only "eager" keeps P
            granularity = self.gradient_checkpointing if self.attn_impl == "eager" else False
            out, weights = run_attention(self, granularity, ATTENTION_FUNCTIONS[self.attn_impl],
                                         q, k, v, mask, self.dropout_p, self.training)
        context = merge_heads(out)  # (B, T_q, d)
        if self.out_proj is not None:
            context = self.out_proj(context)
        return context, weights

    def prune_heads(self, heads, output_linear: Optional[nn.Linear] = None) -> None:
        """Remove heads physically (Michel et al. 2019; transformers' prune_heads): head i owns rows
        i d .. i d + d - 1 of W^Q, W^K, W^V (and their biases) and the same columns of W^O, so dropping
        those rows and columns computes exactly what zeroing the head's output before W^O computes.
        heads: indices as the module was built (already pruned ones are ignored); W^O is out_proj,
        or output_linear when it lives outside (BERT's attention.output.dense). At least one head stays.
        """
        if self.num_kv_heads != self.num_heads:
            raise ValueError("prune_heads: grouped-query attention shares key/value heads; prune a "
                             "multi-head attention model")
        built = self.num_heads + len(self.pruned_heads)
        if any(not 0 <= int(h) < built for h in heads):
            raise ValueError(f"prune_heads: head indices must be in [0, {built}), got {sorted(heads)}")
        remove = {int(h) for h in heads} - self.pruned_heads
        current = [h for h in range(built) if h not in self.pruned_heads]  # built numbers, in order
        keep = [i for i, h in enumerate(current) if h not in remove]
        if not keep:
            raise ValueError(f"prune_heads: removing heads {sorted(remove)} would leave no head in this layer; keep one")
        d = self.head_dim
        rows = torch.cat([torch.arange(i * d, (i + 1) * d) for i in keep]).to(self.query.weight.device)
        for linear in (self.query, self.key, self.value):
            _keep_slices(linear, rows, dim=0)
        output_linear = output_linear if output_linear is not None else self.out_proj
        if output_linear is not None:
            _keep_slices(output_linear, rows, dim=1)
        self.num_heads = self.num_kv_heads = len(keep)
        self.pruned_heads |= remove


def _keep_slices(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep only `index` along the output (dim 0: rows and bias) or input (dim 1: columns) of a Linear."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, index).clone(),
                                     requires_grad=linear.weight.requires_grad)
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[index].clone(), requires_grad=linear.bias.requires_grad)
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)
