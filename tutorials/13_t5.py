# %% [markdown]
# # 12 · T5: an encoder that reads, a decoder that writes while reading
#
# BERT (tutorials 03-07) is an encoder: every token sees every other, and it fills masked tokens.
# GPT (08-09) is a decoder: each token sees only the ones before it, and it writes the next one.
# T5 (Raffel et al. 2020) joins them. The encoder reads the source x; the decoder writes the target
# y one token at a time, and in every layer it *attends to the encoder's states*:
#
#     enc = Encoder(x)                                          (B, S, C), computed once
#     d   = d + SelfAttn(RMS(d))          causal, over y_<t
#     d   = d + CrossAttn(RMS(d), enc)    Q from the decoder, K and V from enc
#     d   = d + FFN(RMS(d))
#
# Pretraining fills corrupted *spans* (section 3), and generation can keep several candidates
# (beam search, section 4). Code: `minit5/model.py`, `minit5/generate.py`,
# `common/data/span_corruption.py`. Tests: `tests/test_t5_parity.py` (equal to transformers' T5),
# `tests/test_span_corruption.py`.
#
# Run it: `python tutorials/13_t5.py` (about two minutes); `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import random
import time

import torch

from common.data.span_corruption import (compute_input_and_target_lengths, corrupt_spans,
                                         random_spans_noise_mask)
from minit5.config import T5Config
from minit5.metrics import corpus_bleu
from minit5.model import T5ForConditionalGeneration, relative_position_bucket

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

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
q = layer.split(layer.q(model.decoder.embed_tokens(target)))  # (1, H, T, d)
k, v = layer.key_value(encoded)  # (1, H, S, d)
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
# T5 has no position embeddings. Each attention score gets a learned bias that depends only on the
# distance r = j - i from query i to key j, through a bucket: distances below N/4 (here 32 buckets:
# 0..7) get a bucket each, longer ones share log-spaced buckets up to max_distance (128), beyond it
# all the last one. The encoder uses half the buckets for keys before the query and half for keys
# after it; the decoder, which never sees the future, uses all of them for the past.

# %%
distances = torch.arange(-20, 21)
both = relative_position_bucket(distances, bidirectional=True, num_buckets=32, max_distance=128)
causal = relative_position_bucket(distances, bidirectional=False, num_buckets=32, max_distance=128)
print("r       ", " ".join(f"{int(r):3d}" for r in distances[::2]))
print("encoder ", " ".join(f"{int(b):3d}" for b in both[::2]))
print("decoder ", " ".join(f"{int(b):3d}" for b in causal[::2]))
far = relative_position_bucket(torch.tensor([-8, -16, -32, -64, -127, -128, -1000]), True, 32, 128)
print("encoder buckets of r = -8, -16, -32, -64, -127, -128, -1000:", far.tolist())

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
# lists each sentinel followed by what it replaced. Sentinels count down from the top of the
# vocabulary (<extra_id_0> = vocab_size - 1). For a 128-token input T5 cuts raw blocks of 141 tokens.

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
# ## 4. Greedy against beam search
#
# Greedy decoding takes the most likely token at every step; beam search keeps the num_beams most
# likely prefixes (sum of log-probabilities) and finishes the best one, scored log P / length^alpha.
# A toy translation: the target is the source reversed, with each letter doubled, learned in a minute.
# Then both decoders translate held-out sources; BLEU and time are measured here (a shared machine:
# the times vary from run to run, the ratio less).

# %%
letters = list(range(3, 23))  # 20 "letters", ids 3..22
def pair(rng):
    src = [rng.choice(letters) for _ in range(rng.randint(3, 8))]
    return src, [t for s in reversed(src) for t in (s, s)]

rng = random.Random(0)
train_pairs = [pair(rng) for _ in range(2000)]
test_pairs = [pair(rng) for _ in range(16 if QUICK else 200)]
toy = T5ForConditionalGeneration(T5Config(vocab_size=30, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                                          dropout_rate=0.0, relative_attention_num_buckets=16,
                                          relative_attention_max_distance=32))
optimizer = torch.optim.AdamW(toy.parameters(), lr=3e-3)


def batch(pairs):
    S = max(len(s) for s, _ in pairs) + 1
    T = max(len(t) for _, t in pairs) + 1
    x = torch.zeros(len(pairs), S, dtype=torch.long)
    y = torch.full((len(pairs), T), -100)
    for i, (s, t) in enumerate(pairs):
        x[i, :len(s) + 1] = torch.tensor(s + [1])
        y[i, :len(t) + 1] = torch.tensor(t + [1])
    return x, (x != 0).long(), y


steps = 15 if QUICK else 400
for step in range(steps):
    x, m, y = batch(rng.sample(train_pairs, 32))
    loss = toy(input_ids=x, attention_mask=m, labels=y).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"after {steps} steps: loss {loss.item():.3f}")

x, m, _ = batch(test_pairs)
references = [" ".join(map(str, t)) for _, t in test_pairs]
for num_beams in (1, 4):
    start = time.perf_counter()
    out = toy.generate(x, attention_mask=m, max_new_tokens=20, num_beams=num_beams)
    seconds = time.perf_counter() - start
    hypotheses = [" ".join(str(t) for t in row[1:] if t > 2) for row in out.tolist()]
    print(f"num_beams={num_beams}: BLEU {corpus_bleu(hypotheses, references):6.2f}   {seconds * 1000:7.1f} ms "
          f"for {len(test_pairs)} sources")

# %% [markdown]
# Beam search costs about num_beams times the decoder work per step (the encoder and the
# cross-attention keys and values are computed once per source and shared by its beams). On a
# well-trained model greedy is often as good; beams help most where the model is unsure early.
