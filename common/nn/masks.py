"""Attention masks and MLM masking.

Convention everywhere in this project: a boolean mask is True where attention is ALLOWED
(query i may look at key j) and False where it is blocked. `attention_mask` from a tokenizer
follows transformers: 1 = real token, 0 = padding.

Shapes: B batch, T_q query length, T_k key length. Masks are built broadcastable to the
attention scores (B, H, T_q, T_k):
    padding_mask  -> (B, 1, 1, T_k)   a padded key is hidden from every query
    causal_mask   -> (1, 1, T_q, T_k) query i sees keys j <= i (+ the offset of a KV cache)

Blocked scores are set to the most negative FINITE value of the dtype, not -inf: a row in which
every key is blocked then gets a uniform softmax (finite numbers) instead of exp(-inf)/0 = NaN,
in float32, bfloat16 and float16 alike.
"""
from __future__ import annotations

from typing import Optional

import torch


# BEGIN EXERCISE masks
def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T_k) of 1 = keep / 0 = pad  ->  bool (B, 1, 1, T_k), True = may be attended to."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, seq_len), got {tuple(attention_mask.shape)}; "
            "pass the tokenizer's attention_mask (1 = token, 0 = padding)."
        )
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len: int, k_len: Optional[int] = None, device=None) -> torch.Tensor:
    """bool (1, 1, T_q, T_k): M[i, j] = True iff j <= i + (T_k - T_q).

    With T_k == T_q this is the lower triangle. With a KV cache the T_q new queries are the
    LAST T_q positions of the T_k keys, so query i sits at absolute position i + T_k - T_q.
    """
    k_len = q_len if k_len is None else k_len
    if k_len < q_len:
        raise ValueError(f"causal_mask: k_len ({k_len}) must be >= q_len ({q_len})")
    q_pos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)  # (T_q, 1)
    k_pos = torch.arange(k_len, device=device)[None, :]  # (1, T_k)
    return (k_pos <= q_pos)[None, None]  # (1, 1, T_q, T_k)
# END EXERCISE masks


def combine_masks(*masks: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Logical AND of boolean masks (None = no constraint); broadcasting as usual."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else (out & m)
    return out


def mask_value(dtype: torch.dtype) -> float:
    """The most negative finite number of `dtype`: the score given to a blocked key."""
    return torch.finfo(dtype).min


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bool mask -> additive mask M: 0 where allowed, finfo(dtype).min where blocked."""
    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zeros, torch.tensor(mask_value(dtype), dtype=dtype, device=mask.device))


# BEGIN EXERCISE mlm_masking
def mlm_mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    special_tokens_mask: Optional[torch.Tensor] = None,
    mlm_probability: float = 0.15,
    random_token_ids: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption (Devlin et al., 2019, section 3.1).

    Each non-special position is selected with probability p = mlm_probability; the set of
    selected positions is I. For i in I: with prob. 0.8 x_i -> [MASK], 0.1 -> a random token,
    0.1 -> unchanged. labels_i = x_i for i in I and -100 elsewhere (ignored by the loss).

    input_ids: (B, T) long; special_tokens_mask: (B, T) bool/int, 1 = never select
    (CLS, SEP, PAD, ...). random_token_ids: 1-D tensor of ids the random branch draws from
    (the non-special vocabulary); default all of range(vocab_size).
    Returns (corrupted_input_ids (B, T), labels (B, T)).
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    labels = input_ids.clone()
    inputs = input_ids.clone()
    probs = torch.full(inputs.shape, mlm_probability, device=inputs.device)
    if special_tokens_mask is not None:
        probs.masked_fill_(special_tokens_mask.bool(), 0.0)
    selected = torch.bernoulli(probs, generator=generator).bool()  # the set I
    labels[~selected] = -100

    # One uniform draw per position decides its branch: [0, .8) mask, [.8, .9) random, [.9, 1) keep.
    u = torch.rand(inputs.shape, generator=generator, device=inputs.device)
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)
    inputs[to_mask] = mask_token_id

    if random_token_ids is None:
        random_token_ids = torch.arange(vocab_size, device=inputs.device)
    pick = torch.randint(len(random_token_ids), inputs.shape, generator=generator, device=inputs.device)
    inputs[to_random] = random_token_ids.to(inputs.device)[pick][to_random]
    return inputs, labels
# END EXERCISE mlm_masking
