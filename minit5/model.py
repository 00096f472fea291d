"""T5 (Raffel et al. 2020): an encoder reads the source, a decoder writes the target attending to it.

    e_0 = Dropout(E[x])                               the encoder's input: token embeddings only
    e_l = e_{l-1} + SelfAttn(RMS(e_{l-1}); bidirectional relative bias)
    e_l = e_l + FFN(RMS(e_l))                         l = 1..L_enc;   enc = Dropout(RMS_f(e_L))
    d_0 = Dropout(E[y_shifted])                       y shifted right: decoder_start_token_id (= pad) first
    d_l = d_{l-1} + SelfAttn(RMS(d_{l-1}); causal relative bias)
    d_l = d_l + CrossAttn(RMS(d_l), enc)              queries from the decoder, keys/values from enc
    d_l = d_l + FFN(RMS(d_l))                         l = 1..L_dec
    P(y_t | y_<t, x) = softmax(RMS_f(d_L) * d_model^-0.5 E^T)   (tied; untied: W_lm, no rescale)

What differs from BERT and GPT-2:
- RMSNorm (common/nn/norms.py) before each sub-layer (pre-norm), no biases anywhere.
- No position embeddings: each attention score gets a learned bias b_h[bucket(j - i)] that depends
  only on the distance j - i between key and query, log-bucketed (relative_position_bucket). The
  first layer of each stack owns the table; the other layers reuse the bias it computed.
- Attention scores are Q K^T, NOT divided by sqrt(d_k): T5 folds that factor into the initialisation
  (W^Q ~ N(0, 1 / (d_model d_kv)) instead of N(0, 1 / d_model)), so the learned W^Q absorbs it.
- Tied embeddings: the same E embeds both stacks' tokens and projects the output, rescaled by
  d_model^-0.5 because E is initialised with unit variance.

Module and parameter names are transformers' (`shared`, `encoder.block.N.layer.0.SelfAttention.q`,
`decoder.block.N.layer.1.EncDecAttention.k`, `layer.2.DenseReluDense.wi_0`, `final_layer_norm`,
`lm_head`), so a Hugging Face T5 folder loads with from_pretrained unchanged.
Shapes: B batch, S source length, T target length (new tokens), T_k target keys (cached + new),
d = d_model, H heads, d_k = d_kv, V vocab.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn as nn

from common.errors import UserError
from common.hub.pretrained import PreTrainedModel
from common.nn.attention import KVCache, scaled_dot_product_attention
from common.nn.checkpointing import run_attention, run_block
from common.nn.blocks import get_activation
from common.nn.dropout import Dropout
from common.nn.losses import cross_entropy
from common.nn.masks import causal_mask, combine_masks, padding_mask
from common.nn.norms import RMSNorm
from minit5 import logits_at_labels
from minit5.config import T5Config


@dataclasses.dataclass
class Seq2SeqLMOutput:
    loss: Optional[torch.Tensor]  # scalar mean cross-entropy over labels != -100
    logits: torch.Tensor  # (B, T, V); (N, V) with labels and logits_at_labels_only=True
    encoder_last_hidden_state: Optional[torch.Tensor] = None  # (B, S, d)
    # With output_hidden_states / output_attentions (transformers' names; T5StackOutput per stack):
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None  # L_enc + 1 of (B, S, d)
    decoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None  # L_dec + 1 of (B, T, d)
    encoder_attentions: Optional[tuple[torch.Tensor, ...]] = None  # per layer (B, H, S, S)
    decoder_attentions: Optional[tuple[torch.Tensor, ...]] = None  # per layer (B, H, T, T)
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None  # per layer (B, H, T, S)


@dataclasses.dataclass
class T5StackOutput:
    """What a T5Stack returns when asked for its insides (otherwise it returns the tensor alone).
    hidden_states: (e_0, e_1, ..., e_{L-1}, Dropout(RMS_f(e_L))), L + 1 tensors, as transformers'."""
    last_hidden_state: torch.Tensor  # (B, T, d)
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None  # self-attention, per layer (B, H, T, T_k)
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None  # decoder only, per layer (B, H, T, S)


