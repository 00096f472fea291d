# %% [markdown]
# # 13 · T5: an encoder that reads, a decoder that writes while reading
#
# BERT (tutorials 03-07) is an encoder: every token sees every other, and it fills masked tokens.
# GPT (08-09) is a decoder: each token sees only the ones before it, and it writes the next one.
# T5 (Raffel et al. 2020) joins them. The encoder reads the source x; the decoder writes the target
# y one token at a time, and in every layer it *attends to the encoder's states*:
#
#     enc = Encoder(x)                                          (B, S, d), computed once
#     h   = h + SelfAttn(RMS(h))          causal, over y_<t
#     h   = h + CrossAttn(RMS(h), enc)    Q from the decoder, K and V from enc
#     h   = h + FFN(RMS(h))
#
# (`RMS` is RMSNorm, `x / sqrt(mean(x^2) + eps) * weight`, tutorial 17 writes it by hand; `h` is the
# decoder's hidden state, `d` the model width as everywhere in the course, docs/notation.md.)
# This tutorial is the architecture and the pretraining objective: cross-attention (section 1),
# the relative position buckets (2), span corruption (3). How T5 is trained on pairs and how it
# writes (teacher forcing, greedy and beam search, BLEU) is tutorial 14. Code: `minit5/model.py`,
# `common/data/span_corruption.py`. Tests: `tests/test_t5_parity.py` (equal to transformers' T5),
# `tests/test_span_corruption.py`.
#
# Run it: `python tutorials/13_t5.py` (a few seconds, no training).

# %%
import _setup

import random

import torch

from common.data.span_corruption import (compute_input_and_target_lengths, corrupt_spans,
                                         random_spans_noise_mask)
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration, relative_position_bucket

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 1. Cross-attention: queries from the target, keys and values from the source
#
# In self-attention Q, K, V all come from one sequence. In cross-attention the T target positions
# ask (Q, T rows) and the S source positions answer (K, V, S rows): the weights are (T, S). A padded
# source position is masked out, so what stands there cannot change the output.

# %%
config = T5Config(vocab_size=60, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32)
model = T5ForConditionalGeneration(config).eval()
source = torch.tensor([[5, 6, 7, 8, 1, 0, 0]])  # 4 tokens, </s>, 2 pads
source_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
target = torch.tensor([[0, 9, 10]])  # decoder start (= pad), then two tokens
encoded = model.encode(source, source_mask)
layer = model.decoder.block[0].layer[1].EncDecAttention
q = layer.split(layer.q(model.decoder.embed_tokens(target)))  # (1, H, T, d_k)
k, v = layer.key_value(encoded)  # (1, H, S, d_k)
print("queries", tuple(q.shape), " keys", tuple(k.shape), " weights (B, H, T, S) =",
      (1, config.num_heads, target.size(1), source.size(1)))

with torch.no_grad():
    logits = model(input_ids=source, attention_mask=source_mask, decoder_input_ids=target).logits
    other_pads = source.clone()
    other_pads[0, 5:] = 42  # change what stands in the padded slots
    logits_other = model(input_ids=other_pads, attention_mask=source_mask, decoder_input_ids=target).logits
print("max change of the logits when the padded source tokens change:", (logits - logits_other).abs().max().item())

# %% [markdown]
# ## 2. Relative position buckets
#
# T5 has no position embeddings. Each attention score gets a learned bias `b_h[bucket(r)]` (one
# scalar per head h and bucket) that depends only on the distance r = j - i from query i to key j.
# Near distances get a bucket each; longer ones share log-spaced buckets up to max_distance D (128),
# and every distance beyond D lands in the last bucket. Call `n_b` the buckets of ONE direction:
#
# - the encoder (bidirectional) splits its 32 buckets in two, `n_b = 16` for keys before the query
#   and 16 for keys after it; the decoder (causal) never sees the future, so all `n_b = 32` serve
#   the past;
# - within a direction, with n = |r|: `bucket(n) = n` for n < n_b/2 (exact), else
#   `n_b/2 + floor(log(n / (n_b/2)) / log(D / (n_b/2)) (n_b - n_b/2))`, at most `n_b - 1`.
#
# **Predict, then run.** With 32 buckets, up to which distance does the encoder give every distance
# its own bucket? And the decoder? (Hint: n_b/2 - 1 in each.)

