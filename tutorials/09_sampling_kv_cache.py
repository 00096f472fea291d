# %% [markdown]
# # 09 · Choosing the next token, and the KV cache
#
# A trained GPT (tutorial 08) gives, at the last position, logits `z` (one per vocabulary entry)
# and `p = softmax(z)`. Generation turns them into one token, appends it, and repeats:
#
#     greedy        x_{t+1} = argmax_i z_i                      always the likeliest: repetitive
#     sampling      x_{t+1} ~ softmax(filter(z / tau))          varied, controlled by:
#       temperature tau:  softmax(z / tau) is sharper for tau < 1, flatter for tau > 1
#       top-k:            keep the k largest z_i, set the others to -inf (probability 0)
#       top-p (nucleus):  keep the smallest set of likeliest tokens whose probability reaches p
#                         (Holtzman et al. 2020): few tokens when the model is sure, many when not
#
# The second half is about speed. Step `t` needs the keys and values of all earlier tokens, and
# those never change (the causal property of tutorial 08). Without a cache every step re-runs
# the whole prefix; the **KV cache** keeps the keys and values, so a step feeds only the newest
# token. Attention still reads all `t` cached keys (`O(t)` work per step); what is saved is
# recomputing the prefix's `K, V` and its rows through every weight (section "What a step costs").
#
# The last section: **speculative decoding**, a small draft model proposing tokens that the GPT
# checks several at a time, with the same output.
#
# Code: `common/nn/sampling.py` (`apply_temperature`, `top_k_filter`, `top_p_filter`, `next_token`),
# `common/generation/` (the one generation loop `loop.py`, `speculative.py`), `minigpt/generate.py`
# (`generate`, GPT's adapter), `common/nn/attention.py:KVCache`. Tests: `tests/test_generate.py`,
# `tests/test_generation.py`, `tests/test_attention.py` (`test_incremental_attention_with_kv_cache_*`),
# `tests/test_blocks.py` (`test_decoder_block_with_kv_cache_*`).
#
# Run it: `python tutorials/09_sampling_kv_cache.py`; `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import statistics
import time

import torch

from demo import corpus as demo_data
from common.text.char import CharTokenizer
from common.data.language_modeling import DataCollatorForLanguageModeling, GroupedTextDataset
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minigpt import GPT, GPTConfig
from common.nn.sampling import apply_temperature, next_token, top_k_filter, top_p_filter

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## A toy distribution
#
# Eight candidate next words and the logits a model might give them after "The soup was":

# %%
words = ["good", "hot", "cold", "salty", "green", "loud", "purple", "asleep"]
z = torch.tensor([3.0, 2.5, 2.0, 1.5, 0.5, 0.0, -1.0, -2.0])
p = torch.softmax(z, dim=-1)
for word, zi, pi in zip(words, z.tolist(), p.tolist()):
    print(f"  {word:<7} z = {zi:+.1f}   p = {pi:.3f}")

# %% [markdown]
# ## Temperature
#
# `softmax(z / tau)`: dividing by `tau < 1` stretches the gaps between logits (the top word takes
# more), `tau > 1` shrinks them (towards uniform), `tau -> 0` is greedy. The entropy
# `-sum_i p_i ln p_i` measures the spread: `0` for one certain word, `ln 8 = 2.08` for uniform.

# %%
for tau in (0.5, 1.0, 2.0):
    q = torch.softmax(apply_temperature(z, tau), dim=-1)
    assert torch.allclose(q, torch.softmax(z / tau, dim=-1))
    entropy = float(-(q * q.log()).sum())
    print(f"tau = {tau}: p = {q}   p(good) = {float(q[0]):.3f}, entropy {entropy:.3f}")

# %% [markdown]
# ## Top-k and top-p: the kept sets
#
# Top-k keeps a fixed number of words. Top-p sorts by probability and keeps a word while the
# words before it hold less than `p` together, so the likeliest word is always kept and the set
# grows or shrinks with the model's certainty. Both set the dropped logits to `-inf`; the
# softmax then renormalises over the kept words.

