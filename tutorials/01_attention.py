# %% [markdown]
# # 01 · Attention, by hand
#
# ## The problem attention solves
#
# In "the animal did not cross the street because **it** was too tired", the vector that a model
# builds for "it" must carry information from "animal", six tokens back. A recurrent network
# passes everything through one state vector, step after step, so distant words arrive faded and
# nothing can be computed in parallel; a convolution only sees a fixed window. Attention lets
# every position read *directly* from every other position, with weights computed from the
# content itself: "it" asks a question (a query), every word offers a label (a key) and a content
# (a value), and "it" receives the values mixed in proportion to how well their keys answer its
# query. One matrix product does it for all positions at once. Both BERT and GPT are stacks of
# this operation; they differ only in *which* positions each one may read (tutorial 02) and in
# what they are trained to predict (tutorials 04 and 08).
#
# ## Notation (used in every tutorial)
#
# Stated once here and in `docs/notation.md` (which also lists every formula of the course):
#
# | symbol | meaning | code name |
# | --- | --- | --- |
# | `B`, `T`, `V` | batch size, sequence length, vocabulary size | `batch_size`, `seq_len`, `vocab_size` |
# | `d` | model width (Vaswani: `d_model`; Devlin: `H`) | `hidden_size`, `n_embd` |
# | `h` | number of heads (Devlin: `A`) | `num_attention_heads`, `n_head` |
# | `d_k = d / h` | width of one head | `head_dim` |
# | `L` | number of layers; `H_l` the `(T, d)` hidden states after layer `l` | `num_hidden_layers` |
# | `Q, K, V, M` | queries, keys, values, additive mask | `query`, `key`, `value`, `mask` |
# | `W_i^Q, W_i^K, W_i^V, W^O` | per-head projections `(d, d_k)`; output projection `(d, d)` | `query`, `key`, `value`, `out_proj` |
# | `c` | BERT's pooled [CLS] vector `tanh(H_L[0] W_p + b_p)` (Devlin: `C`) | `pooler` |
# | `x`, `x_<t`, `x~`, `I` | token ids, the prefix before `t`, the MLM-corrupted input, the masked set | `input_ids`, `labels != -100` |
#
# ## The formula
#
# Every layer of BERT and GPT is built around one formula (Vaswani et al. 2017, eq. 1, to which
# we add the mask term `M`; eq. 1 itself has none):
#
#     Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
#
# - `Q` (queries), shape `(T_q, d_k)`: one row per position that is *asking*;
# - `K` (keys), shape `(T_k, d_k)`: one row per position that can be *looked at*;
# - `V` (values), shape `(T_k, d_v)`: what each looked-at position *hands over*;
# - `M` (mask), shape `(T_q, T_k)`: 0 where looking is allowed, very negative where it is not
#   (tutorial 02).
#
# Row `i` of the result is a weighted average of the rows of `V`; the weights
# `softmax(q_i K^T / sqrt(d_k))` say how well query `i` matches each key.
#
# In this project the formula is `common/nn/attention.py:scaled_dot_product_attention`, tested in
# `tests/test_attention.py`. We first compute it step by step with small tensors, then check that
# the project's function gives the same numbers.
#
# Run it: `python tutorials/01_attention.py` (add `TUTORIAL_QUICK=1` for the short version).

# %%
import _setup

import math

import torch

from common.nn.attention import (MultiHeadAttention, merge_heads, scaled_dot_product_attention,
                              split_heads)

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)  # nothing is trained here: no gradients needed

# %% [markdown]
# ## Step 0: three small matrices
#
# Four positions (`T = 4`), eight dimensions per query/key (`d_k = 8`), and values of size
# `d_v = 3` so that the output is easy to read. The library works on batches of heads,
# `(B, h, T, d_k)`; for now `B = h = 1` and we drop those two axes when we print.

# %%
T, d_k, d_v = 4, 8, 3
Q = torch.randn(T, d_k)  # (T, d_k)
K = torch.randn(T, d_k)  # (T, d_k)
V = torch.randn(T, d_v)  # (T, d_v)
print("Q", tuple(Q.shape), " K", tuple(K.shape), " V", tuple(V.shape))

