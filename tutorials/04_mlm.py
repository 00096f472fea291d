# %% [markdown]
# # 04 · Masked language modelling: the corruption and the loss
#
# BERT learns from plain text by filling in blanks (Devlin et al. 2019, section 3.1: 15% of the
# tokens). How the 15% are drawn differs: Google's `create_pretraining_data.py` takes exactly
# round(0.15 n) of the n ordinary tokens (at least 1, at most `max_predictions_per_seq`); we do
# what transformers' MLM collator (`DataCollatorForLanguageModeling`; a *collator* is the function
# that turns a list of examples into one batch) does: each ordinary token is chosen independently,
# one Bernoulli(0.15) draw per token, `m_i ~ Bernoulli(0.15)` (so 15% *on average*: a short
# sentence may get none, another three); call the set of chosen positions `I = {i : m_i = 1}`.
# Each chosen token is then replaced:
#
#     with probability 0.8   by [MASK]               "the cat [MASK] on the mat"
#     with probability 0.1   by a random token       "the cat apple on the mat"
#     with probability 0.1   left as it is           "the cat sat on the mat"
#
# giving the corrupted sequence `x~`, and the model must predict the original token at every
# position of `I`. All of `I` is corrupted *at once*, and every prediction reads the same `x~`:
#
#     L_MLM = E_{(I, x~) ~ corrupt(x)} [ -(1/|I|) sum_{i in I} log p(x_i | x~; theta) ]
#
# an expectation over the random corruption: each batch draws one corruption and its loss, the
# mean over the masked positions (`mlm_loss`'s default, what BERT reports; `reduction="sum"`
# drops the `1/|I|`). Note what the model conditions on: `x~`, not "the sentence with only
# position `i` hidden". Two things follow:
#
# - **the independence assumption**: two masked tokens are predicted from the same `x~`, each
#   without the other, so `p(x_i, x_j | x~)` is modelled as `p(x_i | x~) p(x_j | x~)`. In
#   "[MASK] [MASK] is a city", "New York" and "Los Angeles" both score well, and so does
#   "New Angeles" (tutorial 10 measures this);
# - **the mismatch**: `[MASK]` never occurs when the model is used later (fine-tuning reads real
#   text). The 10% random and 10% unchanged tokens (for which `x_i` itself is visible in `x~`)
#   make the model predict a token for *every* input it sees, not only for `[MASK]`; the
#   predict-then-run question at the end measures what happens without them.
#
# Code: `common/nn/masks.py:mlm_mask_tokens`, `common/data/language_modeling.py:DataCollatorForLanguageModeling`,
# `common/nn/losses.py` (`log_softmax`, `cross_entropy`, `mlm_loss`). Tests: `tests/test_masks.py`,
# `tests/test_data.py`, `tests/test_losses.py`.
#
# Run it: `python tutorials/04_mlm.py` (`TUTORIAL_QUICK=1` for fewer sentences and steps).

# %%
import _setup

import math

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling
from common.nn.losses import IGNORE_INDEX, cross_entropy, log_softmax, mlm_loss
from common.text.auto import BertTokenizer
from minibert import BertConfig, BertForMaskedLM

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## A small tokenised text
#
# `demo/corpus.py` writes little stories from a seeded generator (nothing is downloaded).
# Its `word_list()` holds every word the generator can produce, so a word-level vocabulary -
# BERT's five special tokens plus those words - never needs `[UNK]`.

# %%
stories = demo_data.generate_corpus(num_documents=100 if _setup.QUICK else 1000, seed=0)
sentences = [sentence for story in stories for sentence in story]
tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())
print(f"{len(stories)} stories, {len(sentences)} sentences, vocabulary of {len(tokenizer)} tokens")
print("the first story begins:", *stories[0][:3], sep="\n  ")
print("tokens:", tokenizer.convert_ids_to_tokens(tokenizer.encode(sentences[1])))

# %% [markdown]
# ## The 80/10/10 corruption
#
# `DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)` pads a list of examples
# into a batch and corrupts it with `mlm_mask_tokens`. It never chooses `[CLS]`, `[SEP]` or
# `[PAD]`, and the random branch draws only ordinary words. `labels` holds the original id at
# the chosen positions and **-100 everywhere else**; -100 is the "ignore me" value of every loss
# in this project (and in PyTorch and transformers).

