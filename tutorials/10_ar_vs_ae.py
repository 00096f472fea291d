# %% [markdown]
# # 10 · Autoregressive or autoencoding? GPT and BERT side by side
#
# Tutorials 04-08 trained the two families apart. Here they meet on the same sentences, with the
# same vocabulary, the same size and the same number of steps, so that what differs is the
# objective alone (notation: `docs/notation.md`).
#
# **Autoregressive (AR, GPT).** The chain rule, exact for any distribution:
#
#     p(x) = prod_{t=1}^{T} p(x_t | x_<t),      L_LM = -(1/N) sum_t log p(x_t | x_<t)
#
# The model defines a real probability of every sentence, and it can generate one token after
# the other. But the prediction at `t` never sees `x_{t+1}, ..., x_T`: no right context.
#
# **Autoencoding (AE, BERT).** Corrupt `x` into `x~` (15% of the tokens, 80/10/10) and rebuild
# the chosen tokens `I` from `x~`:
#
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)
#
# Every prediction reads both sides (bidirectional). But there is no `p(x)`: the masked tokens
# are predicted independently of each other given `x~` (the **independence assumption**), the
# model needs `[MASK]` tokens that real text never has (the **mismatch**, tutorial 04), and it
# has no left-to-right order to generate in. The nearest thing BERT has to a sentence score is the
# **pseudo-log-likelihood** (Salazar et al. 2020), masking one position at a time:
#
#     PLL(x) = sum_{t=1}^{T} log p(x_t | x with x_t replaced by [MASK])
#
# a sum of `T` log-conditionals, each seeing both sides, that do not multiply to any distribution over
# sentences.
#
# Run it: `python tutorials/10_ar_vs_ae.py` (about 80 s on 2 CPU cores); `TUTORIAL_QUICK=1` for a short run
# whose models have barely trained (the exact checks hold all the same).

# %%
import _setup

import math
import random

import torch

from common.data.language_modeling import DataCollatorForLanguageModeling
from common.nn.losses import IGNORE_INDEX
from common.text.auto import BertTokenizer
from demo import corpus as demo_data
from minibert import BertConfig, BertForMaskedLM
from minigpt import GPT, GPTConfig

_setup.seed(0)
QUICK = _setup.QUICK
torch.set_num_threads(1)  # models this small train faster on one core than split across several

# %% [markdown]
# ## The same sentences, the same vocabulary
#
# The demo corpus (`demo/corpus.py`, generated, nothing downloaded) with a word-level vocabulary.
# Both models read `[CLS] sentence [SEP]`: for GPT, `[CLS]` is the start token (so `x_1`, the
# first word, has a prefix to be predicted from) and `[SEP]` is the end of the sentence.

# %%
stories = demo_data.generate_corpus(num_documents=200 if QUICK else 2000, seed=0)
sentences = [s for story in stories for s in story]
random.Random(0).shuffle(sentences)
heldout, train = sentences[:100], sentences[100:]
tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())
V = len(tokenizer)
encoded = [tokenizer.encode(s) for s in train]
print(f"{len(train)} training sentences, {len(heldout)} held out, V = {V}")

bert = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=256, max_position_embeddings=64,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=V, dropout=0.0))
print(f"parameters: BERT {sum(p.numel() for p in bert.parameters()):,}, GPT {sum(p.numel() for p in gpt.parameters()):,}")

# %% [markdown]
# ## Training both, the same way
#
# The same batches of 32 sentences, AdamW at the same rate, the same number of steps. BERT's
# batch is corrupted by the collator (tutorial 04: the function that builds each batch; a fresh
# 80/10/10 draw each step); GPT's labels are the token ids themselves with `-100` on the padding
# (the shift by one happens in the loss).