# %% [markdown]
# ## Step 1: scores = Q K^T / sqrt(d_k)
#
# `scores[i, j] = (q_i . k_j) / sqrt(d_k)`: one number per (query, key) pair, a `(T_q, T_k)`
# matrix. A large score means "query i is interested in key j".

# %%
raw = Q @ K.T  # (T, T)  raw[i, j] = q_i . k_j
scores = raw / math.sqrt(d_k)  # (T, T)
print("scores", tuple(scores.shape))
print(scores)
print("check one entry by hand: q_0 . k_1 / sqrt(8) =",
      round(float(sum(Q[0, c] * K[1, c] for c in range(d_k)) / math.sqrt(d_k)), 4),
      " scores[0, 1] =", round(float(scores[0, 1]), 4))

# %% [markdown]
# ## Step 2: weights = softmax(scores), row by row
#
#     softmax(s)_j = exp(s_j) / sum_u exp(s_u)
#
# Each row becomes a probability distribution over the keys: positive, summing to 1.
# Subtracting the row maximum first changes nothing mathematically (it cancels between the
# numerator and the denominator) but keeps `exp` from overflowing; `torch.softmax` does the same.

# %%
shifted = scores - scores.max(dim=-1, keepdim=True).values  # every entry <= 0
weights = shifted.exp() / shifted.exp().sum(dim=-1, keepdim=True)  # (T, T)
print(weights)
print("row sums:", weights.sum(dim=-1))
print("equals torch.softmax:", torch.allclose(weights, torch.softmax(scores, dim=-1), atol=1e-7))

# %% [markdown]
# ## Step 3: output = weights V
#
# Row `i` of the output is `sum_j weights[i, j] v_j`: a mixture of the value rows, in the
# proportions query `i` chose.

# %%
output = weights @ V  # (T, d_v)
print("output", tuple(output.shape))
print(output)
mix = weights[0, 0] * V[0] + weights[0, 1] * V[1] + weights[0, 2] * V[2] + weights[0, 3] * V[3]
print("row 0 by hand:", mix)

# %% [markdown]
# ## The project's function gives the same numbers
#
# `scaled_dot_product_attention(query, key, value, mask=None, ...)` takes `(B, h, T, d_k)`
# tensors, so we add the two leading axes with `[None, None]`. `need_weights=True` also returns
# the softmax weights (the models ask for them with `output_attentions=True`).

# %%
lib_out, lib_weights = scaled_dot_product_attention(Q[None, None], K[None, None], V[None, None],
                                                    need_weights=True)
print("library output", tuple(lib_out.shape), " weights", tuple(lib_weights.shape))
print("max |ours - library| output :", float((lib_out[0, 0] - output).abs().max()))
print("max |ours - library| weights:", float((lib_weights[0, 0] - weights).abs().max()))
assert torch.allclose(lib_out[0, 0], output, atol=1e-6)

# %% [markdown]
# The tests prove more than one example can: rows of weights sum to 1 and blocked keys get
# exactly 0 (`test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero`), the result
# equals PyTorch's fused kernel (`test_hand_written_attention_equals_torch_sdpa`), and without
# positions attention does not care about the order of the tokens
# (`test_self_attention_without_positions_is_permutation_equivariant`) - which is why BERT and
# GPT add position embeddings (tutorial 03).
#
# ## Why divide by sqrt(d_k)?
#
# If the entries of `q` and `k` are independent with mean 0 and variance 1, then
# `q . k = sum_{c=1}^{d_k} q_c k_c` is a sum of `d_k` terms of variance 1, so
#
#     Var(q . k) = d_k,     Var(q . k / sqrt(d_k)) = 1.
#
# Without the scaling, wider heads give larger scores, the softmax saturates (one weight near 1,
# the rest near 0) and its gradient vanishes.
#
# **Predict, then run.** One query against 16 random keys, `d_k = 256`. Without the division by
# `sqrt(d_k)`, is the largest of the 16 softmax weights (averaged over queries) closer to
# 1/16 = 0.06 or to 1? And with it? Write your guess down; the table answers it, and the assert
# after it checks the answer.

