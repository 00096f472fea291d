"""Run a model with every named activation recorded, and any of them replaced (TransformerLens's
idea, written here from the model packages' own modules).

A run walks the model's layers with the model's own modules (embeddings, norms, W^Q W^K W^V W^O,
feed-forward) and the one attention formula of common/nn/attention.py, and passes every
intermediate value through `hook(name, value)`. The hook records it in the cache and, where a patch
is registered for that name, returns the patched value, which the rest of the run then uses.
tests/test_interpret_hooks.py pins a run without patches to the model's own forward (1e-5).

Names (GPT: decoder-only; BERT: post-LN encoder; the same names for both):

    embed                       h_0, the embeddings the first block reads           (B, T, d)
    blocks.N.resid_pre          the residual stream entering block N                (B, T, d)
    blocks.N.attn.pattern       A = softmax(Q K^T / sqrt(d_k) + M), every head       (B, H, T, T)
    blocks.N.attn.heads         z_h = A_h V_h, every head's output before W^O       (B, H, T, d_k)
    blocks.N.attn_out           Concat(z_1..z_H) W^O, the attention sub-layer        (B, T, d)
    blocks.N.resid_mid          GPT: resid_pre + attn_out; BERT: LN(resid_pre + attn_out)
    blocks.N.mlp_out            the feed-forward's output (absent with feed_forward="none")
    blocks.N.resid_post         the residual stream leaving block N                 (B, T, d)
    final                       GPT: LN_f(h_L), what the LM head reads; BERT: H_L

T5 (T5ForConditionalGeneration, with decoder_input_ids=...) has the same names under `encoder.` and
`decoder.` (encoder.embed, encoder.blocks.N.resid_pre, ..., decoder.final), and in each decoder
block the cross-attention between resid_mid and mlp_out: decoder.blocks.N.cross_attn.pattern
(B, H, T, S), decoder.blocks.N.cross_attn.heads, decoder.blocks.N.cross_attn_out and
decoder.blocks.N.resid_cross (the stream after it).

Because W^O is linear, attn_out = sum_h z_h W^O_h (+ b^O): zeroing z_h in `attn.heads` removes
exactly head h's contribution to the residual stream (zero_head, mean_head, patch_head below).
Runs are in eval mode semantics (dropout is whatever the modules do: call model.eval() first).
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import torch
import torch.nn as nn

from common.errors import UserError
from common.nn.attention import merge_heads, repeat_kv, scaled_dot_product_attention, split_heads
from common.nn.masks import causal_mask, combine_masks, padding_mask
from common.nn.rope import apply_rope, rope_cos_sin

Patch = Callable[[torch.Tensor], torch.Tensor]


def family(model: nn.Module) -> str:
    """'gpt' (minigpt.GPT: .transformer.h and .lm_head), 't5' (minit5.T5ForConditionalGeneration)
    or 'bert' (minibert.BertModel or a head model holding one as .bert); anything else is one error."""
    if hasattr(model, "decoder") and hasattr(model, "shared") and hasattr(model, "lm_logits"):
        return "t5"
    if hasattr(model, "transformer") and hasattr(model.transformer, "h") and hasattr(model, "lm_head"):
        return "gpt"
    if hasattr(model, "encoder") and hasattr(model, "embeddings") or hasattr(model, "bert"):
        return "bert"
    raise UserError(f"interpret.hooks runs minigpt.GPT, minibert BERT and minit5.T5ForConditionalGeneration "
                    f"models, not {type(model).__name__}")


def hook_names(model: nn.Module) -> list[str]:
    """Every name a run of this model passes through its hook, in the order it does."""
    kind = family(model)
    if kind == "t5":
        names = []
        for prefix, stack in (("encoder.", model.encoder), ("decoder.", model.decoder)):
            names.append(prefix + "embed")
            for n in range(len(stack.block)):
                p = f"{prefix}blocks.{n}."
                names += [p + s for s in ("resid_pre", "attn.pattern", "attn.heads", "attn_out", "resid_mid")]
                if stack.is_decoder:
                    names += [p + s for s in ("cross_attn.pattern", "cross_attn.heads", "cross_attn_out", "resid_cross")]
                names += [p + "mlp_out", p + "resid_post"]
            names.append(prefix + "final")
        return names
    blocks = model.transformer.h if kind == "gpt" else _bert(model).encoder.layer
    names = ["embed"]
    for n, block in enumerate(blocks):
        names += [f"blocks.{n}.{s}" for s in ("resid_pre", "attn.pattern", "attn.heads", "attn_out", "resid_mid")]
        if kind == "bert" or block.mlp is not None:
            names.append(f"blocks.{n}.mlp_out")
        names.append(f"blocks.{n}.resid_post")
    return names + ["final"]


def describe_names(names: list[str]) -> str:
    """One line: 'embed, blocks.N.resid_pre, ..., final (N = 0..1)'."""
    shapes, layers = [], set()
    for name in names:
        m = re.match(r"^(.*?blocks)\.(\d+)\.(.+)$", name)
        short = f"{m.group(1)}.N.{m.group(3)}" if m else name
        if m:
            layers.add(int(m.group(2)))
        if short not in shapes:
            shapes.append(short)
    return ", ".join(shapes) + (f" (N = 0..{max(layers)})" if layers else "")


class ActivationCache(dict):
    """name -> tensor of one run; a name that is not there is one error listing the names."""

    def __missing__(self, name):
        raise UserError(f"no activation named {name!r}; the names are {describe_names(list(self))}")

    def stack(self, suffix: str, prefix: str = "") -> torch.Tensor:
        """cache.stack('attn.pattern') -> (L, ...) the per-block tensors of that name, in layer order
        (T5: prefix='encoder.' or 'decoder.')."""
        pattern = rf"{re.escape(prefix)}blocks\.\d+\.{re.escape(suffix)}"
        found = [v for k, v in self.items() if re.fullmatch(pattern, k)]
        if not found:
            raise UserError(f"no activation {prefix}blocks.N.{suffix}; the names are {describe_names(list(self))}")
        return torch.stack(found)


class _Hook:
    def __init__(self, known: list[str], patches: dict[str, Patch], record: bool):
        unknown = [n for n in patches if n not in known]
        if unknown:
            raise UserError(f"no hook named {unknown[0]!r}; the names are {describe_names(known)}")
        self.patches, self.record = patches, record
        self.cache = ActivationCache()

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name in self.patches:
            value = self.patches[name](value)
        if self.record:
            self.cache[name] = value
        return value


def _bert(model: nn.Module) -> nn.Module:
    return model.bert if hasattr(model, "bert") else model


def _attention(attn: nn.Module, h: torch.Tensor, mask: Optional[torch.Tensor], prefix: str, hook: _Hook,
               rotary=None) -> torch.Tensor:
    """common.nn.attention.MultiHeadAttention's forward, with its pattern and heads exposed."""
    q = split_heads(attn.query(h), attn.num_heads)  # (B, H, T, d_k)
    k = split_heads(attn.key(h), attn.num_kv_heads)  # (B, H_kv, T, d_k)
    v = split_heads(attn.value(h), attn.num_kv_heads)
    if rotary is not None:
        q, k = apply_rope(q, *rotary), apply_rope(k, *rotary)
    n_rep = attn.num_heads // attn.num_kv_heads
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, T, d_k)
    _, pattern = scaled_dot_product_attention(q, k, v, mask, need_weights=True)  # (B, H, T, T)
    pattern = hook(prefix + "attn.pattern", pattern)
    heads = hook(prefix + "attn.heads", pattern @ v)  # (B, H, T, d_k)
    context = merge_heads(heads)  # (B, T, d)
    return context if attn.out_proj is None else attn.out_proj(context)


