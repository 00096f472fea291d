# %% [markdown]
# # 06 · Pre-training a tiny BERT
#
# Tutorials 04 and 05 built the two pre-training tasks and their loss. Here we put them together
# and train: a small BERT reads thousands of unlabeled sentence pairs `[CLS] A [SEP] B [SEP]`,
# some of their tokens masked, and minimises
#
#     L = w_MLM L_MLM + w_NSP L_NSP                  (w_MLM = w_NSP = 1, as in BERT)
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)     (I = the masked positions, x~ the corrupted input)
#     L_NSP = -log p(y | c)                             (y = IsNext / NotNext, c the pooled [CLS] vector)
#
# with AdamW, the learning rate warmed up linearly for the first steps and then decayed linearly
# to 0 (Devlin et al. 2019, appendix A.2, used the same schedule):
#
#     eta_s = eta_max * s / S_w                       for s < S_w
#     eta_s = eta_max * (S - s) / (S - S_w)           afterwards (S = all steps)
#
# Two numbers tell us it learns, both measured on held-out stories it never trains on:
#
# - the MLM loss starts at about `ln V` (a uniform guess among the V words of the vocabulary) and
#   falls as the model learns which words fit where;
# - the NSP accuracy starts at 0.5 (a coin) and rises as it learns what makes B follow A.
#
# Code: `common/train/trainer.py:Trainer` (the one training loop), `common/train/args.py:TrainingArguments`,
# `common/train/optim.py` (AdamW groups, schedules), `minibert/heads.py:BertForPreTraining`,
# `demo/stages.py:evaluate_pretraining` (the held-out scores). `make demo` runs the same
# recipe for longer (`demo/stages.py:pretrain_bert`). Tests: `tests/test_trainer.py`,
# `tests/test_bert_model.py`, `tests/test_demo.py`.
#
# Run it: `python tutorials/06_pretraining.py` (6,000 steps: about two minutes on one idle core, 107 s
# measured on a 2-core machine, docs/results/tutorials.md; much longer on a busy one);
# `TUTORIAL_QUICK=1` trains for a few seconds only, and its numbers mean little.

# %%
import _setup

import math
import warnings

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling, TextDatasetForNextSentencePrediction
from common.data.switches import WithSwitches
from demo.inputs import BERT_SPECIALS, builtin_corpus
from demo.stages import HeldoutEvaluation
from minibert.metrics import evaluate_pretraining
from common.text.auto import BertTokenizer
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minibert import BertConfig, BertForPreTraining

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## Data: generated stories, one word per token
#
# `demo.corpus` writes short stories (tutorial 05 showed a few): 4000 for training and 200
# held out. The tokenizer knows every word the generator can write, so there is no `[UNK]` and
# one token is one word.

# %%
corpus = builtin_corpus(_setup.OUT / "06_data", num_documents=200 if QUICK else 4000,
                        heldout_documents=20 if QUICK else 200, seed=0)
print(corpus.notes[0])
tokenizer = BertTokenizer(vocab=BERT_SPECIALS + demo_data.word_list())
V = len(tokenizer)
print(f"vocabulary V = {V} tokens, ln V = {math.log(V):.3f}")

block_size = 32
train_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.train_file, block_size, seed=0)
heldout_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.heldout_file, block_size, seed=1)
print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs, at most {block_size} tokens each")

# %% [markdown]
# ## The model: BERT with d = 64, L = 2, h = 2
#
# BERT-base has d = 768 hidden units, L = 12 layers, h = 12 heads (Devlin et al.: H, L, A) and
# 110 M parameters; ours is
# about 750 times smaller. Two choices help a model this small on this little data:
#
# - no dropout (`hidden_dropout_prob = attention_probs_dropout_prob = 0`): with dropout 0.1 the
#   same steps left tutorial 07's gain from pre-training at a few points (`demo/corpus.py`);
# - `mlm_logits_at_masked_only=True`, a forward argument the collator below adds to every batch
#   (`common/data/switches.py`; never saved in config.json): the `V`-way output layer runs only at the
#   masked 15% of the positions, the only ones the loss reads. Same loss, same gradients, less work
#   (`minibert/masked_only.py`, pinned to the full computation by `tests/test_bert_parity.py`).