# %%
def kept(filtered):
    return [w for w, value in zip(words, filtered.tolist()) if value != float("-inf")]


k = 3
print(f"top-k, k = {k}: keeps {kept(top_k_filter(z, k))}")
order = p.argsort(descending=True)
mass_before = torch.cumsum(p[order], 0) - p[order]  # sum of the probabilities before each word
for top_p in (0.5, 0.9):
    by_hand = [words[i] for i, before in zip(order.tolist(), mass_before.tolist()) if before < top_p]
    library = kept(top_p_filter(z, top_p))
    print(f"top-p, p = {top_p}: keeps {library} (mass {float(p[[words.index(w) for w in library]].sum()):.3f}); "
          f"by hand {by_hand}")
    assert by_hand == library
sharp = torch.tensor([6.0, 1.0, 0.5, 0.0, 0.0, -1.0, -1.0, -2.0])  # a confident model
print(f"top-p, p = 0.9, on a confident distribution p(good) = {float(torch.softmax(sharp, -1)[0]):.3f}: "
      f"keeps {kept(top_p_filter(sharp, 0.9))}")

# %% [markdown]
# `next_token` applies them in that order (temperature, top-k, top-p) and draws. Drawn many
# times, the frequencies match the renormalised kept probabilities, and a dropped word never
# appears:

# %%
generator = torch.Generator().manual_seed(0)
n = 2000 if QUICK else 20000
draws = next_token(z.expand(n, -1), do_sample=True, temperature=1.0, top_k=None, top_p=0.9, generator=generator)
counts = torch.bincount(draws, minlength=len(words)).float() / n
target = torch.softmax(top_p_filter(z, 0.9), dim=-1)
for word, c, t in zip(words, counts.tolist(), target.tolist()):
    print(f"  {word:<7} drawn {c:.3f}   expected {t:.3f}")
assert counts[target == 0].sum() == 0

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
    for tau in (0.5, 1.0, 2.0):
        axes[0].plot(words, torch.softmax(z / tau, -1).tolist(), "o-", label=f"tau = {tau}")
    axes[0].set_title("temperature")
    axes[0].legend()
    for ax, title, filtered in ((axes[1], f"top-k, k = {k}", top_k_filter(z, k)),
                                (axes[2], "top-p, p = 0.9", top_p_filter(z, 0.9))):
        ax.bar(words, p.tolist(), color="lightgrey", label="p = softmax(z)")
        ax.bar(words, torch.softmax(filtered, -1).tolist(), width=0.4, label="after the filter")
        ax.set_title(title)
        ax.legend()
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_ylabel("probability")
    _setup.save_plot(fig, "09_sampling_filters.png")

# %% [markdown]
# ## Greedy versus sampling from a GPT
#
# Tutorial 08's character-level GPT when its folder is there; otherwise a short training run of
# the same model, so this tutorial runs on its own.

# %%
gpt_dir = _setup.OUT / "08_gpt"
if (gpt_dir / "model.safetensors").is_file():
    model = GPT.from_pretrained(gpt_dir)
    tokenizer = CharTokenizer.from_pretrained(gpt_dir)
    print(f"loaded tutorial 08's GPT from {gpt_dir}")