def _run_gpt(model, input_ids, attention_mask, hook: _Hook) -> torch.Tensor:
    stack, config = model.transformer, model.config
    B, T = input_ids.shape
    if attention_mask is not None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # as minigpt.model
    else:
        position_ids = torch.arange(T, device=input_ids.device)[None]
    mask = combine_masks(padding_mask(attention_mask) if attention_mask is not None else None,
                         causal_mask(T, T, device=input_ids.device))
    x, rotary = stack.wte(input_ids), None
    if stack.wpe is not None:
        x = x + stack.wpe(position_ids)
    else:
        rotary = rope_cos_sin(position_ids, config.head_dim, config.rope_theta, x.dtype)
    x = hook("embed", stack.drop(x))
    for n, block in enumerate(stack.h):
        p = f"blocks.{n}."
        x = hook(p + "resid_pre", x)
        a = hook(p + "attn_out", _attention(block.attn, block.ln_1(x), mask, p, hook, rotary))
        x = hook(p + "resid_mid", x + block.dropout(a))
        if block.mlp is not None:
            x = x + block.dropout(hook(p + "mlp_out", block.mlp(block.ln_2(x))))
        x = hook(p + "resid_post", x)
    return model.lm_head(hook("final", stack.ln_f(x)))  # (B, T, V)