# %%
config = BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=block_size, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
model = BertForPreTraining(config)
embedding_share = V * config.hidden_size / model.num_parameters()
print(f"{model.num_parameters():,} parameters, {embedding_share:.0%} of them in the token embeddings ({V} x 64)")

# %% [markdown]
# ## The learning-rate schedules
#
# BERT's is `linear`. Language-model recipes now often decay to a floor instead of to 0, or hold
# the rate and decay only at the end (`common/train/optim.py`, with S_w warm-up steps, S all steps,
# r the floor as a fraction of eta_max; transformers' names, `--lr_scheduler_kwargs` on the command line):
#
#     cosine              eta_s = eta_max * (1 + cos(pi p)) / 2                 p = (s - S_w) / (S - S_w)
#     cosine_with_min_lr  eta_s = eta_max * (r + (1 - r) (1 + cos(pi p)) / 2)   {"min_lr_rate": r}
#     warmup_stable_decay eta_s = eta_max * (r + (1 - r) a(s / S_w))  for s < S_w, then eta_max, and over the
#                         last D steps eta_max * (r + (1 - r) d(q)), q = (s - (S - D)) / D   {"num_decay_steps": D}
#                         (a, d: linear, cosine or 1-sqrt ramps; cosine decay by default)
#
# Each phase starts where the previous one ended, and none goes below r * eta_max after warm-up.

# %%
from common.train.optim import get_scheduler

curves = {"linear": None, "cosine": None, "cosine_with_min_lr": {"min_lr_rate": 0.1},
          "warmup_stable_decay": {"num_decay_steps": 30, "min_lr_ratio": 0.1}}
for name, kwargs in curves.items():
    schedule = get_scheduler(name, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, 100, kwargs)
    rates = [schedule.lr_lambdas[0](s) for s in range(101)]
    bars = "".join(" .:-=+*#%@"[min(9, int(rates[s] * 9.999))] for s in range(0, 101, 4))
    print(f"{name:>20}  |{bars}|  s=50: {rates[50]:.3f}  end: {rates[100]:.3f}")
    if kwargs:
        assert min(rates[10:]) >= 0.1 - 1e-12, f"{name} went below its floor: {min(rates[10:])}"

# %% [markdown]
# ## Training mechanics, one check each
#
# The Trainer below does four things to every step besides `loss.backward()`. Each is one line
# of arithmetic; here each is checked on numbers small enough to follow
# (`common/train/trainer.py`'s docstring states the step; `docs/notation.md` the symbols).
#
# **Warm-up.** For the first `S_w` steps the rate rises linearly, `eta_s = eta_max s / S_w`: at step 0
# Adam's moment estimates are built from one gradient and a full-size step would be taken on
# noise.
#
# **Decoupled weight decay** (AdamW, Loshchilov and Hutter 2019). Adam with an L2 penalty adds
# `lambda theta` to the gradient, and Adam's normalisation `m^ / sqrt(v^)` then rescales it like
# any gradient: a weight with no data gradient is pulled to 0 at the full rate `eta`, whatever
# `lambda`. AdamW takes the decay out of the gradient:
# `theta <- theta - eta (m^ / (sqrt(v^) + eps) + lambda theta)`, so the pull is exactly
# `eta lambda theta`. The Trainer decays weight matrices only, not biases or LayerNorm.
#
# **Clipping.** `g <- g min(1, g_max / ||g||)`, `||g||` the norm of all gradients together:
# one bad batch cannot take a huge step, and a normal one is untouched.
#
# **Predict, then run.** A weight `theta = 1` whose data gradient is 0, `eta = 0.1`,
# `lambda = 0.01`, one step. Where does it land with AdamW? With Adam plus an L2 penalty?

# %%
from common.nn.losses import IGNORE_INDEX, cross_entropy

warm = get_scheduler("linear", torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, 100)
warm_rates = [warm.lr_lambdas[0](s) for s in range(11)]
print("warm-up, eta_s / eta_max for s = 0..10:", [round(r, 2) for r in warm_rates])
assert all(abs(warm_rates[s] - s / 10) < 1e-12 for s in range(11))