else:
    documents = demo_data.generate_corpus(num_documents=300 if QUICK else 3000, seed=0)
    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    tokenizer = CharTokenizer.from_text(text)
    (_setup.OUT / "09_data").mkdir(parents=True, exist_ok=True)
    (_setup.OUT / "09_data" / "train.txt").write_text(text, encoding="utf-8")
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=len(tokenizer), dropout=0.0))
    steps = 60 if QUICK else 800
    print(f"{gpt_dir} not found (run tutorials/08_gpt.py first to reuse it); training a GPT for {steps} steps")
    args = TrainingArguments(output_dir=str(_setup.OUT / "09_run"), overwrite_output_dir=True, save_strategy="no",
                             max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-3,
                             warmup_steps=steps // 20, weight_decay=0.01, logging_steps=max(1, steps // 10), seed=0)
    Trainer(model, args, train_dataset=GroupedTextDataset(tokenizer, _setup.OUT / "09_data" / "train.txt", 64),
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()

prompt = torch.tensor([tokenizer.encode("One day, she went to the", add_special_tokens=False)])  # (1, T0)
new = model.config.block_size - prompt.size(1)
print("greedy          :", repr(tokenizer.decode(model.generate(prompt, new)[0].tolist())))
for tau, top_k, top_p in ((0.8, 10, None), (1.0, None, 0.9), (1.5, None, None)):
    for seed in (0, 1):
        ids = model.generate(prompt, new, do_sample=True, temperature=tau, top_k=top_k, top_p=top_p, seed=seed)
        print(f"tau {tau}, k {str(top_k):<4}, p {str(top_p):<4}, seed {seed}:", repr(tokenizer.decode(ids[0].tolist())))

# %% [markdown]
# Greedy is one fixed text per prompt and tends to loop. Sampling gives a different text per seed;
# a low temperature with top-k stays close to the likeliest spelling, `tau = 1.5` without a filter
# gives the unlikely characters enough mass to produce misspellings.
#
# ## The KV cache: the same tokens
#
# `generate(..., use_cache=True)` runs the prompt once ("prefill"), stores every layer's keys and
# values in a preallocated `KVCache` (`common/nn/attention.py`), and then feeds one token per step,
# appending its `K, V`. Without the cache, every step runs the whole sequence again. The tokens
# must be identical, for greedy decoding and for sampling with the same seed:

# %%
for kwargs in ({}, {"do_sample": True, "temperature": 1.0, "top_k": 20, "seed": 3}):
    with_cache = model.generate(prompt, new, use_cache=True, **kwargs)
    without = model.generate(prompt, new, use_cache=False, **kwargs)
    print(f"{kwargs or 'greedy'}: identical tokens with and without the cache: {torch.equal(with_cache, without)}")
    assert torch.equal(with_cache, without)

# %% [markdown]
# ## The KV cache: measured
#
# A larger (random) GPT with a longer context shows the difference: per new token, without the
# cache the model processes the whole prefix of `t` tokens, with it one token against `t` cached
# keys. We time `generate` both ways, a few times each, interleaved (so a busy machine slows both
# alike), and compare the medians. The numbers depend on your machine; the ratio grows with the
# number of generated tokens. `packed_step=False` switches off the packed fast path
# (`common/generation/packed.py`), so what is measured is the KV cache alone: `GPT.forward` on one
# token per step; `return_dict_in_generate=True` says which path ran.

# %%
torch.manual_seed(0)
big = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=len(tokenizer)))
n_new = 64 if QUICK else 224
repeats = 3 if QUICK else 5
start_ids = prompt[:, :8]
times = {True: [], False: []}
for _ in range(repeats):
    for use_cache in (True, False):
        begin = time.perf_counter()
        out = big.generate(start_ids, n_new, use_cache=use_cache, packed_step=False)
        times[use_cache].append(time.perf_counter() - begin)
tokens_per_second = {use_cache: n_new / statistics.median(t) for use_cache, t in times.items()}
print(f"{n_new} new tokens after an {start_ids.size(1)}-token prompt, median of {repeats}:")
print(f"  with the cache    {tokens_per_second[True]:8.0f} tokens/s")
print(f"  without the cache {tokens_per_second[False]:8.0f} tokens/s")
print(f"  ratio {tokens_per_second[True] / tokens_per_second[False]:.1f}x "
      "(measured on this machine now; other jobs running alongside change it)")
paths = {flags: big.generate(start_ids, 16, return_dict_in_generate=True, **dict(flags)).decode_path
         for flags in ((), (("packed_step", False),), (("use_cache", False),))}
print("which path ran:", {", ".join(f"{k}={v}" for k, v in flags) or "default": path for flags, path in paths.items()})
c = big.config
cache_bytes = 2 * c.n_layer * 1 * c.n_head * c.block_size * c.head_dim * 4
print(f"the cost: a cache of 2 (K, V) x {c.n_layer} layers x {c.n_head} heads x {c.block_size} positions x "
      f"{c.head_dim} dims x 4 bytes = {cache_bytes / 1024:.0f} KiB per sequence")