@dataclasses.dataclass
class Seq2SeqModelOutput:
    last_hidden_state: torch.Tensor  # (B, T, d) decoder output
    encoder_last_hidden_state: torch.Tensor  # (B, S, d)


@dataclasses.dataclass
class BaseModelOutput:
    last_hidden_state: torch.Tensor  # (B, S, d)


# BEGIN EXERCISE relative_position_bucket
def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """The bucket of a distance r = key position - query position (T5, section 2.1).

    bidirectional (encoder): half the buckets for r > 0, half for r <= 0 (n = |r|);
    causal (decoder): only r <= 0 exists, all buckets for n = -r (r > 0 would be masked anyway: n = 0).
    Within one direction, with n_b buckets (encoder num_buckets / 2, decoder num_buckets) and
    n_e = n_b / 2 of them exact (so with 32 buckets: distances up to 7 in the encoder, 15 in the decoder):
        bucket(n) = n                                                       n < n_e
        bucket(n) = min(n_b - 1, n_e + floor(log(n / n_e) / log(D / n_e) * (n_b - n_e)))   otherwise
    so near tokens get one bucket per distance and far ones share log-spaced buckets; every n >=
    max_distance D lands in the last bucket. relative_position: long, any shape -> same shape.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets  # keys after the query
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp_min(0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # n.float() / max_exact >= 1 here; the clamp keeps log() finite where is_small discards it.
    log_ratio = torch.log(n.float().clamp_min(1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = large.clamp_max(num_buckets - 1)
    return bucket + torch.where(is_small, n, large)
# END EXERCISE relative_position_bucket


class T5Attention(nn.Module):
    """Multi-head attention without 1/sqrt(d_k) and without biases, plus T5's relative position bias:

        head_h = softmax(Q_h K_h^T + b_h[bucket(j - i)] + M) V_h,   out = Concat(head_1..H) W^O

    Only the first layer of a self-attention stack holds `relative_attention_bias` (num_buckets, H);
    it returns the bias (1, H, T_q, T_k) it computed and the other layers take it as position_bias.
    Cross-attention has no position bias.
    """

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, bidirectional: bool):
        super().__init__()
        self.num_heads, self.d_kv = config.num_heads, config.d_kv
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.dropout_p = config.dropout_rate
        self.gradient_checkpointing = False  # "selective": the core is recomputed (gradient_checkpointing_enable)
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)
        self.relative_attention_bias = (nn.Embedding(self.num_buckets, self.num_heads)
                                        if has_relative_attention_bias else None)

    def compute_bias(self, query_length: int, key_length: int, past: int = 0, device=None) -> torch.Tensor:
        """b[h, i, j] = table[bucket(j - (past + i)), h]: (1, H, T_q, T_k). With a KV cache the T_q
        new queries sit at positions past .. past + T_q - 1 of the T_k keys."""
        query_position = torch.arange(past, past + query_length, device=device)[:, None]  # (T_q, 1)
        key_position = torch.arange(key_length, device=device)[None, :]  # (1, T_k)
        buckets = relative_position_bucket(key_position - query_position, self.bidirectional,
                                           self.num_buckets, self.max_distance)  # (T_q, T_k)
        values = self.relative_attention_bias(buckets)  # (T_q, T_k, H)
        return values.permute(2, 0, 1)[None]  # (1, H, T_q, T_k)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H d_k) -> (B, H, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.d_kv).transpose(1, 2)

    def key_value(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K = states W^K, V = states W^V as (B, H, S, d_k): for cross-attention, computed once per
        source and reused at every decoding step."""
        return self.split(self.k(states)), self.split(self.v(states))  # views: (B, S, H d_k) transposed

    def forward(self, hidden_states: torch.Tensor, key_value_states: Optional[torch.Tensor] = None,
                mask: Optional[torch.Tensor] = None, position_bias: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None,
                cross_key_value: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
                output_attentions: bool = False):
        """hidden_states (B, T, d); key_value_states (B, S, d) for cross-attention, or precomputed
        cross_key_value; mask bool broadcastable to (B, H, T, T_k). Returns (out (B, T, d),
        position_bias (1, H, T, T_k) or None, attention weights (B, H, T, T_k) or None)."""
        q = self.split(self.q(hidden_states))  # (B, H, T, d_k)
        if cross_key_value is not None:
            k, v = cross_key_value  # (B, H, S, d_k), computed once per source
        else:
            k, v = self.key_value(hidden_states if key_value_states is None else key_value_states)
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(k, v)  # (B, H, past + T, d_k)
        if position_bias is None and self.relative_attention_bias is not None:
            position_bias = self.compute_bias(q.size(2), k.size(2), past, device=q.device)
        # scale=1.0: no 1/sqrt(d_k) here; T5's initialisation of W^Q carries it (module docstring).
        # "selective" checkpointing recomputes this (T x T) core in the backward (common/nn/checkpointing.py)
        out, weights = run_attention(self, False if output_attentions else self.gradient_checkpointing,
                                     scaled_dot_product_attention, q, k, v, mask, self.dropout_p, self.training,
                                     scale=1.0, bias=position_bias, need_weights=output_attentions)
        B, H, T, d = out.shape  # (B, H, T, d_k)
        return self.o(out.transpose(1, 2).reshape(B, T, H * d)), position_bias, weights