# %%
n_pairs = 2_000 if _setup.QUICK else 20_000
n_keys = 16
print(f"{'d_k':>5} {'Var(q.k)':>10} {'Var(q.k/sqrt d_k)':>18} {'max weight raw':>15} {'max weight scaled':>18}")
for d in (4, 16, 64, 256):
    q = torch.randn(n_pairs, d)
    k = torch.randn(n_pairs, d)
    dots = (q * k).sum(-1)  # (n_pairs,)
    # The largest softmax weight of one query over 16 random keys, averaged over queries:
    # close to 1/16 = 0.06 is "spread out", close to 1 is "saturated".
    keys = torch.randn(n_keys, d)
    s = q[:500] @ keys.T  # (500, n_keys)
    max_raw = torch.softmax(s, -1).max(-1).values.mean()
    max_scaled = torch.softmax(s / math.sqrt(d), -1).max(-1).values.mean()
    print(f"{d:>5} {dots.var():>10.1f} {(dots / math.sqrt(d)).var():>18.2f} {max_raw:>15.2f} {max_scaled:>18.2f}")

# %% [markdown]
# %%
# The answer at d_k = 256 (the last row): unscaled, one key takes almost all the weight.
print(f"d_k = 256: largest weight {float(max_raw):.2f} without sqrt(d_k), {float(max_scaled):.2f} with it")
assert max_raw > 0.8 and max_scaled < 0.5, (float(max_raw), float(max_scaled))

# %% [markdown]
# The raw variance grows like `d_k`; the scaled one stays near 1 whatever the head size, and the
# softmax stays equally "soft" for d_k = 4 and d_k = 256.
#
# ## Many heads: split, attend, merge
#
# Multi-head attention runs `h` attentions side by side on `d_k = d / h` dimensional slices
# (Vaswani et al. 2017, section 3.2.2):
#
#     head_i = Attention(X W_i^Q, X W_i^K, X W_i^V)
#     MultiHead(X) = Concat(head_1, ..., head_h) W^O
#
# The projections of all heads are one `(d, d)` matrix each; the split into heads is only a
# reshape: `split_heads` turns `(B, T, d)` into `(B, h, T, d_k)` and `merge_heads` undoes it
# (`common/nn/attention.py`). `W^O` is applied once, after the concatenation.

# %%
B, T, d, h = 2, 5, 16, 4
x = torch.randn(B, T, d)  # (B, T, d)
heads = split_heads(x, h)  # (B, h, T, d_k) with d_k = d / h = 4
print("x", tuple(x.shape), "-> split_heads", tuple(heads.shape), "-> merge_heads", tuple(merge_heads(heads).shape))
print("head 1 of position 2 is channels 4..7 of x:", torch.equal(heads[0, 1, 2], x[0, 2, 4:8]))
print("merge_heads(split_heads(x)) == x:", torch.equal(merge_heads(heads), x))

# %% [markdown]
# `MultiHeadAttention` holds the projections under BERT's names (`query`, `key`, `value`), so a
# real BERT checkpoint loads into it. With `output_projection=True` it computes the whole
# `MultiHead(X) = Concat(head_1, ..., head_h) W^O`, `W^O` being its `out_proj`. By default
# (`output_projection=False`) it stops at `Concat(head_1, ..., head_h)`: BERT keeps `W^O` in the
# next module (`attention.output.dense`, tutorial 03), so that the checkpoint's names match. Either
# way `W^O` is multiplied exactly once. We check the full formula, `W^O` included, then the
# default module without it:

# %%
mha = MultiHeadAttention(hidden_size=d, num_heads=h, output_projection=True).eval()
context, mha_weights = mha(x, output_attentions=True)
print("context", tuple(context.shape), " weights", tuple(mha_weights.shape), "(B, h, T_q, T_k)")