# %%
if plt is not None:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["with KV cache", "without"], [tokens_per_second[True], tokens_per_second[False]])
    ax.set_ylabel("tokens per second")
    ax.set_title(f"generate: {n_new} tokens, median of {repeats}")
    _setup.save_plot(fig, "09_kv_cache_speed.png")

# %% [markdown]
# ## What a step costs
#
# A forward pass does **one multiply-add per weight per token**: a multiply and an add, 2 FLOPs,
# so about `2 |theta|` FLOPs per token (`|theta|` the weights of the matrix products; the
# embedding lookup is a read, not a product). On top of that, attention compares the new query
# with every earlier key: `O(t)` work at step `t`, **with or without the cache**. What the cache
# saves is the rest of the prefix:
#
#     without the cache, step t re-runs all t tokens: O(t) rows through every weight, O(t^2) in
#                        attention; T tokens cost O(T^2) in the weights and O(T^3) in attention
#     with the cache,    step t runs 1 token: 1 row through every weight, O(t) in attention;
#                        T tokens cost O(T) in the weights and O(T^2) in attention
#
# **Predict, then run.** A prompt of 8 tokens, 6 new tokens, greedy. How many token rows go
# through the key projection `W^K` of layer 0 with the cache? Without it? (The first new token
# comes from the prompt's own forward pass.) We count them with a forward hook:

# %%
rows = []
hook = model.transformer.h[0].attn.key.register_forward_hook(
    lambda module, inputs, output: rows.append(inputs[0].shape[1]))  # tokens in this call
counted = {}
P, n = 8, 6
for use_cache in (True, False):
    rows.clear()
    model.generate(prompt[:, :P], n, use_cache=use_cache)  # fewer than 8 steps: GPT.forward every step
    counted[use_cache] = sum(rows)
hook.remove()
print(f"rows through layer 0's W^K: with the cache {counted[True]} (= P + n - 1 = {P + n - 1}), "
      f"without {counted[False]} (= sum of P .. P + n - 1 = {sum(range(P, P + n))})")
assert counted[True] == P + n - 1 and counted[False] == sum(range(P, P + n))
flops = 2 * sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "wte" not in name and "wpe" not in name)
flops += 2 * model.transformer.wte.weight.numel()  # the tied output layer is a product too
print(f"this GPT: about {flops:,} FLOPs per token in its matrix products (2 per weight), plus attention")

# %% [markdown]
# The weights are read once per step whatever `t` is; with the cache a step is one row-vector
# product per matrix, so on a CPU it is bound by how fast the weights stream from memory, not by
# FLOPs. How `minigpt/decode_step.py` spreads that product over the cores, with measured GB/s, is
# benchmark engineering and lives in `docs/results/bench.md` ("One decode step: the weights and
# the cores").
#
# ## Speculative decoding: a draft proposes, the GPT checks
#
# At batch 1 a step is bound by reading the weights (above), and feeding `g + 1` tokens reads them
# once, as feeding 1 does. Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) spends
# that: a small **draft** model writes `g` tokens `d_1 .. d_g` one at a time (it is cheap), then the
# **target** scores all of them in ONE forward, giving its distributions `p_1 .. p_{g+1}` at once.
# The drafted tokens are checked in order:
#
#     keep d_i with probability min(1, p_i(d_i) / q_i(d_i))      q_i: the draft's distribution
#     at the first rejection draw the token from norm(max(0, p_i - q_i)) instead, and stop
#     if all g are kept, draw one more from p_{g+1}: g + 1 tokens for one target forward
#
# **Why it is exact.** Token `x` comes out of step `i` with probability
# `q(x) min(1, p(x)/q(x)) + P(reject) max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y))`. The first
# term is `min(q(x), p(x))`; the rejection probability is `1 - sum_y min(q(y), p(y)) = sum_y max(0,
# p(y) - q(y))`, which cancels the normaliser: the second term is `max(0, p(x) - q(x))`. Their sum is
# `p(x)`: **every token has the target's distribution**, whatever the draft. A bad draft only
# costs speed. Greedy is the same rule with one-hot `p` and `q`: a drafted token is kept iff it is
# the target's argmax, so the output is the target's own greedy text, token for token.
#
# **What it buys.** If each drafted token is kept with probability `a` (the acceptance rate), a
# round yields `1 + a + a^2 + ... + a^g = (1 - a^(g+1)) / (1 - a)` tokens per target forward. With
# `a = 0.8, g = 4`: 3.4 tokens per forward instead of 1.
#
# `model.generate(prompt, n, assistant_model=draft, num_assistant_tokens=g)` (transformers' names;
# `common/generation/speculative.py`). Here the draft is the GPT's own first layer (its embeddings,
# block 0, final norm and head: no training at all); a separately trained small model does better
# (`docs/results/generation.md` measures a 6-layer target with a 1-layer draft).