class T5LayerSelfAttention(nn.Module):
    """x + Dropout(SelfAttention(RMS(x)))."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, bidirectional: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, bidirectional)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def forward(self, x, mask=None, position_bias=None, kv_cache=None, output_attentions=False):
        a, position_bias, weights = self.SelfAttention(self.layer_norm(x), mask=mask, position_bias=position_bias,
                                                       kv_cache=kv_cache, output_attentions=output_attentions)
        return x + self.dropout(a), position_bias, weights


class T5LayerCrossAttention(nn.Module):
    """x + Dropout(EncDecAttention(RMS(x), enc)): the decoder's queries read the encoder's states."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, bidirectional=True)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def forward(self, x, encoder_hidden_states=None, mask=None, cross_key_value=None, output_attentions=False):
        a, _, weights = self.EncDecAttention(self.layer_norm(x), key_value_states=encoder_hidden_states, mask=mask,
                                             cross_key_value=cross_key_value, output_attentions=output_attentions)
        return x + self.dropout(a), weights


class T5DenseActDense(nn.Module):
    """act(x W_i) W_o, with dropout on the hidden layer (T5's "relu" feed-forward)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn, fused=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi(x))))  # (B, T, d)


class T5DenseGatedActDense(nn.Module):
    """(act(x W_i0) * (x W_i1)) W_o: a gated linear unit (Shazeer 2020), T5 v1.1's feed-forward."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = Dropout(config.dropout_rate)
        self.act = get_activation(config.dense_act_fn, fused=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi_0(x)) * self.wi_1(x)))  # (B, T, d)


