# %% [markdown]
# # 19 · Looking inside
#
# A trained model is a stack of matrices that works; interpretability asks *how*. This tutorial
# opens the models of the course with four tools, each a function of `interpret/` with a test of
# its identity:
#
# | tool | question | identity (tested) |
# |---|---|---|
# | hidden states, attentions | what does each layer hold, where does each head look? | equal to transformers' layer by layer |
# | hooks: cache and patch | what happens if this head is silenced? | a run without patches is the model's forward |
# | induction / previous-token scores | which head copies what came after the last occurrence? | 1 for a perfect head |
# | logit lens | what would the model say if it stopped at layer l? | at the last layer it is the logits |
# | attention rollout | how much of token j flows into position i through all layers? | rows sum to 1 |
# | linear probes + control task | can the part of speech be read off layer l, beyond the word itself? | selectivity = accuracy - control |
#
# Code: `interpret/hooks.py`, `interpret/induction.py`, `interpret/lens.py`, `interpret/rollout.py`,
# `interpret/probes.py`, `interpret/page.py` (`python -m interpret`: an offline attention page).
# Tests: `tests/test_interpret_*.py`, `tests/test_insides_parity.py`. Figures on real models:
# `docs/results/interpret.md`.
#
# Run it: `python tutorials/19_looking_inside.py` (about a minute on 2 idle CPU cores: one 2-layer
# model trained for 5,000 steps, at most 200 s on a slower machine); `TUTORIAL_QUICK=1` for a few
# seconds (the model then learns little: the code is the same).

# %%
import _setup

import math
import time
from pathlib import Path

import torch

from interpret import hooks, induction, lens, rollout
from interpret.page import attention_data, render_html
from minigpt import GPT, GPTConfig

_setup.seed(0)
torch.set_num_threads(1)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. Every layer's output, with transformers' names
#
# `output_hidden_states=True` returns L + 1 tensors (B, T, d): the embeddings h_0, the residual
# stream after each block, and, last, LN_f(h_L), what the LM head reads (transformers' convention).
# `output_attentions=True` returns each layer's softmax weights (B, H, T_q, T_k). T5 returns
# `encoder_hidden_states`, `decoder_hidden_states`, `encoder_attentions`, `decoder_attentions` and
# `cross_attentions`; BERT `hidden_states` and `attentions`.
#
# Our model: a 2-layer **attention-only** GPT (`feed_forward="none"`: no MLP at all, Elhage et al.
# 2021), whose heads are the only thing that moves information, so their circuits can be read.

# %%
VOCAB, PERIOD = 26, 16
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=VOCAB, feed_forward="none",
                   position_embedding="rope")
model = GPT(config).eval()
ids = induction.repeated_tokens(8, PERIOD, VOCAB, seed=1)  # (8, 32): 16 random tokens, then the same 16
with torch.no_grad():
    out = model(ids, output_hidden_states=True, output_attentions=True)
print("hidden_states:", len(out.hidden_states), "x", tuple(out.hidden_states[0].shape))
print("attentions:   ", len(out.attentions), "x", tuple(out.attentions[0].shape), "(B, H, T_q, T_k)")
assert torch.equal(model.lm_head(out.hidden_states[-1]), out.logits)

# %% [markdown]
# ## 2. Hooks: every named activation, and any of them replaced
#
# `run_with_cache` walks the model with its own modules and passes each intermediate value through
# a hook; the cache keeps them all. `run_with_hooks(..., patches={name: f})` replaces a value by
# `f(value)`: zero it, set it to its mean, or take it from another run (activation patching).

# %%
logits, cache = hooks.run_with_cache(model, ids)
print(hooks.describe_names(list(cache)))
print("pattern of layer 1:", tuple(cache["blocks.1.attn.pattern"].shape),
      " heads of layer 1:", tuple(cache["blocks.1.attn.heads"].shape))
assert (logits - out.logits).abs().max() < 1e-5  # the hooked run IS the forward