def _run_bert(model, input_ids, attention_mask, hook: _Hook, token_type_ids=None) -> torch.Tensor:
    bert = _bert(model)
    x, mask = bert.embed(input_ids, attention_mask, token_type_ids)
    x = hook("embed", x)
    for n, layer in enumerate(bert.encoder.layer):
        p = f"blocks.{n}."
        x = hook(p + "resid_pre", x)
        out = layer.attention.output  # LN(x + Dropout(context W^O + b))
        a = hook(p + "attn_out", out.dense(_attention(layer.attention.self, x, mask, p, hook)))
        x = hook(p + "resid_mid", out.LayerNorm(x + out.dropout(a)))
        ff = layer.output
        m = hook(p + "mlp_out", ff.dense(layer.intermediate(x)))
        x = hook(p + "resid_post", ff.LayerNorm(x + ff.dropout(m)))
    return hook("final", x)  # (B, T, d)


def _t5_attention(attn, h, source, mask, bias, prefix: str, hook: _Hook) -> torch.Tensor:
    """minit5.model.T5Attention's forward (scale 1, relative bias), its pattern and heads exposed."""
    q = attn.split(attn.q(h))  # (B, H, T, d_k)
    k, v = attn.key_value(h if source is None else source)  # (B, H, S, d_k)
    _, pattern = scaled_dot_product_attention(q, k, v, mask, scale=1.0, bias=bias, need_weights=True)
    pattern = hook(prefix + "pattern", pattern)
    heads = hook(prefix + "heads", pattern @ v)  # (B, H, T, d_k)
    B, H, T, d = heads.shape
    return attn.o(heads.transpose(1, 2).reshape(B, T, H * d))


def _run_t5_stack(stack, ids, attention_mask, hook: _Hook, prefix: str, encoded=None, encoder_attention_mask=None):
    T = ids.size(1)
    mask = padding_mask(attention_mask) if attention_mask is not None else None
    if stack.is_decoder:
        mask = combine_masks(mask, causal_mask(T, T, device=ids.device))
    encoder_mask = padding_mask(encoder_attention_mask) if encoder_attention_mask is not None else None
    x = hook(prefix + "embed", stack.dropout(stack.embed_tokens(ids)))
    bias = stack.block[0].layer[0].SelfAttention.compute_bias(T, T, device=ids.device)  # shared by the blocks
    for n, block in enumerate(stack.block):
        p = f"{prefix}blocks.{n}."
        x = hook(p + "resid_pre", x)
        sa = block.layer[0]
        a = hook(p + "attn_out", _t5_attention(sa.SelfAttention, sa.layer_norm(x), None, mask, bias, p + "attn.", hook))
        x = hook(p + "resid_mid", x + sa.dropout(a))
        if stack.is_decoder:
            ca = block.layer[1]
            c = _t5_attention(ca.EncDecAttention, ca.layer_norm(x), encoded, encoder_mask, None, p + "cross_attn.", hook)
            x = hook(p + "resid_cross", x + ca.dropout(hook(p + "cross_attn_out", c)))
        ff = block.layer[-1]
        x = hook(p + "resid_post", x + ff.dropout(hook(p + "mlp_out", ff.DenseReluDense(ff.layer_norm(x)))))
    return hook(prefix + "final", stack.dropout(stack.final_layer_norm(x)))