class T5LayerFF(nn.Module):
    """x + Dropout(FFN(RMS(x)))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    """One layer: `layer` = [self-attention, (cross-attention,) feed-forward], transformers' order."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        layers = [T5LayerSelfAttention(config, has_relative_attention_bias, bidirectional=not is_decoder)]
        if is_decoder:
            layers.append(T5LayerCrossAttention(config))
        layers.append(T5LayerFF(config))
        self.layer = nn.ModuleList(layers)

    def forward(self, x, mask=None, position_bias=None, encoder_hidden_states=None, encoder_mask=None,
                kv_cache=None, cross_key_value=None, output_attentions=False):
        """-> (x, position_bias, self-attention weights or None, cross-attention weights or None)."""
        x, position_bias, weights = self.layer[0](x, mask=mask, position_bias=position_bias, kv_cache=kv_cache,
                                                  output_attentions=output_attentions)
        cross_weights = None
        if self.is_decoder:
            x, cross_weights = self.layer[1](x, encoder_hidden_states, mask=encoder_mask,
                                             cross_key_value=cross_key_value, output_attentions=output_attentions)
        return self.layer[-1](x), position_bias, weights, cross_weights


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention): blocks + final RMS."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens  # the model's `shared` table, one module in three places
        num_layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, has_relative_attention_bias=(i == 0), is_decoder=is_decoder)
                                   for i in range(num_layers))
        self.final_layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)
        self.gradient_checkpointing = False  # or "full" / "selective": gradient_checkpointing_enable()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                encoder_hidden_states: Optional[torch.Tensor] = None,
                encoder_attention_mask: Optional[torch.Tensor] = None,
                kv_caches: Optional[list[KVCache]] = None,
                cross_key_values: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None,
                output_attentions: bool = False, output_hidden_states: bool = False):
        """input_ids (B, T); attention_mask (B, T_k) 1 = token, 0 = padding (for the decoder with a
        cache it covers the cached positions too); encoder_hidden_states (B, S, d) with
        encoder_attention_mask (B, S). Returns hidden states (B, T, d) after final_layer_norm; with
        output_attentions or output_hidden_states a T5StackOutput holding them and the insides."""
        check_ids(input_ids, self.config.vocab_size)
        B, T = input_ids.shape
        past = kv_caches[0].length if kv_caches is not None else 0
        mask = padding_mask(attention_mask) if attention_mask is not None else None  # (B, 1, 1, T_k)
        if self.is_decoder and T > 1:
            mask = combine_masks(mask, causal_mask(T, past + T, device=input_ids.device))  # (., 1, T, T_k)
        encoder_mask = None
        if self.is_decoder and encoder_attention_mask is not None:
            encoder_mask = padding_mask(encoder_attention_mask)  # (B, 1, 1, S)
        x = self.dropout(self.embed_tokens(input_ids))  # (B, T, d)
        position_bias = None  # computed by block 0, shared by the others
        hidden_states, attentions, cross_attentions = [], [], []
        for i, block in enumerate(self.block):
            hidden_states.append(x)  # e_i, the input of block i (a reference: no copy)
            x, position_bias, weights, cross_weights = run_block(  # recomputed in the backward when checkpointing
                block, self.gradient_checkpointing if kv_caches is None else False,
                x, mask=mask, position_bias=position_bias, encoder_hidden_states=encoder_hidden_states,
                encoder_mask=encoder_mask, kv_cache=kv_caches[i] if kv_caches is not None else None,
                cross_key_value=cross_key_values[i] if cross_key_values is not None else None,
                output_attentions=output_attentions)
            attentions.append(weights)
            cross_attentions.append(cross_weights)
        x = self.dropout(self.final_layer_norm(x))
        if not (output_attentions or output_hidden_states):
            return x
        return T5StackOutput(x, tuple(hidden_states) + (x,) if output_hidden_states else None,
                             tuple(attentions) if output_attentions else None,
                             tuple(cross_attentions) if output_attentions and self.is_decoder else None)


def check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """A token id outside the embedding table would be a bare IndexError deep in the model."""
    if input_ids.numel() and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            raise UserError(
                f"input ids hold token id {low if low < 0 else high}, outside the model's vocabulary "
                f"[0, vocab_size={vocab_size}); use the tokenizer saved with the model (same folder); "
                "labels may hold -100, decoder inputs may not (they come from shift_right)")


