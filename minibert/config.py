"""BertConfig: every size and rate of a BERT model, with transformers' field names and defaults.

The defaults are BERT-base (Devlin et al. 2019, section 3): L = 12 layers, H = 768 hidden units,
A = 12 attention heads (d_k = H / A = 64), feed-forward size 4H = 3072, vocabulary 30522.

Fields that are ours, not transformers':
    attn_impl                  "eager" (hand-written attention, the default), "sdpa" (PyTorch's kernel) or
                               "flash" (the tiled online softmax, O(T) memory: common/nn/flash_attention.py)
    mlm_alpha, nsp_beta        the weights of the pre-training loss  L = alpha * L_MLM + beta * L_NSP
    classifier_pooling         "cls" (BERT's, the default) or "mean": the vector the sequence
                               classifier reads, c = tanh(m W_p + b_p) with m = H_L[:, 0] or the
                               mean of H_L over the kept positions (the name and values of
                               transformers' ModernBertConfig). An MLM-only checkpoint never trained
                               its [CLS] output, its mean is the better start

A config.json written by transformers loads as is: keys we do not use (`architectures`,
`torch_dtype`, `_attn_implementation`, ...) are kept in `extra` and written back on save.

No field is a training switch: the speed trick of minibert.pretrain (the last layer and the MLM head
only where the loss reads, minibert/masked_only.py) is the forward argument `mlm_logits_at_masked_only`
of BertForPreTraining and BertForMaskedLM, never saved. A config.json written before that change may
hold the key: it is ignored, with one warning.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

from common.nn.attention import ATTENTION_FUNCTIONS
from common.nn.blocks import ACTIVATIONS
from common.hub.config import PretrainedConfig, check_special_token_ids, is_int, is_number, require
from common.errors import ConfigError

CLASSIFIER_POOLINGS = ("cls", "mean")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")




@dataclasses.dataclass
class BertConfig(PretrainedConfig):
    """The configuration of BertModel and its heads. Invalid values raise ConfigError naming the field.

    num_labels (heads that classify) defaults to len(id2label) when id2label is given, else 2;
    id2label / label2id default to LABEL_0, LABEL_1, ... as in transformers.
    """

    model_type: ClassVar[str] = "bert"
    RETIRED_FIELDS: ClassVar[dict[str, str]] = {
        "mlm_logits_at_masked_only": "now an argument of forward, passed by minibert.pretrain, never saved"}

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: Optional[int] = 0
    num_labels: Optional[int] = None
    id2label: Optional[dict[int, str]] = None
    label2id: Optional[dict[str, int]] = None
    problem_type: Optional[str] = None
    classifier_dropout: Optional[float] = None
    attn_impl: str = "eager"
    mlm_alpha: float = 1.0
    nsp_beta: float = 1.0
    classifier_pooling: str = "cls"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            require(is_int(value) and value > 0, name, f"must be a positive integer, got {value!r}")
        require(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                f"{self.hidden_size} is not divisible by num_attention_heads "
                f"({self.num_attention_heads}); each head gets hidden_size / num_attention_heads "
                "dimensions, so pick sizes that divide")
        require(self.hidden_act in ACTIVATIONS, "hidden_act",
                f"unknown activation {self.hidden_act!r}; choose one of {sorted(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if name == "classifier_dropout" and value is None:
                continue  # None = use hidden_dropout_prob, as transformers does
            require(is_number(value) and 0.0 <= value < 1.0, name,
                    f"a dropout probability must be in [0, 1), got {value!r}")
        require(is_number(self.initializer_range) and self.initializer_range >= 0,
                "initializer_range", f"must be a number >= 0, got {self.initializer_range!r}")
        require(is_number(self.layer_norm_eps) and self.layer_norm_eps > 0,
                "layer_norm_eps", f"must be a number > 0, got {self.layer_norm_eps!r}")
        check_special_token_ids(self, ("pad_token_id",))  # outside the vocabulary: kept, warned, unused
        for name in ("mlm_alpha", "nsp_beta"):
            value = getattr(self, name)
            require(is_number(value) and value >= 0, name,
                    f"a loss weight must be a number >= 0, got {value!r}")
        require(self.attn_impl in ATTENTION_FUNCTIONS, "attn_impl",  # the registry of common/nn/attention.py
                f"must be one of {tuple(ATTENTION_FUNCTIONS)}, got {self.attn_impl!r}")
        require(self.problem_type is None or self.problem_type in PROBLEM_TYPES, "problem_type",
                f"must be null or one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        require(self.classifier_pooling in CLASSIFIER_POOLINGS, "classifier_pooling",
                f"must be one of {CLASSIFIER_POOLINGS}, got {self.classifier_pooling!r}")
        self._resolve_labels()
        self._check_supported_extras()

    def _resolve_labels(self) -> None:
        """num_labels, id2label and label2id describe the same labels; fill the missing ones."""
        if self.id2label is not None:
            require(isinstance(self.id2label, dict), "id2label",
                    f"must be a mapping {{id: name}}, got {type(self.id2label).__name__}")
            try:  # config.json stores the ids as strings
                self.id2label = {int(i): str(name) for i, name in self.id2label.items()}
            except ValueError:
                raise ConfigError(f"id2label: keys must be integer ids, got {list(self.id2label)}") from None
            if self.num_labels is None:
                self.num_labels = len(self.id2label)
        if self.num_labels is None:
            self.num_labels = 2
        require(is_int(self.num_labels) and self.num_labels > 0, "num_labels",
                f"must be a positive integer, got {self.num_labels!r}")
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        require(sorted(self.id2label) == list(range(self.num_labels)), "id2label",
                f"must have the ids 0..{self.num_labels - 1} (num_labels={self.num_labels}), "
                f"got {sorted(self.id2label)}")
        if self.label2id is None:
            self.label2id = {name: i for i, name in self.id2label.items()}
        require(isinstance(self.label2id, dict) and len(self.label2id) == self.num_labels,
                "label2id", f"must map {self.num_labels} label names to ids, got {self.label2id!r}")

    def _check_supported_extras(self) -> None:
        """Refuse transformers options this model does not implement, instead of silently
        computing something else."""
        position_type = self.extra.get("position_embedding_type", "absolute")
        require(position_type == "absolute", "position_embedding_type",
                f"only 'absolute' position embeddings are implemented, the config asks for {position_type!r}")
        require(not self.extra.get("is_decoder", False), "is_decoder",
                "BERT as a decoder is not implemented here; use minigpt for causal language models")
        require(self.extra.get("tie_word_embeddings", True), "tie_word_embeddings",
                "this BERT always shares the MLM decoder with the token embeddings; an untied "
                "checkpoint would load one table over the other")

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> "BertConfig":
        """Build from a config.json dict (ours or transformers'); unknown keys go to `extra`.
        An override of num_labels replaces the file's label names (a new classification head)."""
        model_type = d.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(
                f"model_type: this config.json describes a {model_type!r} model, not 'bert'; "
                "load it with the matching model class")
        if "num_labels" in overrides and "id2label" not in overrides:
            d = {k: v for k, v in d.items() if k not in ("id2label", "label2id")}
        merged = {k: v for k, v in cls.drop_retired({**d, **overrides}).items() if k != "model_type"}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in merged.items() if k not in known}
        return cls(**{k: v for k, v in merged.items() if k in known}, extra=extra)

    @property
    def head_dim(self) -> int:
        """d_k = hidden_size / num_attention_heads."""
        return self.hidden_size // self.num_attention_heads
