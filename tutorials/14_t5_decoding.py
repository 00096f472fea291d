# %% [markdown]
# # 14 · Decoding with T5: teacher forcing, greedy and beam search, BLEU
#
# Tutorial 13 built T5: an encoder that reads the source x and a decoder that writes the target y
# while attending to the encoder. T5 models
#
#     P(y | x) = prod_{t=1}^{T} p(y_t | y_<t, x)
#
# This tutorial trains that product on pairs (teacher forcing, section 1), defines the score a
# translation gets (BLEU, section 2), then lets the decoder write: greedy and beam search (3), on a
# toy translation task learned in a minute (4). Code: `minit5/model.py` (`shift_right`,
# `T5ForConditionalGeneration`), `common/generation/beam_search.py` (`BeamSearch.step`, used by `minit5/generate.py`), `minit5/metrics.py`
# (`corpus_bleu`). Tests: `tests/test_t5_parity.py` (the same tokens as transformers' `generate`,
# beams included), `tests/test_minit5_cli.py` (our BLEU equals sacrebleu's).
#
# Run it: `python tutorials/14_t5_decoding.py` (about 10 seconds on 2 CPU cores); `TUTORIAL_QUICK=1` for fewer test sources.

# %%
import _setup

import math
import random
import time
from types import SimpleNamespace

import torch

from minit5.config import T5Config
from minit5.generate import generate
from minit5.metrics import corpus_bleu, ngrams, tokenize_13a
from minit5.model import T5ForConditionalGeneration, shift_right

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. Teacher forcing and the decoder start token
#
# Training does not generate. The decoder is fed the TRUE previous tokens (teacher forcing), so all
# T positions of y are predicted in one pass, in parallel, as GPT's were in tutorial 08. Its input
# is the target shifted right by one with a start token in front,
#
#     y_in = [start, y_1, ..., y_{T-1}]          position t reads y_in[1..t] = (start, y_<t), predicts y_t
#
# and the causal mask keeps position t from reading y_t itself. The start token (T5: the pad id 0)
# carries no word: it only says "the target begins here", so the first position has something to
# read. A label -100 (a padded slot, ignored by the loss) becomes pad in the input. The loss is the
# mean of -log p(y_t | y_<t, x) over the labelled positions.

# %%
config = T5Config(vocab_size=30, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32)
model = T5ForConditionalGeneration(config).eval()
source = torch.tensor([[5, 6, 7, 1]])  # three tokens and </s> (id 1)
labels = torch.tensor([[9, 10, 11, 1, -100]])  # y_1 y_2 y_3 </s>, one padded slot
decoder_input_ids = shift_right(labels, decoder_start_token_id=0, pad_token_id=0)
print("labels            ", labels.tolist()[0])
print("decoder_input_ids ", decoder_input_ids.tolist()[0], "  (start, y_1, y_2, y_3, pad)")
with torch.no_grad():
    out = model(input_ids=source, labels=labels)  # builds decoder_input_ids from labels itself
    logits = model(input_ids=source, decoder_input_ids=decoder_input_ids).logits  # (1, 5, V)
kept = labels[0] != -100
by_hand = -torch.log_softmax(logits[0], dim=-1)[kept].gather(1, labels[0, kept, None]).mean()
print(f"loss from labels {out.loss.item():.6f}   by hand, -mean log p(y_t | y_<t, x) {by_hand.item():.6f}")
assert torch.allclose(out.loss, by_hand, atol=1e-6)

# %% [markdown]
# At generation time there is no true y: the decoder starts from `[start]` alone, and each token it
# writes becomes the input of the next step. How it picks that token is section 3.
#
# ## 2. BLEU, the score of a translation
#
# BLEU (Papineni et al. 2002) compares a hypothesis with a reference by their common n-grams:
#
#     p_n  = matching n-grams / n-grams of the hypothesis        n = 1..4, summed over the corpus
#            (clipped: an n-gram counts at most as often as the reference holds it)
#     BP   = 1 if c >= r else exp(1 - r / c)                     c, r: hypothesis and reference tokens
#     BLEU = 100 BP exp((1/4) sum_n log p_n)
#
# Precision alone would reward a short, safe output; the brevity penalty BP takes that back. A
# p_n = 0 would make the score 0, so sacrebleu (and `corpus_bleu`) smooth: the k-th order with no
# match counts as 1 / (2^k hypothesis n-grams). The words are counted after sacrebleu's "13a"
# tokenization (punctuation split off). One pair by hand, then the library:

# %%
hypothesis, reference = "the cat sat on the mat", "the cat sat quietly on the mat"
hyp, ref = tokenize_13a(hypothesis), tokenize_13a(reference)
log_p, empty = [], 0
for n in range(1, 5):
    counts, in_ref = ngrams(hyp, n), ngrams(ref, n)
    matches = sum(min(c, in_ref[g]) for g, c in counts.items())
    total = sum(counts.values())
    if matches == 0:  # smoothing: the k-th empty order counts 1 / (2^k total)
        empty += 1
        matches = 1 / 2 ** empty
    print(f"p_{n} = {matches:g} / {total}")
    log_p.append(math.log(matches / total))
BP = 1.0 if len(hyp) >= len(ref) else math.exp(1 - len(ref) / len(hyp))
bleu = 100 * BP * math.exp(sum(log_p) / 4)
print(f"c = {len(hyp)}, r = {len(ref)}, BP = {BP:.4f}   BLEU by hand {bleu:.4f}   "
      f"corpus_bleu {corpus_bleu([hypothesis], [reference]):.4f}")
assert abs(bleu - corpus_bleu([hypothesis], [reference])) < 1e-9

