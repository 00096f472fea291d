"""BERT's encoder (Devlin et al. 2019): embeddings, a stack of post-LN Transformer layers, pooler.

Input representation (section 3.2): the sum of three learned embeddings, then LayerNorm:
    E = LayerNorm(E_token[x_t] + E_position[t] + E_segment[s_t]),   s_t = 0 for sentence A, 1 for B
Encoder (Vaswani et al. 2017, post-LN), for l = 1..L:
    H_l = EncoderBlock(H_{l-1}),   H_0 = Dropout(E)                  (see common/nn/blocks.py)
Pooler (section 3, Devlin's "C", the course's c): the final hidden vector of [CLS] through one dense
layer with tanh:
    c = tanh(H_L[:, 0] W_p + b_p)

Shapes: B batch, T tokens, d = hidden_size, H heads.
Parameter names are transformers' (`embeddings.word_embeddings`, `encoder.layer.N.attention.self.query`,
`pooler.dense`, ...), so a Hugging Face BERT checkpoint loads by name, nothing renamed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from common.nn.attention import set_attn_implementation
from common.nn.blocks import EncoderBlock
from common.nn.checkpointing import run_block
from common.hub.config import in_vocab_token_id
from common.hub.pretrained import PreTrainedModel, check_token_ids
from common.nn.dropout import Dropout
from common.errors import UserError
from common.nn.masks import padding_mask
from minibert.config import BertConfig

# Constant index buffers that old transformers versions saved with the weights; they are not
# parameters (our positions come from torch.arange), so a checkpoint's copy is dropped on load.
LEGACY_BUFFER_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")


@dataclass
class BaseModelOutputWithPooling:
    """What BertModel returns.
    last_hidden_state (B, T, d): H_L;  pooler_output (B, d): c = tanh(H_L[:, 0] W_p + b_p) or None;
    hidden_states: (H_0, ..., H_L) if asked;  attentions: L tensors (B, H, T, T) if asked."""

    last_hidden_state: torch.Tensor
    pooler_output: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


class BertEmbeddings(nn.Module):
    """E = Dropout(LayerNorm(E_token[x] + E_position[t] + E_segment[s])):  (B, T) ids -> (B, T, d).

    The [PAD] row of the token table is kept at zero and gets no gradient (padding_idx)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=in_vocab_token_id(config, "pad_token_id"))
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)  # see common/nn/dropout.py

    # BEGIN EXERCISE embeddings
    def forward(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        T = input_ids.size(1)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is sentence A
        embeddings = (self.word_embeddings(input_ids)  # (B, T, d)
                      + self.position_embeddings(position_ids)  # (1 or B, T, d)
                      + self.token_type_embeddings(token_type_ids))  # (B, T, d)
        return self.dropout(self.LayerNorm(embeddings))
    # END EXERCISE embeddings


class BertEncoder(nn.Module):
    """L post-LN layers, `layer.0` ... `layer.{L-1}`:  H_l = EncoderBlock(H_{l-1})."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            EncoderBlock(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                         activation=config.hidden_act, hidden_dropout=config.hidden_dropout_prob,
                         attention_dropout=config.attention_probs_dropout_prob,
                         layer_norm_eps=config.layer_norm_eps)
            for _ in range(config.num_hidden_layers))
        set_attn_implementation(self, config.attn_impl)  # chosen once per model (common/nn/attention.py)
        self.gradient_checkpointing = False  # or "full" / "selective": gradient_checkpointing_enable()

    def forward(self, hidden_states: torch.Tensor, mask: Optional[torch.Tensor] = None,
                output_attentions: bool = False, output_hidden_states: bool = False):
        """hidden_states (B, T, d), mask bool (B, 1, 1, T) -> (H_L, all H_l or None, weights or None)."""
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layer:
            hidden_states, weights = run_block(layer, self.gradient_checkpointing, hidden_states, mask=mask,
                                               output_attentions=output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(weights)  # (B, H, T, T)
        return (hidden_states,
                tuple(all_hidden) if output_hidden_states else None,
                tuple(all_attentions) if output_attentions else None)


class BertPooler(nn.Module):
    """c = tanh(H_L[:, 0] W_p + b_p): the [CLS] vector, (B, T, d) -> (B, d).

    mean_pooled: c = tanh(m W_p + b_p), m = sum_t a_t H_L[t] / sum_t a_t (a = attention_mask),
    the same layer on the mean of the kept positions (BertConfig.classifier_pooling = "mean").
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (B, d)

    def mean_pooled(self, hidden_states: torch.Tensor,
                    attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if attention_mask is None:
            mean = hidden_states.mean(dim=1)  # (B, d)
        else:
            keep = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
            mean = (hidden_states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)  # (B, d)
        return torch.tanh(self.dense(mean))  # (B, d)


class BertPreTrainedModel(PreTrainedModel):
    """Shared by BertModel and the heads: BERT's weight initialisation and checkpoint loading.

    Initialisation (BERT's TensorFlow code, kept by transformers): every Linear and Embedding
    weight ~ N(0, initializer_range^2), biases 0, LayerNorm gamma = 1 and beta = 0, [PAD] row 0.
    """

    config_class = BertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True

    def init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Embeddings last: an output layer tied to the token table (the MLM decoder) must end up
        # with the table's initialisation, [PAD] row zero included.
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
        self.tie_weights()

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state_dict.items() if not k.endswith(LEGACY_BUFFER_KEYS)}


class BertModel(BertPreTrainedModel):
    """The bare encoder: (input_ids, attention_mask, token_type_ids, position_ids) -> H_L and C.

    attention_mask (B, T): 1 = token, 0 = padding; a padded key is hidden from every query.
    add_pooling_layer=False drops the pooler (the MLM, token-classification and QA heads do not
    use C, and their transformers checkpoints have no `pooler.*` weights).
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                output_attentions: bool = False,
                output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        embeddings, mask = self.embed(input_ids, attention_mask, token_type_ids, position_ids)  # (B, T, d)
        last_hidden_state, hidden_states, attentions = self.encoder(
            embeddings, mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        pooled = self.pooler(last_hidden_state) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state, pooled, hidden_states, attentions)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """Checked ids -> (H_0 = E (B, T, d), the padding mask bool (B, 1, 1, T) or None)."""
        self._check_input(input_ids)
        mask = None if attention_mask is None else padding_mask(attention_mask)  # (B, 1, 1, T)
        if mask is not None and not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None  # nothing padded: skip a masked_fill over (B, H, T, T) per layer, same numbers
        return self.embeddings(input_ids, token_type_ids, position_ids), mask

    def _check_input(self, input_ids: torch.Tensor) -> None:
        """Catch the mistakes learners make most: a wrong shape, too many tokens, and ids outside
        the embedding table (a tokenizer of another model). The id check is one min/max per forward
        (a device sync on a GPU); the embedding lookup would otherwise fail with a bare IndexError."""
        if input_ids.dim() != 2:
            raise UserError(
                f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}; "
                "for one sentence use input_ids.unsqueeze(0)")
        if input_ids.size(1) > self.config.max_position_embeddings:
            raise UserError(
                f"input_ids has {input_ids.size(1)} tokens but max_position_embeddings is "
                f"{self.config.max_position_embeddings}; truncate the input (tokenizer max_length)")
        check_token_ids(input_ids, self.config.vocab_size)
