"""GPT-2 (Radford et al. 2019): a stack of pre-LN decoder blocks over token + position embeddings.

    h_0 = Dropout(W_te[x_t] + W_pe[p_t])                     token and learned position embeddings
    h_l = DecoderBlock_l(h_{l-1}),  l = 1..L                  causal self-attention + feed-forward
    P(x_{t+1} | x_{<=t}) = softmax(LN_f(h_L) W_te^T)          the LM head shares W_te (weight tying)

The Llama shape (minigpt.config.LLAMA_SHAPE) is the same three lines with h_0 = Dropout(W_te[x_t]):
positions enter as RoPE rotations of q and k in every layer (common/nn/rope.py), LN is RMSNorm, the
FFN is SwiGLU, and n_kv_head < n_head shares keys and values between query heads.

Module and parameter names are transformers' GPT-2 names (`transformer.wte`, `transformer.h.N.ln_1`,
`lm_head`), except that GPT-2's fused Conv1D `c_attn` is split into `query`/`key`/`value` Linears;
`GPT.convert_state_dict` translates a Hugging Face GPT-2 or Llama checkpoint on load.

Shapes: B batch, T time (new tokens), T_k all key positions (cached + new), d = n_embd, V vocab.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Optional

import torch
import torch.nn as nn

from common.nn.attention import KVCache, set_attn_implementation
from common.nn.checkpointing import run_block
from common.nn.blocks import DecoderBlock
from common.nn.dropout import Dropout
from common.nn.norms import RMSNorm, make_norm
from common.nn.rope import rope_cos_sin
from common.hub.pretrained import PreTrainedModel, check_token_ids
from common.errors import UserError
from common.nn.losses import IGNORE_INDEX, causal_lm_loss, classification_loss
from common.nn.masks import causal_mask, combine_masks, padding_mask
from minigpt.config import GPTConfig
from minigpt.generate import generate


@dataclasses.dataclass
class CausalLMOutput:
    loss: Optional[torch.Tensor]  # scalar, when labels are given
    logits: torch.Tensor  # (B, T, V), or (B, 1, V) with last_token_only
    attentions: Optional[tuple[torch.Tensor, ...]] = None  # per layer (B, H, T, T_k)
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None  # L + 1 of (B, T, d), see GPTModel.forward


@dataclasses.dataclass
class SequenceClassifierOutput:
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, num_labels)
    attentions: Optional[tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None


def position_ids_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """p_t = (sum_{s <= t} m_s) - 1, clamped at 0: the index of token t among the real tokens.

    With left padding the first real token gets position 0, exactly as if the prompt had no
    padding; padded slots get 0 (their output is never used). (B, T_k) -> (B, T_k) long.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class GPTModel(nn.Module):
    """The decoder stack without a head: input ids -> final hidden states (B, T, d)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # RoPE has no table: positions rotate q and k inside attention instead.
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.position_embedding == "learned" else None
        self.drop = Dropout(config.dropout)
        self.h = nn.ModuleList(
            DecoderBlock(config.n_embd, config.n_head, config.n_inner, config.activation_function,
                         dropout=config.dropout, attention_dropout=config.dropout,
                         layer_norm_eps=config.layer_norm_epsilon, bias=config.bias,
                         norm=config.normalization,
                         feed_forward=config.feed_forward, num_kv_heads=config.n_kv_head)
            for _ in range(config.n_layer)
        )
        self.ln_f = make_norm(config.normalization, config.n_embd, config.layer_norm_epsilon, config.bias)
        set_attn_implementation(self, config.attn_impl)  # chosen once per model (common/nn/attention.py)
        self.gradient_checkpointing = False  # or "full" / "selective": gradient_checkpointing_enable()

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                kv_caches: Optional[list[KVCache]] = None, output_attentions: bool = False,
                output_hidden_states: bool = False):
        """input_ids (B, T); attention_mask (B, T_k) 1 = token, 0 = padding, covering the cached
        positions too; position_ids (B, T); kv_caches: one KVCache per layer, extended in place.
        Returns (LN_f(h_L) (B, T, d), hidden states or None, attention weights per layer or None).
        hidden states, as transformers': (h_0, h_1, ..., h_{L-1}, LN_f(h_L)), L + 1 tensors (B, T, d):
        the embeddings, the residual stream after each block, and the last one after the final norm."""
        B, T = input_ids.shape
        past = kv_caches[0].length if kv_caches is not None else 0
        T_k = past + T
        if T_k > self.config.block_size:
            raise UserError(
                f"sequence of {T_k} tokens is longer than block_size={self.config.block_size}; "
                "crop the input to its last block_size tokens (generate does this for you) "
                "or train a model with a larger block_size"
            )
        check_token_ids(input_ids, self.config.vocab_size)
        if attention_mask is not None and attention_mask.shape != (B, T_k):
            raise UserError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                            f"{(B, T_k)} (batch, cached + new tokens)")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = position_ids_from_attention_mask(attention_mask)[:, past:]  # (B, T)
            else:
                position_ids = torch.arange(past, T_k, device=input_ids.device)[None]  # (1, T)

        # One new query sees every cached key, so its causal mask is all True: skip building it.
        mask = combine_masks(
            padding_mask(attention_mask) if attention_mask is not None else None,  # (B, 1, 1, T_k)
            causal_mask(T, T_k, device=input_ids.device) if T > 1 else None,  # (1, 1, T, T_k)
        )
        x = self.wte(input_ids)  # (B, T, d)
        rotary = None
        if self.wpe is not None:
            x = x + self.wpe(position_ids)  # learned positions, added once
        else:  # RoPE: the angles p theta_i of these positions, shared by every layer
            rotary = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        x = self.drop(x)
        attentions = [] if output_attentions else None
        hidden_states = [] if output_hidden_states else None
        for i, block in enumerate(self.h):
            if output_hidden_states:
                hidden_states.append(x)  # h_i, the input of block i
            cache = kv_caches[i] if kv_caches is not None else None
            x, weights = run_block(block, self.gradient_checkpointing if cache is None else False, x, mask=mask,
                                   kv_cache=cache, output_attentions=output_attentions, rotary=rotary)
            if output_attentions:
                attentions.append(weights)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden_states.append(x)
        return (x, tuple(hidden_states) if output_hidden_states else None,
                tuple(attentions) if output_attentions else None)


class GPTPreTrainedModel(PreTrainedModel):
    """GPT-2 initialisation and the import of Hugging Face GPT-2 checkpoints."""

    config_class = GPTConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True

    def init_weights(self) -> None:
        """W ~ N(0, sigma^2) with sigma = initializer_range (0.02) for every Linear and Embedding,
        biases 0, LayerNorm gamma = 1 and beta = 0 (RMSNorm weight = 1). The projections that write
        into the residual stream (attn.out_proj, mlp.c_proj or SwiGLU's mlp.down_proj) get
        sigma / sqrt(2 L): the stream is a sum of 2L such outputs, so its variance then stays about
        constant with depth (GPT-2 paper, section 2.3)."""
        std = self.config.initializer_range
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                is_residual = name.endswith(("attn.out_proj", "mlp.c_proj", "mlp.down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
        """Translate a Hugging Face GPT-2 state dict (recognised by its `attn.c_attn` keys), or a
        Llama one (its `model.layers.` keys; see llama_state_dict_to_minigpt).

        GPT-2 stores its projections as Conv1D, y = x W + b with W of shape (C_in, C_out), the
        transpose of nn.Linear's (C_out, C_in). `c_attn` holds W^Q, W^K, W^V side by side:
            c_attn.weight (d, 3d) -> transpose (3d, d) -> split into query, key, value (d, d) each.
        `attn.bias` / `attn.masked_bias` are buffers (a causal mask and a constant), not weights.
        """
        if any(k.startswith(("model.layers.", "model.embed_tokens.")) for k in state_dict):
            return llama_state_dict_to_minigpt(state_dict)
        if not any(k.endswith("attn.c_attn.weight") for k in state_dict):
            return state_dict
        out = {}
        for key, tensor in state_dict.items():
            if key.endswith((".attn.bias", ".attn.masked_bias")):
                continue
            match = re.match(r"^(.*\bh\.\d+\.)(attn|mlp)\.(c_attn|c_proj|c_fc)\.(weight|bias)$", key)
            if match is None:
                out[key] = tensor
                continue
            block, sub, name, kind = match.groups()
            value = tensor.t().contiguous() if kind == "weight" else tensor
            if name == "c_attn":
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{block}attn.{part}.{kind}"] = chunk.contiguous()
            elif sub == "attn":
                out[f"{block}attn.out_proj.{kind}"] = value
            else:
                out[key] = value
        return out

    def new_kv_caches(self, batch_size: int, max_length: int) -> list[KVCache]:
        """One empty, preallocated KVCache per layer, for up to max_length positions, holding the
        n_kv_head key/value heads (grouped-query attention caches n_head / n_kv_head times less)."""
        c = self.config
        param = self.transformer.wte.weight
        return [KVCache(batch_size, block.attn.num_kv_heads, max_length, c.head_dim, dtype=param.dtype,
                        device=param.device)
                for block in self.transformer.h]  # a layer's own head count: prune_heads may have removed some


# Llama's module names -> ours, inside model.layers.N / transformer.h.N.
LLAMA_LAYER_NAMES = {
    "input_layernorm": "ln_1", "post_attention_layernorm": "ln_2",
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.o_proj": "attn.out_proj",
    "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.up_proj", "mlp.down_proj": "mlp.down_proj",
}


def llama_state_dict_to_minigpt(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers Llama state dict (same tensors, same layout: both use nn.Linear, and a
    Hugging Face folder already has W^Q, W^K in rotate-half order, see common/nn/rope.py):
        model.embed_tokens -> transformer.wte      model.norm -> transformer.ln_f      lm_head -> lm_head
        model.layers.N.self_attn.{q,k,v,o}_proj -> transformer.h.N.attn.{query,key,value,out_proj}
        model.layers.N.{input,post_attention}_layernorm -> transformer.h.N.{ln_1,ln_2}
        model.layers.N.mlp.{gate,up,down}_proj -> transformer.h.N.mlp.{gate,up,down}_proj
    Cached rotary tables (`rotary_emb.inv_freq`, recomputed here) are dropped."""
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        match = re.match(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$", key)
        if match and match.group(2) in LLAMA_LAYER_NAMES:
            layer, name, kind = match.groups()
            key = f"transformer.h.{layer}.{LLAMA_LAYER_NAMES[name]}.{kind}"
        elif key.startswith("model.embed_tokens."):
            key = "transformer.wte." + key[len("model.embed_tokens."):]
        elif key.startswith("model.norm."):
            key = "transformer.ln_f." + key[len("model.norm."):]
        out[key] = tensor
    return out


class GPT(GPTPreTrainedModel):
    """GPT-2 language model: `transformer` (the decoder stack) + `lm_head` (tied to wte, or its own
    matrix with tie_word_embeddings=False as in Llama)."""

    _tied_weights_keys = ("lm_head.weight",)
    shifts_labels = True  # the loss scores labels[:, 1:] (common/train/utils.py:label_units counts those)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = GPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if not config.tie_word_embeddings:  # an untied head is a weight of its own: a checkpoint must hold it
            self._tied_weights_keys = ()
        self.init_weights()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, position_ids: Optional[torch.Tensor] = None,
                kv_caches: Optional[list[KVCache]] = None, output_attentions: bool = False,
                last_token_only: bool = False, output_hidden_states: bool = False) -> CausalLMOutput:
        """Logits for the next token at every position, and L_LM when labels are given.

        labels (B, T): usually input_ids; -100 (and, with an attention_mask, padded positions)
        are not scored. last_token_only=True computes the (C x V) head for the last position
        only, which is all generation needs and saves most of the head's work (nanoGPT's trick).
        """
        hidden, hidden_states, attentions = self.transformer(
            input_ids, attention_mask, position_ids, kv_caches, output_attentions, output_hidden_states)  # (B, T, d)
        if last_token_only:
            hidden = hidden[:, -1:, :]  # (B, 1, d)
        logits = self.lm_head(hidden)  # (B, T, V)
        loss = None
        if labels is not None:
            if last_token_only:
                raise UserError("labels need the logits of every position; drop last_token_only=True")
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, -labels.size(1):] == 0, IGNORE_INDEX)
            loss = causal_lm_loss(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits, attentions=attentions, hidden_states=hidden_states)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: Optional[int] = None, **kwargs) -> torch.Tensor:
        """See minigpt.generate.generate."""
        return generate(self, input_ids, max_new_tokens, **kwargs)