# %% [markdown]
# **Predict, then run.** This model is untrained: its queries and keys are tiny, so every head
# attends almost uniformly to the positions it may see, A[t, k] ≈ 1 / (t + 1). The induction score
# of a head is its mean attention from each token of the repeat (t = 16..31) to the token after that
# token's first occurrence (k = t - 15). What will it be, roughly: 0.5, 0.25, or below 0.05?
# Work it out from 1 / (t + 1) before running the cell.

# %%
scores = induction.induction_score(out.attentions, PERIOD)
uniform = sum(1 / (t + 1) for t in range(PERIOD, 2 * PERIOD)) / PERIOD
print("induction scores of the untrained model:\n", scores.round(decimals=3))
print(f"uniform attention would give mean_t 1/(t+1) = {uniform:.3f}")
assert (scores - uniform).abs().max() < 0.02, "an untrained head scores what uniform attention scores"

# %% [markdown]
# ## 3. Growing an induction head
#
# Train on sequences whose second half repeats the first, with a period that changes from batch
# to batch (a fixed period could be solved by a head that always looks the same distance back).
# Only the repeat is predictable; the only way to predict it is to find the previous occurrence of
# the current token and copy its successor: a previous-token head in layer 0 and an induction head
# in layer 1 (Olsson et al. 2022). That is the textbook circuit, not a promise: in the short runs of
# docs/results/interpret.md one model copied well (repeat loss 1.44 against 3.34) through other
# heads before any head scored high, and another found a positional shortcut. Measure, then name.

# %%
def batch_of_repeats(step, batch=32):
    period = 8 + step % 17  # 8 .. 24
    return induction.repeated_tokens(batch, period, VOCAB, seed=step + 1000)

model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
steps = 30 if QUICK else 5000
budget = 10 if QUICK else 200  # seconds
start = time.perf_counter()
for step in range(steps):
    x = batch_of_repeats(step)
    loss = model(x, labels=x).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 200 == 0:
        print(f"step {step:5d}  loss {loss.item():.3f}")
    if time.perf_counter() - start > budget:
        break
model.eval()
print(f"trained {step + 1} steps in {time.perf_counter() - start:.0f} s")

# %%
test = induction.repeated_tokens(64, PERIOD, VOCAB, seed=7)
logits, cache = hooks.run_with_cache(model, test)
pattern = cache.stack("attn.pattern")  # (L, B, H, T, T)
ind, prev = induction.induction_score(pattern, PERIOD), induction.previous_token_score(pattern)
print("induction score (layer x head):\n", ind.round(decimals=3))
print("previous-token score (layer x head):\n", prev.round(decimals=3))
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    for ax, grid, title in zip(axes, (ind, prev), ("induction score", "previous-token score")):
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(title), ax.set_xlabel("head"), ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes)
    _setup.save_plot(fig, "19_induction_scores.png")

# %% [markdown]
# ## 4. Ablation: silence the best induction head
#
# Zeroing `blocks.l.attn.heads[:, h]` removes exactly head h's term from the residual stream
# (attn_out = sum_h z_h W^O_h). If the head does the copying, the loss on the repeat must jump back
# towards the loss on the random first half (ln 26 = 3.26).

# %%
layer, head = divmod(int(ind.argmax()), ind.size(1))
name = f"blocks.{layer}.attn.heads"
ablated, _ = hooks.run_with_hooks(model, test, patches={name: hooks.zero_head(head)}, cache=False)
first, repeat = induction.loss_per_half(logits, test, PERIOD)
_, repeat_ablated = induction.loss_per_half(ablated, test, PERIOD)
print(f"best head: layer {layer} head {head}, induction score {ind[layer, head]:.3f}")
print(f"loss on the first copy {first:.3f}; on the repeat {repeat:.3f}, with the head zeroed {repeat_ablated:.3f}")

# %% [markdown]
# ## 5. The logit lens
#
# Read each layer's residual stream through the final norm and the LM head:
# lens_l = LN_f(h_l) W_U. At the last layer this is the model's output (the identity below); the
# layers before say what the model "would answer" if it stopped there.

# %%
readings = lens.logit_lens(model, test)  # (L + 1, B, T, V)
assert (readings[-1] - logits).abs().max() < 1e-5
repeat_part = test[:, PERIOD - 1:]  # predictions of the repeat's tokens
accuracy = lens.lens_accuracy(readings[:, :, PERIOD - 1:], repeat_part)
for l, a in enumerate(accuracy.tolist()):
    print(f"{'embeddings' if l == 0 else f'after block {l - 1}'}: next-token accuracy on the repeat {a:.3f}")

