"""GPTConfig: the hyper-parameters of a GPT-2 style decoder, as one validated dataclass.

The field names are GPT-2's (`n_layer`, `n_head`, `n_embd`, `vocab_size`, `n_inner`,
`layer_norm_epsilon`, `activation_function`) plus nanoGPT's `block_size` (the longest context,
T_max) and one `dropout` for every dropout layer. A Hugging Face GPT-2 config.json loads too:
its `n_positions` becomes `block_size` and `resid_pdrop` becomes `dropout` (GPT-2 uses the same
value for `embd_pdrop` and `attn_pdrop`).

Five switches turn the GPT-2 shape (the default) into the Llama shape (LLAMA_SHAPE below):

    position_embedding  "learned": h_0 = W_te[x_t] + W_pe[p_t]   (GPT-2: a table of block_size rows)
                        "rope":    h_0 = W_te[x_t]; q, k rotated by p theta_i inside attention,
                                   theta_i = rope_theta^(-2i/d)   (common/nn/rope.py)
    normalization       "layernorm": gamma (x - mean) / sqrt(var + eps) + beta
                        "rmsnorm":   x / sqrt(mean(x^2) + eps) * weight   (common/nn/norms.py)
    feed_forward        "gelu":   act(x W_1 + b_1) W_2 + b_2, act = activation_function, width n_inner
                        "swiglu": W_2 (silu(x W_1) * (x W_3)), width n_inner (common/nn/blocks.py)
                        "none":   no feed-forward sub-layer (an attention-only model, for interpret/)
    n_kv_head           key/value heads; n_head / n_kv_head query heads share each one (grouped-query
                        attention; 1 = multi-query; None = n_head, multi-head). The KV cache holds
                        n_kv_head heads: n_head / n_kv_head times less memory.
    bias, tie_word_embeddings   biases in every Linear and LayerNorm; LM head = W_te^T or its own matrix.

A Hugging Face LlamaForCausalLM config.json (model_type "llama") is mapped onto these fields by
hf_llama_to_minigpt; a model_type this package does not read is one error naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

from common.nn.attention import ATTENTION_FUNCTIONS
from common.nn.blocks import ACTIVATIONS, FEED_FORWARDS
from common.nn.norms import NORMS
from common.hub.config import PretrainedConfig, check_special_token_ids, is_int, is_number, require
from common.errors import ConfigError

PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")

# Hugging Face GPT-2 keys that say the same thing under another name; read once, then dropped.
HF_RENAMED_KEYS = ("n_positions", "n_ctx", "resid_pdrop", "embd_pdrop", "attn_pdrop")


POSITION_EMBEDDINGS = ("learned", "rope")

# The four Llama switches (and no biases); GPTConfig(**LLAMA_SHAPE, ...) is a Llama-shaped GPT.
LLAMA_SHAPE = dict(position_embedding="rope", normalization="rmsnorm", feed_forward="swiglu", bias=False)

# model_type values of a config.json that GPTConfig reads ("minigpt" is ours; None: a hand-written one).
READABLE_MODEL_TYPES = (None, "minigpt", "gpt2", "llama")


def swiglu_width(n_embd: int) -> int:
    """8d/3 rounded up to a multiple of 8 (d = n_embd): three (d x I) matrices with the parameters of
    GPT-2's two (d x 4d) ones (3 d I = 8 d^2), the sizing of the Llama paper."""
    return 8 * -(-8 * n_embd // 24)


def _is_positive_int(value) -> bool:
    return is_int(value) and value > 0


@dataclasses.dataclass
class GPTConfig(PretrainedConfig):
    model_type: ClassVar[str] = "minigpt"

    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    vocab_size: int = 50257
    dropout: float = 0.0
    bias: bool = True
    tie_word_embeddings: bool = True
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"
    attn_impl: str = "eager"
    n_inner: Optional[int] = None  # feed-forward width; None: 4 * n_embd (gelu), swiglu_width (swiglu)
    position_embedding: str = "learned"  # "learned" (GPT-2) or "rope" (Llama)
    rope_theta: float = 10000.0  # RoPE's base: theta_i = rope_theta^(-2i / head_dim)
    normalization: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama); eps = layer_norm_epsilon
    feed_forward: str = "gelu"  # "gelu" (GPT-2, with activation_function), "swiglu" (Llama) or "none"
    n_kv_head: Optional[int] = None  # key/value heads (grouped-query attention); None means n_head
    initializer_range: float = 0.02
    pad_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None
    num_labels: int = 2  # used by GPTForSequenceClassification only
    problem_type: Optional[str] = None
    extra: Optional[dict] = None

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "num_labels"):
            value = getattr(self, name)
            require(_is_positive_int(value), name, f"must be a positive integer, got {value!r}")
        require(self.n_embd % self.n_head == 0, "n_embd",
                f"must be divisible by n_head ({self.n_embd} % {self.n_head} = {self.n_embd % self.n_head}); "
                "each head gets n_embd / n_head dimensions")
        require(is_number(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout",
                f"a dropout probability must be a number in [0, 1), got {self.dropout!r}")
        require(is_number(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0, "layer_norm_epsilon",
                f"must be a positive number, got {self.layer_norm_epsilon!r}")
        require(is_number(self.initializer_range) and self.initializer_range >= 0, "initializer_range",
                f"must be a number >= 0, got {self.initializer_range!r}")
        for name in ("bias", "tie_word_embeddings"):
            require(isinstance(getattr(self, name), bool), name,
                    f"must be true or false, got {getattr(self, name)!r}")
        require(self.activation_function in ACTIVATIONS, "activation_function",
                f"unknown {self.activation_function!r}; choose one of {sorted(ACTIVATIONS)}")
        require(self.attn_impl in ATTENTION_FUNCTIONS, "attn_impl",  # the registry of common/nn/attention.py
                f"must be one of {tuple(ATTENTION_FUNCTIONS)}, got {self.attn_impl!r}")
        require(self.problem_type in PROBLEM_TYPES, "problem_type",
                f"must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        for name, allowed in (("position_embedding", POSITION_EMBEDDINGS), ("normalization", NORMS),
                              ("feed_forward", FEED_FORWARDS)):
            require(getattr(self, name) in allowed, name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        require(is_number(self.rope_theta) and self.rope_theta > 0, "rope_theta",
                f"must be a positive number, got {self.rope_theta!r}")
        if self.position_embedding == "rope":
            require(self.head_dim % 2 == 0, "n_embd", f"RoPE rotates pairs of dimensions, so n_embd / n_head "
                    f"must be even; got {self.n_embd} / {self.n_head} = {self.head_dim}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        require(_is_positive_int(self.n_kv_head) and self.n_head % self.n_kv_head == 0, "n_kv_head",
                f"must be a positive integer dividing n_head={self.n_head} (each key/value head serves "
                f"n_head / n_kv_head query heads), got {self.n_kv_head!r}")
        if self.n_inner is None:
            self.n_inner = swiglu_width(self.n_embd) if self.feed_forward == "swiglu" else 4 * self.n_embd
        require(_is_positive_int(self.n_inner), "n_inner",
                f"must be a positive integer or null (= 4 * n_embd), got {self.n_inner!r}")
        check_special_token_ids(self, ("pad_token_id", "eos_token_id"))  # outside the vocabulary: kept, warned

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides):
        model_type = d.get("model_type")
        if model_type not in READABLE_MODEL_TYPES:
            raise ConfigError(f"model_type: {model_type!r} is not a model minigpt reads; it reads "
                              f"{', '.join(repr(t) for t in READABLE_MODEL_TYPES if t)} folders")
        if model_type == "llama":
            d = hf_llama_to_minigpt(d)
        elif "n_positions" in d and "block_size" not in d:
            d = hf_gpt2_to_minigpt(d)
        return super().from_dict(d, **overrides)


def hf_gpt2_to_minigpt(d: dict[str, Any]) -> dict[str, Any]:
    """Rename the fields of a transformers GPT2Config dict to GPTConfig's; refuse the GPT-2
    variants this model does not implement (they would silently give other numbers)."""
    if not d.get("scale_attn_weights", True):
        raise ConfigError("scale_attn_weights: false is not supported; minigpt always divides "
                          "attention scores by sqrt(d_k) (set it to true or use another model)")
    if d.get("scale_attn_by_inverse_layer_idx", False):
        raise ConfigError("scale_attn_by_inverse_layer_idx: true is not supported by minigpt "
                          "(set it to false or use another model)")
    if d.get("add_cross_attention", False):
        raise ConfigError("add_cross_attention: true is not supported by minigpt (a decoder-only "
                          "language model); load an encoder-decoder checkpoint with another model")
    out = {k: v for k, v in d.items() if k not in HF_RENAMED_KEYS}
    out["block_size"] = d["n_positions"]
    out["dropout"] = d.get("resid_pdrop", 0.0)
    out["bias"] = True  # every GPT-2 Linear and LayerNorm has a bias
    if "num_labels" not in d and isinstance(d.get("id2label"), dict):
        out["num_labels"] = len(d["id2label"])
    return out


# LlamaConfig name -> GPTConfig name; read once, then dropped.
LLAMA_RENAMED_KEYS = {
    "num_hidden_layers": "n_layer", "num_attention_heads": "n_head", "hidden_size": "n_embd",
    "max_position_embeddings": "block_size", "intermediate_size": "n_inner",
    "num_key_value_heads": "n_kv_head", "rms_norm_eps": "layer_norm_epsilon",
    "attention_dropout": "dropout",
}


def _llama_rope_theta(d: dict[str, Any]) -> float:
    """rope_theta from a Llama config: a top-level key (transformers 4) or inside rope_parameters /
    rope_scaling (transformers 5). Only the plain rotation is implemented: a scaled one is refused."""
    theta = d.get("rope_theta")
    for key in ("rope_parameters", "rope_scaling"):
        rope = d.get(key)
        if not rope:
            continue
        kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
        if kind != "default":
            raise ConfigError(f"{key}: rope_type {kind!r} is not supported; minigpt implements the plain "
                              "rotation (rope_type \"default\") only")
        theta = rope.get("rope_theta", theta)
    return 10000.0 if theta is None else theta


def hf_llama_to_minigpt(d: dict[str, Any]) -> dict[str, Any]:
    """Map a transformers LlamaConfig dict onto GPTConfig's fields (the Llama shape: RoPE, RMSNorm,
    SwiGLU, n_kv_head); refuse what this model does not implement rather than compute other numbers."""
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act: {d['hidden_act']!r} is not supported for a Llama model; "
                          "minigpt's SwiGLU uses silu")
    if d.get("attention_bias", False) != d.get("mlp_bias", False):
        raise ConfigError("attention_bias and mlp_bias differ; minigpt has one `bias` switch for both "
                          "(set them equal or use another model)")
    n_embd, n_head = d.get("hidden_size"), d.get("num_attention_heads")
    head_dim = d.get("head_dim")
    if head_dim is not None and is_int(n_embd) and is_int(n_head) and n_head and head_dim != n_embd // n_head:
        raise ConfigError(f"head_dim: {head_dim} differs from hidden_size / num_attention_heads = "
                          f"{n_embd // n_head}; minigpt requires them equal")
    out = {k: v for k, v in d.items()
           if k not in LLAMA_RENAMED_KEYS and k not in ("rope_theta", "rope_scaling", "rope_parameters",
                                                        "model_type", "head_dim")}
    out.update({ours: d[theirs] for theirs, ours in LLAMA_RENAMED_KEYS.items() if theirs in d})
    out.update(LLAMA_SHAPE, bias=bool(d.get("attention_bias", False)), rope_theta=_llama_rope_theta(d),
               tie_word_embeddings=bool(d.get("tie_word_embeddings", False)))
    for name in ("eos_token_id", "pad_token_id"):
        if isinstance(out.get(name), list):  # Llama 3 lists several end tokens; generate stops at one
            out[name] = out[name][0] if out[name] else None
    return out