landed = {}
for name, make in (("AdamW", lambda p: torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)),
                   ("Adam + L2", lambda p: torch.optim.Adam([p], lr=0.1, weight_decay=0.01))):
    theta = torch.nn.Parameter(torch.ones(1))
    optimizer = make(theta)
    theta.grad = torch.zeros(1)  # no data gradient at all
    optimizer.step()
    landed[name] = float(theta.detach())
    print(f"{name:>10}: theta 1 -> {landed[name]:.4f}")
assert abs(landed["AdamW"] - (1 - 0.1 * 0.01)) < 1e-6  # exactly eta * lambda * theta
assert abs(landed["Adam + L2"] - (1 - 0.1)) < 1e-4  # the penalty normalised into a full-size step

grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]  # norms 5 and 0.5
params = [torch.nn.Parameter(torch.zeros(2)) for _ in grads]
for p, g in zip(params, grads):
    p.grad = g.clone()
norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)  # what the Trainer calls
expected = [g * min(1.0, 1.0 / float(torch.cat(grads).norm())) for g in grads]
print(f"clipping: ||g|| = {float(norm):.3f} -> {float(torch.cat([p.grad for p in params]).norm()):.3f}")
assert all(torch.allclose(p.grad, e) for p, e in zip(params, expected))

# %% [markdown]
# AdamW moved the weight by `eta lambda = 0.001`; Adam + L2 by the whole `eta = 0.1`: its decay
# depends on the gradient scale, not on `lambda`. (Clipping scaled *both* tensors by
# `1 / 5.02`: the norm is taken over all parameters together.)
#
# **Gradient accumulation** runs `k` micro-batches before one optimizer step, for a batch that
# does not fit in memory. It equals one big batch only if each micro-batch's mean loss is weighted
# by its share of the label units, `n_i / sum_j n_j`: with MLM, micro-batches hold different
# numbers of masked tokens, and the naive `L_i / k` gives the wrong gradient. The Trainer uses
# the shares (`trainer.py`: `(L_i * n_i / sum_j n_j).backward()`):

# %%
_setup.seed(0)
probe = torch.nn.Linear(8, 5)
inputs = torch.randn(16, 8)
targets = torch.randint(5, (16,))
targets[torch.rand(16) < 0.5] = IGNORE_INDEX  # like MLM: many rows carry no label
halves = [slice(0, 8), slice(8, 16)]
units = [int((targets[h] != IGNORE_INDEX).sum()) for h in halves]


def gradient(weights):
    probe.zero_grad()
    for h, w in zip(halves, weights):
        (cross_entropy(probe(inputs[h]), targets[h]) * w).backward()
    return probe.weight.grad.clone()


probe.zero_grad()
cross_entropy(probe(inputs), targets).backward()  # one big batch, mean over its labelled rows
big = probe.weight.grad.clone()
shares = gradient([n / sum(units) for n in units])
naive = gradient([0.5, 0.5])
print(f"labelled rows per micro-batch: {units}")
print(f"max |big batch - accumulated with shares n_i / sum n_j|: {float((big - shares).abs().max()):.2e}")
print(f"max |big batch - accumulated with L_i / k|            : {float((big - naive).abs().max()):.2e}")
assert torch.allclose(big, shares, atol=1e-6)

# %% [markdown]
# ## Training with the Trainer
#
# `TrainingArguments` names the recipe with transformers' argument names; `Trainer` runs the
# loop: batches from the data set, the collator's fresh 80/10/10 masks for every batch (so the
# model never sees the same blanks twice), `loss.backward()`, gradient clipping at norm 1, one
# AdamW step, one schedule step, a log record every `logging_steps`. Weight decay (0.01) applies
# to the weight matrices only, not to biases and LayerNorm (`common/train/optim.py`).
#
# A callback (`demo/stages.py:HeldoutEvaluation`) scores the held-out pairs before the
# first step and every `eval_every` steps, with the same masks each time, and logs the MLM loss,
# MLM accuracy and NSP accuracy separately: the training loss is only their sum.

