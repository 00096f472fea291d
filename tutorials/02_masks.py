# %% [markdown]
# # 02 · Masks: who may look at whom
#
# The `M` in tutorial 01's formula decides which keys each query may attend to:
#
#     Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
#     M[i, j] = 0                 if query i may look at key j
#     M[i, j] = very negative     if it may not  (then exp(...) = 0: key j gets weight 0)
#
# Two reasons to block a key:
#
# - **padding**: sentences of a batch have different lengths, so short ones are filled up with
#   `[PAD]`. Nobody may attend to a pad. BERT uses only this mask, so every token sees the
#   tokens on both sides of it: BERT is *bidirectional*.
# - **causality**: a language model that predicts the next token `x_{t+1}` from `x_1..x_t` must
#   not peek at it. Query `i` sees keys `j <= i` only. GPT uses this mask (and the padding one):
#   it reads left to right, which is what lets it generate (tutorials 08 and 10).
#
# In code, a mask is a **boolean tensor, True = may attend** (`common/nn/masks.py`). It is built
# with the shape that broadcasts against the scores `(B, h, T_q, T_k)` (`h` heads):
#
#     padding_mask(attention_mask)  -> (B, 1, 1, T_k)
#     causal_mask(T_q, T_k)         -> (1, 1, T_q, T_k)
#
# Run it: `python tutorials/02_masks.py`.

# %%
import _setup

import math

import torch

from common.nn.attention import scaled_dot_product_attention
from common.nn.masks import additive_mask, causal_mask, combine_masks, mask_value, padding_mask
from common.text.auto import BertTokenizer

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## Padding: the tokenizer's attention_mask
#
# A tokenizer that pads a batch also returns `attention_mask`: 1 for a real token, 0 for a pad
# (the convention of Hugging Face `transformers`, which ours follows). A tiny word-level
# vocabulary is enough to see it:

# %%
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
tokenizer = BertTokenizer(vocab=vocab)
batch = tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
for row in range(2):
    print(tokenizer.convert_ids_to_tokens(batch["input_ids"][row].tolist()))
print("attention_mask:\n", batch["attention_mask"])

# %% [markdown]
# `padding_mask` turns the `(B, T)` ones and zeros into booleans of shape `(B, 1, 1, T)`: the
# two 1-axes broadcast over the heads and over the queries, so a pad column is hidden from
# every query of every head.

# %%
pad = padding_mask(batch["attention_mask"])
print("padding_mask", tuple(pad.shape), "(B, 1, 1, T_k)")
B, T = batch["input_ids"].shape
h = 2
print("broadcast to the scores (B, h, T, T):", tuple(pad.expand(B, h, T, T).shape))
print("sentence 2, every query sees:", pad[1, 0, 0].int().tolist())

# %% [markdown]
# ## Causality: the lower triangle
#
#     causal_mask: M[i, j] = True  iff  j <= i
#
# With a KV cache (tutorial 09) only the newest `T_q` queries are computed, against all `T_k`
# keys so far; query `i` then sits at position `i + T_k - T_q`, and the mask is the last `T_q`
# rows of the full triangle.

# %%
print("causal_mask(5):\n", causal_mask(5)[0, 0].int())
print("causal_mask(q_len=2, k_len=5), the last two rows:\n", causal_mask(2, 5)[0, 0].int())
assert torch.equal(causal_mask(2, 5)[0, 0], causal_mask(5)[0, 0, 3:])

# %% [markdown]
# ## Both at once
#
# A decoder over a padded batch needs both: allowed = (key is not a pad) AND (key is not in the
# future). `combine_masks` is that logical AND, with broadcasting: `(B, 1, 1, T)` and
# `(1, 1, T, T)` give `(B, 1, T, T)`.

# %%
both = combine_masks(pad, causal_mask(T))
print("combined", tuple(both.shape))
print("sentence 2 ('[CLS] a dog ran [SEP]' + 3 pads):\n", both[1, 0].int())

# %% [markdown]
# ## What a blocked score becomes
#
# The attention code writes `scores.masked_fill(~mask, mask_value(dtype))`: a blocked score is
# replaced by the **most negative finite number** of the dtype, `torch.finfo(dtype).min`. After
# the softmax, `exp(min - max)` underflows to exactly 0, so a blocked key gets weight 0 - the same
# result `-inf` would give whenever at least one key of the row is allowed.
# `additive_mask` writes the same thing as the additive `M` of the formula. Below, three dtypes:
# float32, and two 16-bit floats that halve memory: float16 (5 exponent bits, 10 mantissa bits: fine
# steps, a small range, largest 65504) and bfloat16 ("brain float": float32's 8 exponent bits and 7
# mantissa bits: float32's range, about 3 significant digits).

# %%
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    print(f"{str(dtype):>15}: mask_value = {mask_value(dtype):.4g}")
print("additive M for '[CLS] a dog ran [SEP] + pads':", [f"{m:.3g}" for m in additive_mask(pad[1, 0, 0]).tolist()])

scores = torch.randn(1, 1, T, T)  # (B, h, T_q, T_k) for sentence 2
blocked = scores.masked_fill(~pad[1:2], mask_value(scores.dtype))
weights = torch.softmax(blocked, dim=-1)
print("weights of query 0 over the keys:", weights[0, 0, 0])
print("weight on the pads, all queries:", float(weights[..., 5:].abs().max()), "(exactly zero)")