# %%
import dataclasses

draft = GPT(dataclasses.replace(model.config, n_layer=1))
draft.load_state_dict(model.state_dict(), strict=False)  # embeddings, block 0, ln_f, head: no training
n_spec = min(new, 48 if QUICK else new)
plain = model.generate(prompt, n_spec)
for gamma in (1, 2, 4):
    out = model.generate(prompt, n_spec, assistant_model=draft, num_assistant_tokens=gamma,
                         return_dict_in_generate=True)
    a = out.accepted_tokens / max(1, out.draft_tokens)
    per_forward = (out.sequences.size(1) - prompt.size(1)) / out.target_forwards
    expected = (1 - a ** (gamma + 1)) / (1 - a) if a < 1 else gamma + 1
    print(f"gamma {gamma}: same tokens as plain greedy: {torch.equal(out.sequences, plain)}; acceptance "
          f"a = {a:.2f}; {per_forward:.2f} tokens per target forward (formula {expected:.2f}); "
          f"{out.target_forwards} target forwards instead of {n_spec}")
    assert torch.equal(out.sequences, plain), "speculative greedy must be the target's greedy output"
sampled = model.generate(prompt, n_spec, do_sample=True, top_k=20, seed=0, assistant_model=draft)
print("sampled with the draft:", repr(tokenizer.decode(sampled[0].tolist())))

# %% [markdown]
# ## Your turn: exercises `sampling`, `kv_cache` and `speculative_sampling` (Gold)
#
# - `sampling` in `common/nn/sampling.py`: `apply_temperature`, `top_k_filter`, `top_p_filter`,
#   `next_token`, as in the formulas above. The tests check that top-k never emits a token outside
#   the k largest and that top-p samples only from the smallest set reaching mass p.
# - `kv_cache`: `KVCache.append` in `common/nn/attention.py`: write the new `(B, h, T_new, d_k)` keys
#   and values after the filled part of the buffers, return everything filled so far, and raise a
#   `ValueError` when they do not fit. The tests check that attention with the cache equals full
#   causal attention, and that `generate` gives the same tokens with and without it.
# - `speculative_sampling`: `accept_draft` in `common/generation/speculative.py`, the rule above:
#   keep or reject each drafted token, the residual at the first rejection, the bonus token when
#   all are kept. The tests draw it thousands of times and compare every token's frequencies with
#   the target's `p` (a chi-square test), and check that speculative greedy equals plain greedy.
#
#     make exercises && cd ../student && make grade                           # every exercise
#     python -m tutorials.exercises grade --only sampling --only kv_cache   # in ../student: just these two
#
# Gold needs Silver and Bronze first: `sampling` and `kv_cache` run the attention, the masks and
# the decoder block, so `make grade` shows "needs X first" while one of those still fails.

# %%
from tutorials.exercises import REGISTRY

for name in ("sampling", "kv_cache", "speculative_sampling"):
    print(f"{name:<9} {REGISTRY[name].pytest_command()}")