# %%
steps = 150 if QUICK else 2000
mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
optimizers = {name: torch.optim.AdamW(m.parameters(), lr=2e-3) for name, m in (("bert", bert), ("gpt", gpt))}
bert.train()
gpt.train()
for step in range(steps):
    chunk = [{"input_ids": encoded[i]} for i in torch.randint(len(encoded), (32,)).tolist()]
    masked = mlm(chunk)
    padded = tokenizer.pad(chunk, return_tensors="pt")
    lm_labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, IGNORE_INDEX)
    losses = {"bert": bert(masked["input_ids"], attention_mask=masked["attention_mask"], labels=masked["labels"]).loss,
              "gpt": gpt(padded["input_ids"], labels=lm_labels).loss}  # right padding: pads come after every real token
    for name, loss in losses.items():
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
    if step % (steps // 5) == 0 or step == steps - 1:
        print(f"step {step:>5}: L_MLM {losses['bert'].item():.3f}   L_LM {losses['gpt'].item():.3f}   (ln V = {math.log(V):.3f})")
bert.eval()
gpt.eval()
torch.set_grad_enabled(False)

# %% [markdown]
# ## Scoring one sentence, both ways
#
# GPT: one forward pass gives `log p(x_t | x_<t)` at every position, and their sum is `log p(x)`,
# exactly `-N L_LM` (checked against the model's own loss). BERT: `T` forward passes, the
# `t`-th with `x_t` replaced by `[MASK]` (batched as `T` rows), and `PLL(x)` the sum of
# `log p(x_t | ...)` read at the masked position. Both are in nats (natural logarithms, tutorial 04).


# %%
def gpt_log_probs(ids: torch.Tensor) -> torch.Tensor:
    """(T,) ids -> (T - 1,) log p(x_t | x_<t) for t = 2 .. T (position 1 is [CLS], the given start)."""
    log_p = torch.log_softmax(gpt(ids[None]).logits[0, :-1], dim=-1)  # (T - 1, V): row t predicts x_{t+1}
    return log_p.gather(-1, ids[1:, None])[:, 0]


def bert_pseudo_log_probs(ids: torch.Tensor) -> torch.Tensor:
    """(T,) ids -> (T - 2,) log p(x_t | x with x_t masked) for every word (not [CLS], [SEP])."""
    positions = torch.arange(1, len(ids) - 1)
    rows = ids.repeat(len(positions), 1)  # (T - 2, T): one copy per masked position
    rows[torch.arange(len(positions)), positions] = tokenizer.mask_token_id
    log_p = torch.log_softmax(bert(rows).logits[torch.arange(len(positions)), positions], dim=-1)  # (T - 2, V)
    return log_p.gather(-1, ids[positions, None])[:, 0]


sentence = heldout[0]
ids = torch.tensor(tokenizer.encode(sentence))
words = tokenizer.convert_ids_to_tokens(ids.tolist())
ar, ae = gpt_log_probs(ids), bert_pseudo_log_probs(ids)
print(f"{sentence!r}\n{'token':>12} {'GPT log p(x_t | x_<t)':>22} {'BERT log p(x_t | rest)':>23}")
for t in range(1, len(ids)):
    bert_term = f"{float(ae[t - 1]):>23.3f}" if t < len(ids) - 1 else f"{'([SEP]: not scored)':>23}"
    print(f"{words[t]:>12} {float(ar[t - 1]):>22.3f} {bert_term}")
print(f"GPT  log p(x) = {float(ar.sum()):.2f} nats (a probability of the whole sentence)")
print(f"BERT PLL(x)   = {float(ae.sum()):.2f} nats (a score, not the log of any probability)")
model_loss = gpt(ids[None], labels=ids[None]).loss  # L_LM: the mean over the T - 1 predicted positions
assert torch.allclose(ar.sum(), -model_loss * (len(ids) - 1), rtol=1e-4), "log p(x) must be -N L_LM"

# %% [markdown]
# Which column is larger depends on how far each model has trained: per step GPT learns from
# every position and BERT from the about 15% it masked, so after equal steps BERT has seen about a
# seventh of the labels (the quick run shows it). Whatever the numbers, they are not comparable:
# `log p(x)` is the log of a probability of the sentence, `PLL(x)` a sum of log-conditionals
# that each see both sides of the word.
#
# ## Predict, then run: what GPT cannot see
#
# Two sentences that agree up to "Tom was a" and differ after it. **At the position that
# predicts the word after "a", do GPT's probabilities differ between the two? Do BERT's, with
# that word masked?** Guess, then run.

# %%
left = "tom was a"
pair = [f"{left} baker who lived near the market.", f"{left} farmer who lived near the fields."]
rows = [torch.tensor(tokenizer.encode(s)) for s in pair]
blank = len(tokenizer.encode(left, add_special_tokens=False)) + 1  # index of the word after "a" ([CLS] is 0)
gpt_next = [torch.softmax(gpt(r[None]).logits[0, blank - 1], -1) for r in rows]  # p(x_blank | x_<blank)
masked_rows = [r.clone() for r in rows]
for r in masked_rows:
    r[blank] = tokenizer.mask_token_id
bert_fill = [torch.softmax(bert(r[None]).logits[0, blank], -1) for r in masked_rows]  # p(x_blank | x~)
gpt_change = float((gpt_next[0] - gpt_next[1]).abs().max())
bert_change = float((bert_fill[0] - bert_fill[1]).abs().max())
for name, dists in (("GPT", gpt_next), ("BERT", bert_fill)):
    print(f"{name:>4}: p(baker), p(farmer) in sentence 1: {float(dists[0][tokenizer.convert_tokens_to_ids('baker')]):.4f}, "
          f"{float(dists[0][tokenizer.convert_tokens_to_ids('farmer')]):.4f}; in sentence 2: "
          f"{float(dists[1][tokenizer.convert_tokens_to_ids('baker')]):.4f}, "
          f"{float(dists[1][tokenizer.convert_tokens_to_ids('farmer')]):.4f}")
print(f"largest change of the distribution at the blank: GPT {gpt_change:.2e}, BERT {bert_change:.2e}")
assert gpt_change == 0.0, "a causal model's prediction cannot depend on the tokens to its right"
assert bert_change > 1e-4, "a bidirectional model reads the right context"

# %% [markdown]
# GPT's distributions are identical to the last bit: at "a" it has not read "market" or
# "fields" yet, and never will (tutorial 08's causal property). BERT's move: it reads the words
# on the right ("near the fields" is evidence for "farmer"; whether its probabilities already
# follow that evidence depends on how long it trained: compare the full run). On a task that
# needs the whole sentence (classification,
# tagging, extractive QA) that is BERT's advantage. Below, every held-out word is guessed by GPT
# from its left alone and by BERT with that one word masked; with equal steps BERT has had far
# fewer labels (see above), so run the full version before reading much into the comparison.

# %%
gpt_hits = bert_hits = total = 0
for s in heldout:
    ids = torch.tensor(tokenizer.encode(s))
    words_only = torch.arange(1, len(ids) - 1)
    gpt_guess = gpt(ids[None]).logits[0, words_only - 1].argmax(-1)  # from x_<t
    rows = ids.repeat(len(words_only), 1)
    rows[torch.arange(len(words_only)), words_only] = tokenizer.mask_token_id
    bert_guess = bert(rows).logits[torch.arange(len(words_only)), words_only].argmax(-1)  # from both sides
    gpt_hits += int((gpt_guess == ids[words_only]).sum())
    bert_hits += int((bert_guess == ids[words_only]).sum())
    total += len(words_only)
print(f"held-out words guessed right: GPT (left context) {gpt_hits / total:.1%}, "
      f"BERT (both sides) {bert_hits / total:.1%}, over {total} words")

# %% [markdown]
# ## What BERT cannot do: generate, and predict two masks jointly
#
# GPT generates by sampling `x_1`, then `x_2` given `x_1`, and so on: each step is a factor of the
# chain rule. BERT has no such order. Asked to fill several `[MASK]`s at once, it fills each one
# from the same `x~`, independently of what it puts in the others:
#
#     BERT:          p(x_i, x_j | x~) ≈ p(x_i | x~) p(x_j | x~)        (the independence assumption)
#     chain rule:    p(x_i, x_j | x~) = p(x_i | x~) p(x_j | x~, x_i)
#
# **Predict, then run.** Mask two adjacent words of each held-out sentence. Score the true pair
# both ways with BERT: all at once (independent), or the first word, then the second with the
# first filled in (one chain-rule step). Which gives the true pair the higher log-probability on
# average, and is the gap large?

# %%
independent, sequential = [], []
for s in heldout:
    ids = torch.tensor(tokenizer.encode(s))
    i, j = 2, 3  # the second and third words
    both = ids.clone()
    both[[i, j]] = tokenizer.mask_token_id
    log_p = torch.log_softmax(bert(both[None]).logits[0], -1)  # (T, V) from x~ with both masked
    independent.append(float(log_p[i, ids[i]] + log_p[j, ids[j]]))
    one = both.clone()
    one[i] = ids[i]  # the first word filled in, the second still masked
    log_p_second = torch.log_softmax(bert(one[None]).logits[0, j], -1)
    sequential.append(float(log_p[i, ids[i]] + log_p_second[ids[j]]))
mean_independent = sum(independent) / len(independent)
mean_sequential = sum(sequential) / len(sequential)
print(f"true pair, mean log p over {len(heldout)} sentences: independent {mean_independent:.3f}, "
      f"one word at a time {mean_sequential:.3f}")
assert mean_sequential > mean_independent, (mean_sequential, mean_independent)

# %% [markdown]
# Seeing the first word helps predict the second: the independent product throws that away,
# which is what lets BERT put two words side by side that never occur together. Generation needs
# the chain rule; GPT has it by construction:

# %%
start = torch.tensor([tokenizer.encode("tom was a", add_special_tokens=False)])
start = torch.cat([torch.tensor([[tokenizer.cls_token_id]]), start], dim=1)
written = gpt.generate(start, 12)[0].tolist()
print("GPT, greedy:", " ".join(tokenizer.convert_ids_to_tokens(written)))
fill = torch.cat([start, torch.full((1, 6), tokenizer.mask_token_id), torch.tensor([[tokenizer.sep_token_id]])], dim=1)
filled = fill.clone()
positions = fill[0] == tokenizer.mask_token_id
filled[0, positions] = bert(fill).logits[0, positions].argmax(-1)  # all six masks at once
print("BERT, six [MASK]s filled at once:", " ".join(tokenizer.convert_ids_to_tokens(filled[0].tolist())))

# %% [markdown]
# ## The mismatch, counted
#
# BERT trained on inputs of which about 12% of the words are `[MASK]` (80% of the 15% chosen);
# the sentences it will be fine-tuned on hold none. GPT reads, in training and in use, the same
# kind of text.

# %%
batch = mlm([{"input_ids": e} for e in encoded[:500]])
words_only = batch["attention_mask"].bool() & (batch["input_ids"] != tokenizer.cls_token_id) & (
    batch["input_ids"] != tokenizer.sep_token_id)
share = float((batch["input_ids"][words_only] == tokenizer.mask_token_id).float().mean())
print(f"[MASK] share of the words BERT trains on: {share:.1%} (expected 0.15 x 0.8 = 12%); "
      f"of fine-tuning or generation text: 0%")
assert 0.10 < share < 0.14, share

# %% [markdown]
# ## Summary
#
# | | GPT (autoregressive) | BERT (autoencoding) |
# | --- | --- | --- |
# | objective | `L_LM`, the chain rule | `L_MLM` on `x~` |
# | a sentence's score | `log p(x)`, a real log-probability | `PLL(x)`, a sum of log-conditionals |
# | right context | never (asserted above) | always |
# | generation | one token at a time | no order; masks filled independently |
# | train / use mismatch | none | `[MASK]` in training only |
#
# XLNet (Yang et al. 2019) and T5-style span corruption are attempts to keep both columns' good
# rows. Tutorial 04 measures the mismatch's remedy (80/10/10); tutorial 08 what removing the
# causal mask does to GPT.
#
# ## Your turn: exercises `causal_lm_loss` and `mlm_loss`
#
# The two objectives compared here are two graded exercises: `causal_lm_loss` (tutorial 08) and
# `mlm_loss` (tutorial 04), both in `common/nn/losses.py`. In the student copy (`make exercises`)
# they raise `NotImplementedError`; once they pass, run this tutorial in your copy: every number
# above then comes from your own losses.
#
#     python -m tutorials.exercises make --out ../student --only causal_lm_loss --only mlm_loss
#     cd ../student && python -m tutorials.exercises grade --only causal_lm_loss --only mlm_loss

# %%
from tutorials.exercises import REGISTRY

for name in ("causal_lm_loss", "mlm_loss"):
    print(REGISTRY[name].pytest_command())