# %% [markdown]
# ## 3. Greedy and beam search
#
# **Greedy** writes `y_t = argmax_v p(v | y_<t, x)`: the best next token, never looking back. The
# best next token need not start the best sentence. **Beam search** keeps the K = `num_beams` most
# likely prefixes instead of one. With `log P(y_<=t | x) = sum_s log p(y_s | y_<s, x)`, each step:
#
# 1. every running prefix times every token gives K V candidates, scored log P(prefix) +
#    log p(token | prefix, x); keep the 2K best (2K, so that K can go on even if K of them end);
# 2. a candidate among the first K that ends in </s> (or reaches `max_new_tokens`) is finished,
#    with the score `log P / n^lp`: n counts the tokens generated, </s> included, the start token not
#    (as transformers); lp is `length_penalty`; the K best finished hypotheses are kept;
# 3. the K best candidates that did not end are the next running prefixes, and each self-attention
#    cache is reordered so that its row i holds the prefix that row i now continues.
#
# It stops when K hypotheses are finished and no running prefix, scored at its length, could still
# beat the worst of them (or at `max_new_tokens`). Why `n^lp`: every token adds a negative log p,
# so raw `log P` (lp = 0) always prefers short outputs; lp = 1 compares the mean log p per token, and
# lp > 1 favours longer ones.
#
# To see it without training, a "model" whose next-token probabilities are a table (tokens: 0
# start, 1 </s>, 2 A, 3 B, 4 C). After the start, A is likelier (0.55) than B (0.45), but every
# continuation of A is unsure, while B is almost surely followed by </s>:
#
#     start -> A 0.55, B 0.45        A -> C 0.40, </s> 0.35, B 0.25        B -> </s> 0.90, C 0.10
#     A C -> </s> 1.0                A B -> </s> 1.0                        B C -> </s> 1.0
#
# **Predict, then run.** Greedy writes A, then C, then </s>: P = 0.55 x 0.40 x 1.0 = 0.22. What does
# beam search with 2 beams return (`length_penalty` 1), with what probability? And with
# `length_penalty` 2?

# %%
NAMES = ["<start>", "</s>", "A", "B", "C"]
TABLE = {(0,): {2: 0.55, 3: 0.45}, (0, 2): {4: 0.40, 1: 0.35, 3: 0.25}, (0, 3): {1: 0.90, 4: 0.10},
         (0, 2, 4): {1: 1.0}, (0, 2, 3): {1: 1.0}, (0, 3, 4): {1: 1.0}}


class TableModel(torch.nn.Module):
    """Stands in for T5 in `generate`: encode() ignores the source, decode() reads TABLE."""
    config = SimpleNamespace(eos_token_id=1, pad_token_id=0, decoder_start_token_id=0)

    def encode(self, input_ids, attention_mask=None):
        return torch.zeros(input_ids.size(0), 1, 1)

    def decode(self, tokens, encoded, attention_mask=None):
        logits = torch.full((tokens.size(0), tokens.size(1), len(NAMES)), -1e4)  # log 0, almost
        for row, prefix in enumerate(tokens.tolist()):
            for token, p in TABLE.get(tuple(prefix), {1: 1.0}).items():
                logits[row, -1, token] = math.log(p)
        return logits


def show(tokens):
    return " ".join(NAMES[t] for t in tokens[1:])


def probability(tokens):
    return math.prod(TABLE[tuple(tokens[:i])][tokens[i]] for i in range(1, len(tokens)))


table_model, x = TableModel(), torch.zeros(1, 1, dtype=torch.long)
greedy = generate(table_model, x, max_new_tokens=5, num_beams=1, use_cache=False)[0].tolist()
print(f"greedy                  : {show(greedy):10s} P = {probability(greedy):.3f}")
for lp in (1.0, 2.0):
    beam = generate(table_model, x, max_new_tokens=5, num_beams=2, length_penalty=lp, use_cache=False)[0]
    beam = beam[:1].tolist() + [t for t in beam[1:].tolist() if t != 0]  # the start, then no pad
    n = len(beam) - 1
    print(f"beam, length_penalty {lp:g} : {show(beam):10s} P = {probability(beam):.3f}   "
          f"score log P / n^lp = {math.log(probability(beam)):.3f} / {n}^{lp:g} = "
          f"{math.log(probability(beam)) / n ** lp:.3f}")
    if lp == 1.0:
        assert show(beam) == "B </s>" and probability(beam) > probability(greedy)
    else:
        assert show(beam) == "A C </s>", "lp = 2 divides by n^2: the longer hypothesis wins"

# %% [markdown]
# Beam search found B </s> (P = 0.405, almost twice greedy's 0.22): it kept B alive at step 1
# although A looked better. With lp = 2 the three-token A C </s> wins instead: log P / n^2 =
# -1.514 / 9 = -0.168 against -0.904 / 4 = -0.226. The length penalty is a choice about what "best"
# means, not a correction of a bias; transformers and T5 default to lp = 1.
#
# ## 4. Greedy against beam search on a learned task
#
# A toy translation: the target is the source reversed, with each letter doubled, learned in a
# minute. Then both decoders translate held-out sources; BLEU (section 2) and time are measured
# here (a shared machine: the times vary from run to run, the ratio less).

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
# well-trained model greedy is often as good; beams help most where the model is unsure early, as
# the table model of section 3 was.
#
# ## Your turn: exercise `beam_search`
#
# In the student copy (`make exercises`), `beam_search` (`common/generation/beam_search.py`) raises
# `NotImplementedError`. Write it from the three steps of section 3; its tests compare its tokens
# with transformers' `generate` for several num_beams, length penalties and early-stopping rules:
#
#     python -m tutorials.exercises make --out ../student --only beam_search
#     cd ../student && python -m tutorials.exercises grade --only beam_search

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["beam_search"].pytest_command())
print("hint:", REGISTRY["beam_search"].hint)