# %%
steps = 150 if QUICK else 6000
eval_every = 50 if QUICK else 500
args = TrainingArguments(output_dir=str(_setup.OUT / "06_run"), overwrite_output_dir=True, save_strategy="no",
                         max_steps=steps, per_device_train_batch_size=32, learning_rate=2e-3,
                         warmup_steps=100, lr_scheduler_type="linear", weight_decay=0.01,
                         logging_steps=max(1, steps // 100), seed=0)


def heldout_scores(m):
    """MLM loss / accuracy and NSP accuracy on the held-out pairs, fixed masks (seed 0)."""
    return evaluate_pretraining(m, heldout_pairs, lambda: DataCollatorForLanguageModeling(tokenizer, seed=0))


trainer = Trainer(model, args, train_dataset=train_pairs,
                  data_collator=WithSwitches(DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0),
                                             mlm_logits_at_masked_only=True),
                  callbacks=[HeldoutEvaluation(heldout_scores, eval_every)])
output = trainer.train()
print(f"trained {output.global_step} steps; mean training loss {output.training_loss:.3f}")

# %% [markdown]
# ## The curves
#
# `trainer.state.log_history` holds every log record (the same lines are in `06_run/log.jsonl`).
# The training loss is `L_MLM + L_NSP`; the held-out records split it into its parts.

# %%
history = trainer.state.log_history
train_curve = [(r["step"], r["loss"]) for r in history if "loss" in r]
lr_curve = [(r["step"], r["learning_rate"]) for r in history if "learning_rate" in r]
heldout = [r for r in history if "heldout_mlm_loss" in r]
print(" step  held-out L_MLM  MLM accuracy  NSP accuracy")
for r in heldout:
    print(f"{r['step']:>5}  {r['heldout_mlm_loss']:>14.3f}  {r['heldout_mlm_accuracy']:>12.3f}  "
          f"{r['heldout_nsp_accuracy']:>12.3f}")
first, last = heldout[0], heldout[-1]
print(f"before training: L_MLM {first['heldout_mlm_loss']:.3f} (ln V = {math.log(V):.3f}), "
      f"NSP accuracy {first['heldout_nsp_accuracy']:.3f} (a coin: 0.5)")
assert abs(first["heldout_mlm_loss"] - math.log(V)) < 0.5, "an untrained model should guess about uniformly"
assert last["heldout_mlm_loss"] < first["heldout_mlm_loss"] - 0.5, "the held-out MLM loss should fall"

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(*zip(*train_curve), label="training L = L_MLM + L_NSP")
    axes[0].plot([r["step"] for r in heldout], [r["heldout_mlm_loss"] for r in heldout], "o-",
                 label="held-out L_MLM")
    axes[0].axhline(math.log(V), color="grey", linestyle=":", label="ln V (uniform guess)")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in heldout], [r["heldout_mlm_accuracy"] for r in heldout], "o-",
                 label="MLM accuracy (masked words)")
    axes[1].plot([r["step"] for r in heldout], [r["heldout_nsp_accuracy"] for r in heldout], "o-",
                 label="NSP accuracy (pairs)")
    axes[1].axhline(0.5, color="grey", linestyle=":", label="a coin")
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    axes[2].plot(*zip(*lr_curve), ".-")
    axes[2].set_xlabel("step")
    axes[2].set_title(f"learning rate: {args.warmup_steps} warm-up steps, linear decay", fontsize=10)
    fig.suptitle("Pre-training a tiny BERT (held-out scores on stories it never trained on)")
    fig.tight_layout()
    _setup.save_plot(fig, "06_pretraining_curves.png")

# %% [markdown]
# ## What did it learn? Fill in the blank
#
# The MLM head gives `p(v | x~)` for every word `v` at a `[MASK]`. A trained model puts the
# words that fit the slot on top: a thing of the bakery after "to bake the", a feeling word after
# "felt". (After the short quick-mode run the guesses are still mostly frequent words.)

# %%
model.eval()
probes = ["One day, she went to the bakery to bake the [MASK].",
          "Finally, Tom went home and felt [MASK].",
          "The soup was superb and [MASK]."]