# %%
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
examples = [{"input_ids": tokenizer.encode(s)} for s in sentences[:8]]
batch = collator(examples)
print({key: tuple(value.shape) for key, value in batch.items()})
row = int((batch["labels"] != IGNORE_INDEX).sum(-1).argmax())  # the sentence with most choices
original = tokenizer.convert_ids_to_tokens(tokenizer.encode(sentences[row]))
corrupted = tokenizer.convert_ids_to_tokens(batch["input_ids"][row].tolist())
print(f"\n{'original':>12} {'model sees':>12} {'label':>6}")
for t, (before, after) in enumerate(zip(original, corrupted)):
    label = int(batch["labels"][row, t])
    note = "" if label == IGNORE_INDEX else ("  <- [MASK]" if after == "[MASK]" else
                                             "  <- random" if after != before else "  <- kept, still predicted")
    print(f"{before:>12} {after:>12} {label:>6}{note}")

# %% [markdown]
# ## Counting the branches
#
# One batch shows a handful of choices; to see the proportions we corrupt every sentence and
# count. Expected: 15% of the ordinary tokens chosen, and among the chosen 80% / 10% / 10%, each
# within a few binomial standard deviations `sqrt(p (1 - p) / n)`.

# %%
all_examples = [{"input_ids": tokenizer.encode(s)} for s in sentences]
big = collator(all_examples)
original_ids = tokenizer.pad(all_examples, return_tensors="pt")["input_ids"]  # the same padding
special = torch.isin(original_ids, torch.tensor(tokenizer.all_special_ids))  # [CLS] [SEP] [PAD]
chosen = big["labels"] != IGNORE_INDEX
masked = chosen & (big["input_ids"] == tokenizer.mask_token_id)
replaced = chosen & ~masked & (big["input_ids"] != original_ids)
kept = chosen & (big["input_ids"] == original_ids)
n_ordinary, n_chosen = int((~special).sum()), int(chosen.sum())


def report(name, count, total, p):
    sd = math.sqrt(p * (1 - p) / total)
    print(f"{name:<22} {count:>6} / {total:<6} = {count / total:.3f}   expected {p:.2f} +- {sd:.3f}")


report("chosen / ordinary", n_chosen, n_ordinary, 0.15)
report("[MASK] / chosen", int(masked.sum()), n_chosen, 0.8)
report("random / chosen", int(replaced.sum()), n_chosen, 0.1)
report("kept / chosen", int(kept.sum()), n_chosen, 0.1)
print("special tokens or pads chosen:", int((chosen & special).sum()))
print("labels at the chosen positions are the originals:",
      bool(torch.equal(big["labels"][chosen], original_ids[chosen])))
assert int((chosen & special).sum()) == 0

# %% [markdown]
# (A random draw can hit the original word by chance, about 1 time in 540 here; it then counts as
# "kept".) `tests/test_masks.py::test_mlm_split_is_80_10_10_within_binomial_noise` and
# `tests/test_data.py::test_mlm_selection_rate_and_exact_80_10_10_split` check these proportions.
#
# ## log-softmax: probabilities in log space
#
# The model outputs one score (logit) `z_v` per vocabulary word `v`; the softmax turns them
# into probabilities, and the loss needs their logarithm:
#
#     log p_v = z_v - log sum_u exp(z_u) = (z_v - m) - log sum_u exp(z_u - m),   m = max_u z_u
#
# Subtracting the maximum `m` first keeps `exp` from overflowing. Computed naively, large logits
# break:

# %%
z = torch.tensor([1000.0, 1001.0, 1002.0])
print("naive log(softmax):", torch.log(torch.exp(z) / torch.exp(z).sum()))
print("log_softmax       :", log_softmax(z))
z = torch.randn(4, 7)
print("max |log_softmax - torch.log_softmax| on random logits:",
      float((log_softmax(z) - torch.log_softmax(z, dim=-1)).abs().max()))

# %% [markdown]
# ## Cross-entropy, with ignored rows
#
#     CE(z, y) = -log p_y        rows with y = -100 are skipped; "mean" divides by the kept rows
#
# `log` is the natural logarithm, so losses come in *nats* (1 nat = 1 / ln 2 = 1.44 bits); every
# loss of the course is in nats.

# %%
logits = torch.randn(4, 5)  # (N, V)
targets = torch.tensor([1, IGNORE_INDEX, 3, 0])  # (N,)
logp = log_softmax(logits)
by_hand = -(logp[0, 1] + logp[2, 3] + logp[3, 0]) / 3  # three kept rows
print("by hand:", float(by_hand), "  cross_entropy:", float(cross_entropy(logits, targets)))
assert torch.allclose(by_hand, cross_entropy(logits, targets))