def _run_t5(model, input_ids, attention_mask, hook: _Hook, decoder_input_ids=None) -> torch.Tensor:
    if decoder_input_ids is None:
        raise UserError("a T5 run needs decoder_input_ids (B, T) as well, starting with decoder_start_token_id")
    encoded = _run_t5_stack(model.encoder, input_ids, attention_mask, hook, "encoder.")
    decoded = _run_t5_stack(model.decoder, decoder_input_ids, None, hook, "decoder.", encoded, attention_mask)
    return model.lm_logits(decoded)  # (B, T, V)


def run_with_hooks(model: nn.Module, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                   patches: Optional[dict[str, Patch]] = None, cache: bool = True, **kwargs):
    """Run `model` on input_ids (B, T), with each patches[name](value) replacing that activation.
    Returns (output, ActivationCache or None): GPT's and T5's logits (B, T, V) (T5: pass
    decoder_input_ids=...), BERT's H_L (B, T, d). An unknown name in `patches` is one UserError
    listing the names."""
    kind = family(model)
    hook = _Hook(hook_names(model), dict(patches or {}), cache)
    run = {"gpt": _run_gpt, "bert": _run_bert, "t5": _run_t5}[kind]
    with torch.no_grad():
        out = run(model, input_ids, attention_mask, hook, **kwargs)
    return out, (hook.cache if cache else None)


def run_with_cache(model, input_ids, attention_mask=None, **kwargs):
    """(output, cache of every named activation) of one run without patches."""
    return run_with_hooks(model, input_ids, attention_mask, cache=True, **kwargs)


# Patches: functions of the activation, for `patches={name: patch}`.

def zero() -> Patch:
    """Replace the whole activation by zeros (zero ablation)."""
    return torch.zeros_like


def from_run(cache: ActivationCache, name: str) -> Patch:
    """Replace the activation by the same-named one of another run (activation patching)."""
    return lambda value: cache[name].expand_as(value).clone()


def _head_patch(head: int, make: Callable[[torch.Tensor], torch.Tensor]) -> Patch:
    def patch(value: torch.Tensor) -> torch.Tensor:  # (B, H, T, d_k) or (B, H, T, T)
        if not 0 <= head < value.size(1):
            raise UserError(f"head {head} does not exist; this layer has heads 0..{value.size(1) - 1}")
        value = value.clone()
        value[:, head] = make(value[:, head])
        return value
    return patch


def zero_head(head: int) -> Patch:
    """z_h := 0 in `blocks.N.attn.heads`: head h writes nothing into the residual stream."""
    return _head_patch(head, torch.zeros_like)


def mean_head(head: int, reference: torch.Tensor) -> Patch:
    """z_h := its mean over the batch of a reference run (reference: that run's blocks.N.attn.heads
    (B, H, T, d_k)), per position: the head keeps its average effect but loses what depends on the input."""
    return _head_patch(head, lambda z: reference[:, head].mean(0, keepdim=True).expand_as(z))


def patch_head(head: int, cache: ActivationCache, name: str) -> Patch:
    """Head h's value from another run's cache (same shapes), the other heads untouched."""
    return _head_patch(head, lambda z: cache[name][:, head].expand_as(z))
