"""T5Config: the sizes and rates of a T5 encoder-decoder, with transformers' field names and defaults.

The defaults are T5-small (Raffel et al. 2020): d_model = 512, 6 encoder and 6 decoder layers of 8
heads with d_kv = 64 dimensions each (inner width H * d_kv = 512), feed-forward width d_ff = 2048,
a vocabulary of 32128 SentencePiece pieces (32000 + 100 sentinels <extra_id_N> + padding to a
multiple of 128), relative position bias with 32 log-spaced buckets reaching 128 tokens.

feed_forward_proj chooses the feed-forward sub-layer:
    "relu"        FFN(x) = ReLU(x W_i) W_o                          (T5)
    "gated-gelu"  FFN(x) = (GELU_tanh(x W_i0) * (x W_i1)) W_o        (T5 v1.1, Flan-T5)
("gelu" and "gated-relu" are read too, as transformers reads them.)

Token ids T5 fixes: pad = 0, eos = 1, and the decoder starts from the pad id (decoder_start_token_id
= 0). A config.json written by transformers loads as is: keys we do not use are kept in `extra`.

No field is a training switch: the speed trick of the training tools (the LM head only where the
loss reads, minit5/logits_at_labels.py) is the forward argument `logits_at_labels_only`, never saved.
A config.json written before that change may hold the key: it is ignored, with one warning.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

from common.hub.config import PretrainedConfig, is_int, is_number, require

FEED_FORWARD_PROJS = ("relu", "gelu", "gated-relu", "gated-gelu")




@dataclasses.dataclass
class T5Config(PretrainedConfig):
    """The configuration of T5Model, T5ForConditionalGeneration and T5EncoderModel.
    Invalid values raise ConfigError naming the field."""

    model_type: ClassVar[str] = "t5"
    RETIRED_FIELDS: ClassVar[dict[str, str]] = {
        "logits_at_labels_only": "now an argument of forward, passed by the training tools, never saved"}

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: Optional[int] = None  # None: as many as num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: Optional[int] = 0  # None (as transformers writes it): pad_token_id
    extra: Optional[dict] = None

    def __post_init__(self):
        super().__post_init__()
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.pad_token_id  # T5's rule: the decoder starts from pad
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                     "num_heads", "relative_attention_num_buckets", "relative_attention_max_distance"):
            value = getattr(self, name)
            require(is_int(value) and value > 0, name, f"must be a positive integer, got {value!r}")
        require(self.relative_attention_num_buckets >= 4, "relative_attention_num_buckets",
                f"must be at least 4 (half for each direction, half of those exact), "
                f"got {self.relative_attention_num_buckets}")
        require(is_number(self.dropout_rate) and 0.0 <= self.dropout_rate < 1.0, "dropout_rate",
                f"a dropout probability must be a number in [0, 1), got {self.dropout_rate!r}")
        require(is_number(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0, "layer_norm_epsilon",
                f"must be a positive number, got {self.layer_norm_epsilon!r}")
        require(is_number(self.initializer_factor) and self.initializer_factor >= 0, "initializer_factor",
                f"must be a number >= 0, got {self.initializer_factor!r}")
        require(self.feed_forward_proj in FEED_FORWARD_PROJS, "feed_forward_proj",
                f"unknown {self.feed_forward_proj!r}; use 'relu' (T5) or 'gated-gelu' (T5 v1.1, Flan-T5)")
        require(isinstance(self.tie_word_embeddings, bool), "tie_word_embeddings",
                f"must be true or false, got {self.tie_word_embeddings!r}")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            require(is_int(value) and 0 <= value < self.vocab_size, name,
                    f"must be a token id in [0, vocab_size={self.vocab_size}), got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides):
        """transformers >= 5 writes tie_word_embeddings: true for every T5 and says with
        scale_decoder_outputs whether the head is T5's (tied and rescaled, true) or T5 v1.1's
        (its own lm_head, no rescale, false). Here one field says both: tie_word_embeddings."""
        if "scale_decoder_outputs" in d:
            scale = bool(d["scale_decoder_outputs"])
            d = {k: v for k, v in d.items() if k != "scale_decoder_outputs"}
            d["tie_word_embeddings"] = scale
        return super().from_dict(d, **overrides)

    @property
    def is_gated_act(self) -> bool:
        """True for the gated feed-forward (two input matrices wi_0, wi_1)."""
        return self.feed_forward_proj.startswith("gated-")

    @property
    def dense_act_fn(self) -> str:
        """The activation's name in common.nn.blocks.ACTIVATIONS. transformers reads "gated-gelu" as
        the tanh approximation of GELU ("gelu_new"), the function T5 v1.1 was trained with."""
        act = self.feed_forward_proj.split("-")[-1]
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else act

    @property
    def inner_dim(self) -> int:
        """H * d_kv, the width of Q, K, V (need not equal d_model)."""
        return self.num_heads * self.d_kv