# %%
distances = torch.arange(-20, 21)
both = relative_position_bucket(distances, bidirectional=True, num_buckets=32, max_distance=128)
causal = relative_position_bucket(distances, bidirectional=False, num_buckets=32, max_distance=128)
print("r       ", " ".join(f"{int(r):3d}" for r in distances[::2]))
print("encoder ", " ".join(f"{int(b):3d}" for b in both[::2]))
print("decoder ", " ".join(f"{int(b):3d}" for b in causal[::2]))
far = relative_position_bucket(torch.tensor([-8, -16, -32, -64, -127, -128, -1000]), True, 32, 128)
print("encoder buckets of r = -8, -16, -32, -64, -127, -128, -1000:", far.tolist())
past = torch.arange(0, -200, -1)  # r = 0, -1, ..., -199: keys at or before the query


def own_bucket_up_to(buckets):
    """The largest n such that every distance 0..n has a bucket no other distance shares."""
    alone = torch.bincount(buckets)[buckets] == 1  # (200,) distance n alone in its bucket
    return int(alone.long().cumprod(0).sum()) - 1


exact_encoder = own_bucket_up_to(relative_position_bucket(past, True, 32, 128))
exact_decoder = own_bucket_up_to(relative_position_bucket(past, False, 32, 128))
print(f"one bucket per distance up to |r| = {exact_encoder} (encoder, n_b = 16) and "
      f"{exact_decoder} (decoder, n_b = 32)")
assert (exact_encoder, exact_decoder) == (7, 15), "n < n_b/2 is exact: 8 = 16/2 and 16 = 32/2"

plt = _setup.pyplot()
if plt is not None:
    T = 48
    grid = torch.arange(T)[None, :] - torch.arange(T)[:, None]  # r = j - i
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, bidirectional, title in ((axes[0], True, "encoder (bidirectional)"), (axes[1], False, "decoder (causal)")):
        ax.imshow(relative_position_bucket(grid, bidirectional, 32, 128), cmap="viridis")
        ax.set_title(title)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    _setup.save_plot(fig, "13_t5_buckets.png")

# %% [markdown]
# ## 3. Span corruption on a sentence
#
# 15% of the tokens are dropped in spans of mean length 3: round(L * 0.15) noise tokens in
# round(noise / 3) spans, cut at random. Each span becomes one sentinel in the input; the target
# lists each sentinel followed by what it replaced (and no sentinel after the last span: T5's code
# ends the target there; the paper's figure 2 draws one more). The collator then appends </s> to
# both. Sentinels count down from the top of the vocabulary (<extra_id_0> = vocab_size - 1). For a
# 128-token input T5 cuts raw blocks of 141 tokens: 141 - 21 noise + 7 sentinels + </s> = 128.

# %%
words = ("the quick brown fox jumps over the lazy dog while the small cat watches from the warm "
         "window and the old man reads his morning paper at the kitchen table before he walks "
         "down the hill to the market").split()
vocab_size = 1000
ids = list(range(len(words)))  # token i = word i
mask = random_spans_noise_mask(len(words), 0.15, 3.0, random.Random(7))  # T5 always ends with a span
inputs, targets = corrupt_spans(ids, mask, first_sentinel_id=vocab_size - 1)
name = lambda i: words[i] if i < len(words) else f"<extra_id_{vocab_size - 1 - i}>"  # noqa: E731
print("noise tokens:", sum(mask), "of", len(words), " spans:", len(set(i for i in inputs if i >= len(words))))
print("input :", " ".join(map(name, inputs)))
print("target:", " ".join(map(name, targets)))
print("compute_input_and_target_lengths(128) =", compute_input_and_target_lengths(128), "(raw tokens, target)")

# %% [markdown]
# In the printed pair, each sentinel of the input appears once in the target, followed by the words
# it hides: the decoder learns to write exactly what the encoder could not see, and the target is
# about a quarter of the input's length (21 + 7 + 1 tokens for 128), which makes pretraining cheap.
#
# ## Your turn: exercises `relative_position_bucket` and `span_corruption`
#
# In the student copy (`make exercises`), `relative_position_bucket` (`minit5/model.py`) and
# `random_spans_noise_mask` / `corrupt_spans` (`common/data/span_corruption.py`) raise
# `NotImplementedError`. Write them from section 2's formula and section 3's rule, then grade:
#
#     python -m tutorials.exercises make --out ../student --only relative_position_bucket --only span_corruption
#     cd ../student && python -m tutorials.exercises grade --only relative_position_bucket --only span_corruption

# %%
from tutorials.exercises import REGISTRY

for name in ("relative_position_bucket", "span_corruption"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