def shift_right(labels: torch.Tensor, decoder_start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: y_in = [start, y_1, ..., y_{T-1}], with -100 replaced by pad.
    (B, T) -> (B, T). Teacher forcing: position t reads the true y_<t and predicts y_t."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class T5PreTrainedModel(PreTrainedModel):
    """T5's initialisation (transformers' scheme, with initializer_factor f = 1)."""

    config_class = T5Config
    supports_gradient_checkpointing = True
    base_model_prefix = "transformer"

    def init_weights(self) -> None:
        """E ~ N(0, f^2) (and an untied lm_head too); RMSNorm weights = f;
        W^Q ~ N(0, f^2 / (d_model d_kv)) (this is where 1/sqrt(d_k) went), W^K, W^V ~ N(0, f^2 / d_model),
        W^O ~ N(0, f^2 / (H d_kv)), relative bias ~ N(0, f^2 / d_model);
        W_i ~ N(0, f^2 / d_model), W_o ~ N(0, f^2 / d_ff)."""
        c, f = self.config, self.config.initializer_factor
        for module in self.modules():
            if isinstance(module, RMSNorm):
                nn.init.constant_(module.weight, f)
            elif isinstance(module, T5Attention):
                nn.init.normal_(module.q.weight, std=f * (c.d_model * c.d_kv) ** -0.5)
                nn.init.normal_(module.k.weight, std=f * c.d_model ** -0.5)
                nn.init.normal_(module.v.weight, std=f * c.d_model ** -0.5)
                nn.init.normal_(module.o.weight, std=f * c.inner_dim ** -0.5)
                if module.relative_attention_bias is not None:
                    nn.init.normal_(module.relative_attention_bias.weight, std=f * c.d_model ** -0.5)
            elif isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
                for name in ("wi", "wi_0", "wi_1"):
                    if hasattr(module, name):
                        nn.init.normal_(getattr(module, name).weight, std=f * c.d_model ** -0.5)
                nn.init.normal_(module.wo.weight, std=f * c.d_ff ** -0.5)
        nn.init.normal_(self.shared.weight, std=f)
        lm_head = getattr(self, "lm_head", None)
        if lm_head is not None and not c.tie_word_embeddings:
            nn.init.normal_(lm_head.weight, std=f)

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
        """transformers' T5Model may store this unused table (its decoder's cross-attention never
        has a bias): drop it instead of warning about it. An untied head missing from a checkpoint
        whose file shared it with the embeddings starts as a copy of them."""
        state_dict = {k: v for k, v in state_dict.items()
                      if not k.endswith("EncDecAttention.relative_attention_bias.weight")}
        if not config.tie_word_embeddings and "lm_head.weight" not in state_dict and "shared.weight" in state_dict:
            state_dict["lm_head.weight"] = state_dict["shared.weight"].clone()
        return state_dict

    def new_kv_caches(self, batch_size: int, max_length: int) -> list[KVCache]:
        """One self-attention KVCache per decoder layer, (B, H, max_length, d_kv) each."""
        c, param = self.config, self.shared.weight
        return [KVCache(batch_size, c.num_heads, max_length, c.d_kv, dtype=param.dtype, device=param.device)
                for _ in range(c.num_decoder_layers)]

    def cross_key_values(self, encoder_hidden_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention K, V (B, H, S, d_k) of the source: computed once per
        source, since the encoder's output does not change while the decoder writes. Stored contiguous
        (one copy here): a transposed view would be copied again by every step's Q K^T and A V."""
        pairs = (block.layer[1].EncDecAttention.key_value(encoder_hidden_states) for block in self.decoder.block)
        return [(k.contiguous(), v.contiguous()) for k, v in pairs]


class T5EncoderModel(T5PreTrainedModel):
    """The encoder alone (for embeddings or classification): input ids -> (B, S, d)."""

    _tied_weights_keys = ("encoder.embed_tokens.weight",)

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> BaseModelOutput:
        return BaseModelOutput(self.encoder(input_ids, attention_mask))


class T5Model(T5PreTrainedModel):
    """Encoder + decoder without the LM head: decoder hidden states (B, T, d)."""

    _tied_weights_keys = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                decoder_input_ids: Optional[torch.Tensor] = None,
                decoder_attention_mask: Optional[torch.Tensor] = None) -> Seq2SeqModelOutput:
        encoded = self.encoder(input_ids, attention_mask)  # (B, S, d)
        if decoder_input_ids is None:
            raise UserError("T5Model needs decoder_input_ids (B, T); they start with "
                            f"decoder_start_token_id={self.config.decoder_start_token_id}")
        hidden = self.decoder(decoder_input_ids, decoder_attention_mask, encoded, attention_mask)
        return Seq2SeqModelOutput(hidden, encoded)


class T5ForConditionalGeneration(T5PreTrainedModel):
    """T5Model + `lm_head`: logits (B, T, V) over the next target token, and the loss on labels."""

    _tied_weights_keys = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        self.encoder.embed_tokens = self.decoder.embed_tokens = self.shared
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.shared.weight

    def encode(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The encoder's output (B, S, d): run once per source, read by every decoding step."""
        return self.encoder(input_ids, attention_mask)

    def decode(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor,
               attention_mask: Optional[torch.Tensor] = None,
               decoder_attention_mask: Optional[torch.Tensor] = None,
               kv_caches: Optional[list[KVCache]] = None,
               cross_key_values: Optional[list] = None) -> torch.Tensor:
        """Logits (B, T, V) for the decoder inputs, given the encoder's output."""
        hidden = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_hidden_states, attention_mask,
                              kv_caches=kv_caches, cross_key_values=cross_key_values)  # (B, T, d)
        return self.lm_logits(hidden)  # (B, T, V)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head: decoder outputs (..., d) -> logits (..., V), h * d_model^-0.5 E^T when tied, h W_lm^T not."""
        if self.config.tie_word_embeddings:
            hidden = hidden * self.config.d_model ** -0.5  # E has unit-variance rows: rescale before E^T
        return self.lm_head(hidden)  # (..., V)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                decoder_input_ids: Optional[torch.Tensor] = None,
                decoder_attention_mask: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                encoder_outputs: Optional[torch.Tensor] = None, logits_at_labels_only: bool = False,
                output_attentions: bool = False, output_hidden_states: bool = False) -> Seq2SeqLMOutput:
        """input_ids (B, S) with attention_mask (B, S); labels (B, T), -100 = not scored. Without
        decoder_input_ids they are shift_right(labels). loss = mean over scored positions of
        -log P(y_t | y_<t, x) (common/nn/losses.py cross_entropy). With logits_at_labels_only=True
        (a training switch, never saved) and labels, minit5/logits_at_labels.py runs the head at the
        scored positions only: the same loss and gradients, logits (N, V) for the N positions with
        labels != -100.
        output_attentions / output_hidden_states fill the output's encoder_/decoder_hidden_states,
        encoder_/decoder_attentions and cross_attentions (transformers' names and shapes)."""
        inside = output_attentions or output_hidden_states
        if inside and encoder_outputs is not None:
            raise UserError("output_attentions / output_hidden_states need the encoder run here: "
                            "pass input_ids instead of encoder_outputs")
        insides = {}
        if encoder_outputs is not None:
            encoded = encoder_outputs
        elif inside:
            enc = self.encoder(input_ids, attention_mask, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
            encoded = enc.last_hidden_state
            insides.update(encoder_hidden_states=enc.hidden_states, encoder_attentions=enc.attentions)
        else:
            encoded = self.encode(input_ids, attention_mask)
        if decoder_input_ids is None:
            if labels is None:
                raise UserError("pass labels (B, T) or decoder_input_ids (B, T) to T5ForConditionalGeneration")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        hidden = self.decoder(decoder_input_ids, decoder_attention_mask, encoded, attention_mask,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        if inside:
            insides.update(decoder_hidden_states=hidden.hidden_states, decoder_attentions=hidden.attentions,
                           cross_attentions=hidden.cross_attentions)
            hidden = hidden.last_hidden_state  # (B, T, d)
        if logits_at_labels.applies(logits_at_labels_only, labels) and not inside:  # speed trick
            logits, loss = logits_at_labels.logits_and_loss(self, hidden, labels)  # (N, V), scalar
            return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoded)
        logits = self.lm_logits(hidden)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        return Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoded, **insides)

    def generate(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """See minit5.generate.generate."""
        from minit5.generate import generate

        return generate(self, input_ids, **kwargs)