# %% [markdown]
# ## Why not -inf? A row with nothing to look at
#
# Sometimes a query may attend to **no** key at all. It happens with left padding (what batched
# generation uses, so that every sentence ends at the same position) and a causal mask: the
# leading pads are queries whose past holds nothing but pads.

# %%
left_tokenizer = BertTokenizer(vocab=vocab, padding_side="left")
left = left_tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
print(left_tokenizer.convert_ids_to_tokens(left["input_ids"][1].tolist()))
left_mask = combine_masks(padding_mask(left["attention_mask"]), causal_mask(T))
empty_rows = (~left_mask.any(dim=-1))[1, 0]
print("queries of sentence 2 that may attend to nothing:", empty_rows.nonzero().flatten().tolist())

# %% [markdown]
# With `-inf` such a row is `softmax(-inf, ..., -inf) = 0 / 0 = NaN`, and the NaN spreads
# through every later layer and into the loss. With the most negative finite value, all scores
# of the row are equal, so the softmax is uniform over all `T` keys (1/8 here) and the output is
# finite (the row is a pad; whatever it computes is never used). This holds in every dtype the models run in:

# %%
q = torch.randn(B, h, T, 8)
k = torch.randn(B, h, T, 8)
v = torch.randn(B, h, T, 8)
with_inf = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~left_mask, float("-inf")), dim=-1)
print("with -inf: NaN in the weights?", bool(with_inf.isnan().any()))
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    out, w = scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), left_mask, need_weights=True)
    print(f"{str(dtype):>15}: output finite everywhere: {bool(out.isfinite().all())},"
          f" weights of the empty row: {w[1, 0, 0, :3].float().tolist()} ...")
    assert out.isfinite().all()

# %% [markdown]
# `tests/test_masks.py::test_a_fully_blocked_row_gives_finite_outputs_never_nan` proves it for
# the three dtypes.
#
# ## Padding changes nothing for the real tokens
#
# Because a pad key gets weight exactly 0, whatever vectors sit at the padded positions, the
# outputs of the real tokens stay the same. We overwrite the pads' keys and values with noise:

# %%
out_before, _ = scaled_dot_product_attention(q, k, v, pad)
k_noisy, v_noisy = k.clone(), v.clone()
k_noisy[1, :, 5:] = 100 * torch.randn_like(k_noisy[1, :, 5:])
v_noisy[1, :, 5:] = 100 * torch.randn_like(v_noisy[1, :, 5:])
out_after, _ = scaled_dot_product_attention(q, k_noisy, v_noisy, pad)
print("largest change of any output:", float((out_after - out_before).abs().max()))
assert torch.equal(out_after, out_before)

# %% [markdown]
# (`tests/test_attention.py::test_changing_blocked_keys_and_values_never_changes_the_output`
# checks this on random shapes.)
#
# ## Predict, then run: who feels a change?
#
# Eight positions, self-attention on `x` itself (`Q = K = V = x`). We change the vector at
# position 3 only. **With the causal mask, which of the eight output rows change? With only the
# padding mask (no pads here: every key allowed), which ones?** Guess, then run.
# %%
x = torch.randn(1, 1, 8, 8)  # (B, h, T, d_k)
x_changed = x.clone()
x_changed[..., 3, :] += 1.0
changed = {}
for name, mask in (("causal", causal_mask(8)), ("bidirectional", None)):
    before, _ = scaled_dot_product_attention(x, x, x, mask)
    after, _ = scaled_dot_product_attention(x_changed, x_changed, x_changed, mask)
    changed[name] = ((after - before).abs().amax(-1) > 1e-6)[0, 0].nonzero().flatten().tolist()
    print(f"{name:>13}: output rows that changed: {changed[name]}")
assert changed["causal"] == [3, 4, 5, 6, 7], changed
assert changed["bidirectional"] == list(range(8)), changed
# %% [markdown]
# Causal: only rows 3..7, the positions at or after the change; an earlier position never sees a
# later token (`test_with_a_causal_mask_a_later_token_never_changes_earlier_outputs` proves it on
# random shapes). Bidirectional: every row, the earlier ones too. That one difference is the
# whole split between GPT (autoregressive: each position predicts from its left) and BERT
# (autoencoding: each position reads both sides), studied in tutorial 10.
#
# ## The three masks as pictures

# %%
plt = _setup.pyplot()
if plt is not None:
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][1].tolist())
    pictures = {
        "padding (sentence 2)": pad[1, 0, 0].expand(T, T),
        "causal": causal_mask(T)[0, 0],
        "padding AND causal": both[1, 0],
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (title, picture) in zip(axes, pictures.items()):
        ax.imshow(picture.int().numpy(), cmap="Greys", vmin=0, vmax=1.4)
        ax.set_xticks(range(T), tokens, rotation=60)
        ax.set_yticks(range(T), tokens)
        ax.set_title(title)
        ax.set_xlabel("key j")
    axes[0].set_ylabel("query i   (dark = may attend)")
    _setup.save_plot(fig, "02_masks.png")

# %% [markdown]
# ## Your turn: exercise `masks`
#
# In the student copy (`make exercises`), `padding_mask` and `causal_mask` raise
# `NotImplementedError`. Write them from the docstrings and the formulas above, then grade:
#
#     python -m tutorials.exercises make --out ../student --only masks
#     cd ../student && python -m tutorials.exercises grade --only masks     # or: make grade
#
# The exercise `attention` builds on this one: its tests pass masks into the attention.

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["masks"].pytest_command())
print("hint:", REGISTRY["masks"].hint)