q = split_heads(mha.query(x), h)  # (B, h, T, d_k): X W_i^Q for every head i at once
k = split_heads(mha.key(x), h)
v = split_heads(mha.value(x), h)
concat = merge_heads(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1) @ v)  # (B, T, d)
by_hand = mha.out_proj(concat)  # Concat(head_1, ..., head_h) W^O: the one W^O
print("max |by hand - MultiHead(X)|:", float((by_hand - context).abs().max()))
assert torch.allclose(by_hand, context, atol=1e-5)

no_wo = MultiHeadAttention(hidden_size=d, num_heads=h).eval()  # output_projection=False
no_wo.load_state_dict(mha.state_dict(), strict=False)  # same W^Q, W^K, W^V; it has no out_proj
print("default module returns Concat(heads), before W^O:", torch.allclose(no_wo(x)[0], concat, atol=1e-5))
assert torch.allclose(no_wo(x)[0], concat, atol=1e-5)

# %% [markdown]
# ## What the weights look like
#
# Random weights give unremarkable pictures, so we build two heads whose job we know, on the
# sentence "the cat sat on the mat". Each token gets a random vector `e_t` and each position a
# random vector `p_t` (nearly orthogonal in 64 dimensions).
#
# - **same-word head**: `q_t = k_t = e_t` (times a gain). Each token matches itself best, and
#   both "the"s match each other.
# - **previous-token head**: `q_t = p_{t-1}`, `k_t = p_t`. Query t matches the key one position
#   back, a pattern real GPT models are known to learn.

# %%
_setup.seed(1)
words = "the cat sat on the mat".split()
dim = 64
vocab = sorted(set(words))
word_vec = {w: torch.randn(dim) for w in vocab}
pos_vec = torch.randn(len(words), dim)
E = torch.stack([word_vec[w] for w in words])  # (T, dim)

gain = 0.5
same_word_q = gain * E
same_word_k = gain * E
previous_q = gain * torch.cat([pos_vec[:1], pos_vec[:-1]])  # query t looks for position t-1 (0 looks at itself)
previous_k = gain * pos_vec
q_heads = torch.stack([same_word_q, previous_q])[None]  # (1, 2, T, dim)
k_heads = torch.stack([same_word_k, previous_k])[None]  # (1, 2, T, dim)
v_heads = torch.eye(len(words)).expand(1, 2, -1, -1)  # values = one-hot positions, so output = weights
_, demo_weights = scaled_dot_product_attention(q_heads, k_heads, v_heads, need_weights=True)
for h, name in enumerate(("same-word", "previous-token")):
    print(f"{name} head: each query's favourite key ->",
          [f"{words[i]}->{words[j]}" for i, j in enumerate(demo_weights[0, h].argmax(-1).tolist())])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for h, (ax, name) in enumerate(zip(axes, ("same-word head", "previous-token head"))):
        im = ax.imshow(demo_weights[0, h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(words)), words)
        ax.set_yticks(range(len(words)), words)
        ax.set_xlabel("key (looked at)")
        ax.set_title(name)
    axes[0].set_ylabel("query (looking)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="softmax weight")
    _setup.save_plot(fig, "01_attention_weights.png")

# %% [markdown]
# Each row of a heat map is one softmax: it sums to 1. In the same-word head, both "the" rows
# split their weight between the two "the" columns.
#
# ## Your turn: exercise `attention`
#
# `make exercises` writes a copy of the course to `../student/` in which the body of
# `scaled_dot_product_attention` is replaced by `raise NotImplementedError(...)`. Write it there
# (the three steps above, plus the mask of tutorial 02 and dropout on the weights when
# `training`), then `cd ../student && make grade` runs the exercise's tests and prints your grade.
# One exercise at a time:
#
#     python -m tutorials.exercises make --out ../student --only attention
#     cd ../student && python -m tutorials.exercises grade --only attention
#
# The tests that grade it:

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["attention"].pytest_command())
print("hint:", REGISTRY["attention"].hint)