with torch.no_grad():
    for text in probes:
        enc = tokenizer(text, return_tensors="pt")
        logits = model(**enc).prediction_logits[0]  # (T, V): no labels, so every position
        position = enc["input_ids"][0].tolist().index(tokenizer.mask_token_id)
        probs = torch.softmax(logits[position], dim=-1)
        top = probs.topk(5)
        guesses = ", ".join(f"{tokenizer.convert_ids_to_tokens([i])[0]} {p:.2f}"
                            for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{text:<52} -> {guesses}")

# %% [markdown]
# ## What did it learn? Words of one mood move together
#
# The generator uses 40 pleasant and 40 unpleasant adjectives in contexts that give their mood
# away ("superb and neat", "..., so she frowned"). To predict them, the model must tell the two
# groups apart, and that shows in the token embeddings `E_token`: the mean cosine similarity
# between two adjectives of the same mood grows larger than between two of opposite moods.
# Tutorial 07 relies on this: a classifier fine-tuned on *half* of the adjectives can then
# handle the other half. `demo/corpus.py`'s docstring reports that the groups form rather
# suddenly, after 2000-3000 steps of this recipe, which `make demo` runs for 6000.

# %%
E = model.bert.embeddings.word_embeddings.weight.detach()  # (V, H)
E = E - E.mean(dim=0)  # remove the direction every word shares, so cosines compare what differs
E = E / E.norm(dim=-1, keepdim=True)
pos = torch.tensor(tokenizer.convert_tokens_to_ids(list(demo_data.POSITIVE_WORDS)))
neg = torch.tensor(tokenizer.convert_tokens_to_ids(list(demo_data.NEGATIVE_WORDS)))


def mean_cosine(a, b):
    """Mean of cos(E_i, E_j) over pairs i in a, j in b, i != j."""
    sims = E[a] @ E[b].T  # (|a|, |b|)
    if a is b:
        return float((sims.sum() - sims.diagonal().sum()) / (len(a) * (len(a) - 1)))
    return float(sims.mean())


same = (mean_cosine(pos, pos) + mean_cosine(neg, neg)) / 2
opposite = mean_cosine(pos, neg)
print(f"mean cosine: same mood {same:.3f}, opposite moods {opposite:.3f}, gap {same - opposite:+.3f}")
word = "superb"
sims = E @ E[tokenizer.convert_tokens_to_ids([word])[0]]  # (V,)
nearest = [tokenizer.convert_ids_to_tokens([i])[0] for i in sims.topk(8).indices.tolist()][1:]
print(f"nearest to {word!r}: {', '.join(nearest)}")

# %% [markdown]
# ## Saving the model
#
# `save_pretrained(folder)` writes `config.json` and `model.safetensors` (atomically: a crash
# leaves the old pair or the new one, never a mix; `common/hub/pretrained.py`); the tokenizer
# writes its `vocab.txt` next to them. Tutorial 07 loads this folder with
# `BertForSequenceClassification.from_pretrained`.

# %%
folder = _setup.OUT / "06_bert_pretrained"
model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
print(f"saved to {folder}: {sorted(p.name for p in folder.iterdir())}")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    again = BertForPreTraining.from_pretrained(folder).eval()
enc = tokenizer(probes[0], return_tensors="pt")
with torch.no_grad():
    same_logits = torch.equal(again(**enc).prediction_logits, model(**enc).prediction_logits)
print("reloaded model gives the same logits:", same_logits)
assert same_logits

# %% [markdown]
# ## Try it
#
# - Set `hidden_dropout_prob=0.1` and compare the held-out numbers, the mood gap, and tutorial
#   07's result.
# - Train for 6000 steps (what `make demo` does) and watch the mood gap above grow.
#
# ## Your turn: exercises `mlm_masking`, `mlm_loss`, `nsp_pairs`, `nsp_loss`
#
# The exercises behind this tutorial are those of 04 and 05: once they pass in your copy
# (`make exercises`, then `cd ../student && make grade`), run this tutorial there: it trains on
# your code, and its numbers are your implementation's.
