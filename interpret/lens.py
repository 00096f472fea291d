"""The logit lens (nostalgebraist 2020): read every layer's residual stream with the model's own
final norm and LM head, as if the model stopped there.

    lens_l = LN_f(h_l) W_U        l = 0 .. L-1   (h_0: the embeddings; h_l: after block l)
    lens_L = LN_f(h_L) W_U        = the model's logits

GPT's hidden_states (transformers' convention) already end with LN_f(h_L), so the last one goes
through the head WITHOUT the norm again: a second LN_f is the classic slip (tutorials/mistakes.py).
"""
from __future__ import annotations

from typing import Optional

import torch


def logit_lens(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T) ids of a minigpt.GPT -> (L + 1, B, T, V): LN_f(h_l) W_U for every layer l."""
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = out.hidden_states  # L + 1 of (B, T, d); the last one is LN_f(h_L) already
        ln_f, head = model.transformer.ln_f, model.lm_head
        lens = [head(ln_f(h)) for h in states[:-1]] + [head(states[-1])]
    return torch.stack(lens)  # (L + 1, B, T, V)


def lens_accuracy(lens: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token accuracy of each layer's reading: mean over b, t < T-1 of
    [argmax_v lens_l[b, t, v] == x_{b, t+1}]. (L + 1, B, T, V), (B, T) -> (L + 1,)."""
    guess = lens[:, :, :-1].argmax(-1)  # (L + 1, B, T - 1)
    return (guess == input_ids[None, :, 1:]).float().mean(dim=(1, 2))