# %% [markdown]
# ## L_MLM on a real batch, by hand and with `mlm_loss`
#
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~; theta),      I = {i : labels_i != -100}
#
# A tiny `BertForMaskedLM` (random weights; dropout off so the numbers repeat) gives logits
# `(B, T, V)`. The formula, line by line:

# %%
config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=64,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model = BertForMaskedLM(config)
with torch.no_grad():
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
labels = batch["labels"]  # (B, T)
log_p = log_softmax(out.logits)  # (B, T, V)
I = labels != IGNORE_INDEX  # (B, T) the chosen positions
log_p_original = log_p[I, labels[I]]  # (|I|,) log p(x_i | x~) for i in I
L_sum = -log_p_original.sum()
L_mean = L_sum / I.sum()
print("logits", tuple(out.logits.shape), " |I| =", int(I.sum()))
print(f"by hand     : sum {float(L_sum):.4f}   mean {float(L_mean):.4f}")
print(f"mlm_loss    : sum {float(mlm_loss(out.logits, labels, reduction='sum')):.4f}"
      f"   mean {float(mlm_loss(out.logits, labels)):.4f}")
print(f"model's loss:                 mean {float(out.loss):.4f}")
print(f"log V = log {len(tokenizer)} = {math.log(len(tokenizer)):.4f}  (an untrained model guesses uniformly)")
assert torch.allclose(L_sum, mlm_loss(out.logits, labels, reduction="sum"), rtol=1e-5)
assert torch.allclose(out.loss, L_mean, rtol=1e-5)

# %% [markdown]
# The logits at positions outside `I` do not enter the loss at all
# (`test_mlm_loss_ignores_the_logits_of_unmasked_positions`), and uniform logits give exactly
# `log V` per masked token (`test_mlm_loss_of_uniform_logits_is_log_V_per_masked_token`).

# %% [markdown]
# ## The MLM head by hand: a transform, then the token embeddings again
#
# Where do the logits `(B, T, V)` come from? BERT's MLM head (`cls.predictions`) maps each final
# hidden state `H_L[i]` (a `d`-vector) to `V` scores in two steps:
#
#     u_i      = LayerNorm(GELU(H_L[i] W_t + b_t))      the transform, d -> d
#     logits_i = u_i E_token^T + b                      the decoder, d -> V
#
# The decoder's weight is **the token embedding table `E_token` itself** (`(V, d)`, tutorial 03),
# not a new matrix: weight tying (used by BERT and GPT). The same rows that turn token ids into
# vectors at the input turn vectors back into scores over tokens at the output, so a word's score
# is the dot product of `u_i` with that word's embedding. It saves `V d` parameters, and every
# MLM gradient also trains the input embeddings. By hand, with the model's own weights:

# %%
head = model.cls.predictions
E_token = model.bert.embeddings.word_embeddings.weight  # (V, d)
with torch.no_grad():
    H_L = model.bert(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (B, T, d)
    u = head.transform.LayerNorm(torch.nn.functional.gelu(head.transform.dense(H_L)))  # (B, T, d)
    logits_by_hand = u @ E_token.T + head.bias  # (B, T, V)
print("H_L", tuple(H_L.shape), "-> u", tuple(u.shape), "-> logits", tuple(logits_by_hand.shape))
print("max |by hand - model logits|:", float((logits_by_hand - out.logits).abs().max()))
print("decoder.weight is the embedding table (one tensor, not a copy):", head.decoder.weight is E_token)
n_params = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
print(f"parameters: {n_params} tied; an untied decoder would add V d = {E_token.numel()} more")
assert torch.allclose(logits_by_hand, out.logits, atol=1e-5)
assert head.decoder.weight is E_token

# %% [markdown]
# The transfer story starts here: after pre-training, the head `cls.predictions` is thrown away
# and a new, small head reads `H_L` (tutorial 07); only the encoder, embeddings included, is
# carried over.
#
# ## A few training steps: L_MLM falls below log V
#
# Minimising `L_MLM` with gradient descent, on freshly corrupted batches each step, is all of
# BERT's masked-LM pre-training (tutorial 06 pre-trains a tiny BERT for real, NSP included).
# Here is a bare loop, with a new random corruption of 32 sentences at every step:

# %%
_setup.seed(0)
steps = 40 if _setup.QUICK else 300
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
losses = []
model.train()
for step in range(steps):
    chunk = torch.randint(len(all_examples), (32,)).tolist()
    train_batch = collator([all_examples[i] for i in chunk])
    loss = model(train_batch["input_ids"], attention_mask=train_batch["attention_mask"],
                 labels=train_batch["labels"]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if step % (steps // 5) == 0 or step == steps - 1:
        print(f"step {step:>4}  L_MLM (mean over I) = {loss.item():.3f}")
model.eval()

# %% [markdown]
# Now ask the model to fill in blanks it has never seen filled. After a few hundred steps
# (full mode) the right words are among its first guesses; in quick mode it has barely started.

# %%
for text in ("Tom was a baker who [MASK] near the market.", "Finally, Tom went home and [MASK] glad."):
    probe = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probe_logits = model(probe["input_ids"], attention_mask=probe["attention_mask"]).logits  # (1, T, V)
    where = int((probe["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    top = torch.softmax(probe_logits[0, where], -1).topk(3)
    print(f"{text:<45} ->", [(tokenizer.convert_ids_to_tokens(i), round(p, 2))
                             for i, p in zip(top.indices.tolist(), top.values.tolist())])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, label="L_MLM (mean over I)")
    ax.axhline(math.log(len(tokenizer)), color="grey", linestyle=":", label="log V (uniform guess)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    _setup.save_plot(fig, "04_mlm_loss.png")

# %% [markdown]
# ## Predict, then run: train with 100% [MASK]
#
# Suppose we skip the 10% random / 10% kept branches and replace *every* chosen token by
# `[MASK]`. The loss still only asks for the chosen positions. Then we feed the model an
# **uncorrupted** sentence (as fine-tuning will) and ask, at every position, for the token that is
# there: the model sees `x_i` and must return it. **Which model is better at it: the 80/10/10 one
# trained above, or the 100%-[MASK] one? By a lot, or a little?** Guess, then run: the same number
# of steps, the same seed, only the corruption differs.

# %%
def train_mlm(model, all_mask: bool, steps: int) -> None:
    _setup.seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        chunk = torch.randint(len(all_examples), (32,)).tolist()
        b = collator([all_examples[i] for i in chunk])
        ids = b["input_ids"].clone()
        if all_mask:  # every chosen position becomes [MASK]: x_i is never visible at a labelled position
            ids[b["labels"] != IGNORE_INDEX] = tokenizer.mask_token_id
        loss = model(ids, attention_mask=b["attention_mask"], labels=b["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def visible_token_accuracy(model) -> float:
    """Feed real sentences (no corruption); how often is argmax at position i the token x_i itself?"""
    clean = tokenizer.pad(all_examples[:200], return_tensors="pt")
    with torch.no_grad():
        guess = model(clean["input_ids"], attention_mask=clean["attention_mask"]).logits.argmax(-1)
    real = clean["attention_mask"].bool() & ~torch.isin(clean["input_ids"], torch.tensor(tokenizer.all_special_ids))
    return float((guess == clean["input_ids"])[real].float().mean())


accuracy = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a model this small trains faster on one core than split across several
for name, all_mask in (("80/10/10", False), ("100% [MASK]", True)):
    _setup.seed(0)
    fresh = BertForMaskedLM(config)
    train_mlm(fresh, all_mask, steps)
    accuracy[name] = visible_token_accuracy(fresh)
    print(f"{name:>12}: returns the visible token at {accuracy[name]:.0%} of the positions")
torch.set_num_threads(threads)
assert accuracy["80/10/10"] > accuracy["100% [MASK]"] + 0.05, accuracy

# %% [markdown]
# The 100%-[MASK] model was never asked about a visible token, so its output at one is whatever
# it learned for context alone: it returns the token it is shown less often (in quick mode both
# have barely trained; the gap grows with the full run's steps). The 10% kept
# tokens teach the 80/10/10 model that the input token is evidence, which is the model fine-tuning
# needs (there are no `[MASK]`s in fine-tuning data). This is BERT's pre-train / fine-tune
# mismatch, and its remedy, measured.
#
# ## Your turn: four exercises
#
# - `mlm_masking`: `mlm_mask_tokens` in `common/nn/masks.py` (one uniform draw per position decides
#   the branch);
# - `log_softmax`, `cross_entropy`, `mlm_loss` in `common/nn/losses.py` (each builds on the one
#   before it, as above).
#
#     python -m tutorials.exercises make --out ../student     # `make exercises`: all exercises
#     cd ../student && python -m tutorials.exercises grade --only log_softmax --only cross_entropy

# %%
from tutorials.exercises import REGISTRY

for name in ("mlm_masking", "log_softmax", "cross_entropy", "mlm_loss"):
    print(f"{name:<14} {REGISTRY[name].pytest_command()}")