# %% [markdown]
# ## 6. Attention rollout (Abnar and Zuidema 2020)
#
# One layer's attention says little about where information ends up: position i's state after
# layer 2 mixes states that already mixed others. Rollout multiplies the layers' attention, each
# mixed half and half with the identity for the residual connection:
# R = Â_L ... Â_1, Â_l = 0.5 mean_h A_l + 0.5 I. Every row of R sums to 1.

# %%
R = rollout.rollout(out.attentions if QUICK else tuple(cache.stack("attn.pattern")))
rows = R.sum(-1)
print("rollout", tuple(R.shape), "row sums in", (rows.min().item(), rows.max().item()))
assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
print("raw attention of the last query, layer 1 mean:", cache["blocks.1.attn.pattern"][0, :, -1].mean(0)[:6].round(decimals=3))
print("rollout of the last query:                   ", R[0, -1, :6].round(decimals=3))

# %% [markdown]
# ## 7. Linear probes and their control task
#
# A probe trains a linear classifier on a frozen layer to read a property (here: part of speech).
# Hewitt and Liang (2019): give every word type a random tag instead and probe again; what the
# probe gets right there it got by memorising words. Selectivity = accuracy - control accuracy.
# With the real MiniLM checkpoint and CoNLL-2003 (when both are present): `python -m
# interpret.figures probes` and the table in docs/results/interpret.md. Here a miniature that
# runs anywhere: "tags" that are a linear function of the features, and a control of random tags.

# %%
from interpret import probes  # noqa: E402

g = torch.Generator().manual_seed(0)
words = [f"w{i % 40}" for i in range(800)]
embedding = {w: torch.randn(16, generator=g) for w in set(words)}
x = torch.stack([embedding[w] + 0.3 * torch.randn(16, generator=g) for w in words])
tags = ["N" if v[0] > 0 else "V" for v in x]
rows = probes.probe_layers(x[None, :600], x[None, 600:], tags[:600], tags[600:], words[:600], words[600:])
real, control, selectivity = rows[0]
print(f"probe accuracy {real:.3f}, control task {control:.3f}, selectivity {selectivity:.3f}")

# %% [markdown]
# ## 8. The attention page
#
# `python -m interpret --model_name_or_path DIR --text TEXT --output page.html` writes ONE html
# file with every layer x head; hover a token to see where it looks. Nothing loads from the
# network, so it opens anywhere. The data sits in `<script type="application/json"
# id="attention-data">` for other tools. Here the page of our model on one repeated sequence:

# %%
class Letters:  # our model's token ids are letters
    def convert_ids_to_tokens(self, ids):
        return [chr(ord("a") + i) for i in ids]

    def encode(self, text, add_special_tokens=False):
        return [ord(c) - ord("a") for c in text]

data = attention_data("gpt", model, Letters(), "abcdefghabcdefgh")
_setup.OUT.mkdir(parents=True, exist_ok=True)
page = Path(_setup.OUT) / "19_attention.html"
page.write_text(render_html(data, "the induction model"), encoding="utf-8")
print(f"wrote {page} ({page.stat().st_size / 1024:.0f} KB)")

# %% [markdown]
# ## Your turn: exercise `induction_score`
#
# In the student copy, `induction_score` (`interpret/induction.py`) raises `NotImplementedError`:
#
#     python -m tutorials.exercises make --out ../student --only induction_score
#     cd ../student && python -m tutorials.exercises grade --only induction_score
#
# The grade runs its tests in tests/test_interpret_experiments.py. Which wrong versions would a test catch? Attending to the
# earlier copy of the same token (k = t - n: a *duplicate-token* head) scores 0 on a perfect
# induction head; so does forgetting the `start` offset; averaging over the heads instead of the
# batch gives the wrong shape.
#
# Further: patch `blocks.0.attn.heads` of the previous-token head from a run on *shuffled* tokens
# (`hooks.patch_head`) and watch the induction head's score fall: K-composition, measured.