class GPTForSequenceClassification(GPTPreTrainedModel):
    """GPT-2 with a linear `score` head on the hidden state of the LAST real token: in a causal
    model it is the only position that has seen the whole sequence.

        logits = h_L[b, t_b] W_score,  t_b = the last t with attention_mask[b, t] = 1
    Without an attention_mask, t_b is the last token that is not config.pad_token_id (or T - 1).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.transformer = GPTModel(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.init_weights()

    def last_token_index(self, input_ids: torch.Tensor,
                         attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(B,) index of the rightmost real token; works for left and right padding alike."""
        if attention_mask is not None:
            real = attention_mask.bool()
        elif self.config.pad_token_id is not None:
            real = input_ids != self.config.pad_token_id
        else:
            return torch.full((input_ids.size(0),), input_ids.size(1) - 1, device=input_ids.device)
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        return (positions * real).argmax(-1)  # the largest position that is real

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, position_ids: Optional[torch.Tensor] = None,
                output_attentions: bool = False, output_hidden_states: bool = False) -> SequenceClassifierOutput:
        hidden, hidden_states, attentions = self.transformer(
            input_ids, attention_mask, position_ids, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states)  # (B, T, d)
        last = self.last_token_index(input_ids, attention_mask)  # (B,)
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]  # (B, d)
        logits = self.score(pooled)  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return SequenceClassifierOutput(loss=loss, logits=logits, attentions=attentions,
                                        hidden_states=hidden_states)
