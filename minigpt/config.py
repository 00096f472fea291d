"""GPTConfig: the hyper-parameters of a GPT-2 style decoder, as one validated dataclass.

The field names are GPT-2's (`n_layer`, `n_head`, `n_embd`, `vocab_size`, `n_inner`,
`layer_norm_epsilon`, `activation_function`) plus nanoGPT's `block_size` (the longest context,
T_max) and one `dropout` for every dropout layer. A Hugging Face GPT-2 config.json loads too:
its `n_positions` becomes `block_size` and `resid_pdrop` becomes `dropout` (GPT-2 uses the same
value for `embd_pdrop` and `attn_pdrop`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Optional

from common.nn.attention import ATTN_IMPLS
from common.nn.blocks import ACTIVATIONS
from common.hub.config import PretrainedConfig, require
from common.errors import ConfigError

PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")

# Hugging Face GPT-2 keys that say the same thing under another name; read once, then dropped.
HF_RENAMED_KEYS = ("n_positions", "n_ctx", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value) -> bool:
    return _is_int(value) and value > 0


def _is_number(value) -> bool:
    """A finite int or float (a string "0.1" from a hand-edited config.json is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    n_inner: Optional[int] = None  # width of the feed-forward layer; None means 4 * n_embd
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
        require(_is_number(self.dropout) and 0.0 <= self.dropout < 1.0, "dropout",
                f"a dropout probability must be a number in [0, 1), got {self.dropout!r}")
        require(_is_number(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0, "layer_norm_epsilon",
                f"must be a positive number, got {self.layer_norm_epsilon!r}")
        require(_is_number(self.initializer_range) and self.initializer_range >= 0, "initializer_range",
                f"must be a number >= 0, got {self.initializer_range!r}")
        for name in ("bias", "tie_word_embeddings"):
            require(isinstance(getattr(self, name), bool), name,
                    f"must be true or false, got {getattr(self, name)!r}")
        require(self.activation_function in ACTIVATIONS, "activation_function",
                f"unknown {self.activation_function!r}; choose one of {sorted(ACTIVATIONS)}")
        require(self.attn_impl in ATTN_IMPLS, "attn_impl",
                f"must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        require(self.problem_type in PROBLEM_TYPES, "problem_type",
                f"must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        require(_is_positive_int(self.n_inner), "n_inner",
                f"must be a positive integer or null (= 4 * n_embd), got {self.n_inner!r}")
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            require(value is None or (_is_int(value) and 0 <= value < self.vocab_size), name,
                    f"must be null or a token id in [0, vocab_size={self.vocab_size}), got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides):
        if "n_positions" in d and "block_size" not in d:
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
