# %% [markdown]
# # 08 · GPT and the causal language-modelling loss
#
# BERT sees the whole sentence and fills in blanks. GPT (Radford et al. 2018, 2019) reads left to
# right and predicts the **next** token, so it can write text one token at a time: it is
# *autoregressive*. It models a sequence by the chain rule of probability, which is exact for
# any distribution (no assumption):
#
#     p(x) = p(x_1 .. x_T) = prod_{t=1}^{T} p(x_t | x_<t),      x_<t = (x_1, ..., x_{t-1})
#
# and is trained to maximise that probability on real text, i.e. to minimise
#
#     L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t)
#
# (the mean over the scored positions t = 2 .. T: the first token has no prefix to predict it from).
# So what training fits is log p(x_2 .. x_T | x_1) = sum_{t=2}^{T} log p(x_t | x_<t): the chain rule
# without its first factor p(x_1), which no position predicts.
# The network is a stack of **pre-LN decoder blocks** (GPT-2) over token + position embeddings:
#
#     H_0[t] = W_te[x_t] + W_pe[t]
#     X  <- X + MultiHead(LN_1(X))      with the causal mask: position t sees positions <= t only
#     X  <- X + FFN(LN_2(X))
#     p(x_{t+1} | x_<=t) = softmax(LN_f(H_L)[t] W_te^T)        (the output layer reuses W_te)
#
# (`MultiHead` includes `W^O`, tutorial 01; the output layer is tied to the token embeddings as
# BERT's MLM decoder is, tutorial 04.)
#
# "Pre-LN" puts the LayerNorm before each sub-layer (BERT's post-LN of tutorial 03 puts it after
# the residual sum); the residual path is then a clean sum from input to output, which trains
# deeper stacks more easily.
#
# Code: `minigpt/model.py` (`GPTModel`, `GPT`), `common/nn/blocks.py:DecoderBlock`,
# `common/nn/losses.py:causal_lm_loss`, `common/nn/masks.py:causal_mask`. Tests: `tests/test_gpt_model.py`,
# `tests/test_blocks.py` (`test_decoder_*`), `tests/test_losses.py` (`test_causal_lm_loss*`),
# `tests/test_gpt_parity.py` (equal to transformers' GPT-2).
#
# Run it: `python tutorials/08_gpt.py` (under a minute on 2 idle CPU cores: 43 s measured);
# `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import math

import torch

from demo import corpus as demo_data
from common.text.char import CharTokenizer
from common.data.language_modeling import DataCollatorForLanguageModeling, GroupedTextDataset
from common.nn.losses import causal_lm_loss, log_softmax
from common.nn.masks import causal_mask
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minigpt import GPT, GPTConfig

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## Text and a character tokenizer
#
# The generated stories of tutorials 05-07, as one stream of characters. `CharTokenizer` gives
# each distinct character one id (its rank in the sorted set), as nanoGPT's `shakespeare_char`
# does: a tiny vocabulary, no unknown words, and the model must learn spelling as well.

# %%
documents = demo_data.generate_corpus(num_documents=300 if QUICK else 3000, seed=0)
heldout_documents = demo_data.generate_corpus(num_documents=20 if QUICK else 100, seed=1)
text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
heldout_text = "\n\n".join("\n".join(doc) for doc in heldout_documents) + "\n"
tokenizer = CharTokenizer.from_text(text + heldout_text)
V = len(tokenizer)
print(f"{len(text):,} training characters, {len(heldout_text):,} held out")
print(f"vocabulary V = {V}: {''.join(tokenizer.chars)!r}")
ids = tokenizer.encode("Once there was", add_special_tokens=False)
print("'Once there was' ->", ids, "->", repr(tokenizer.decode(ids)))

# %% [markdown]
# ## A small GPT and its output
#
# `GPTConfig` uses GPT-2's names: `n_layer`, `n_head`, `n_embd`, and `block_size`, the longest
# context. `GPT(config)(input_ids)` returns logits `(B, T, V)`: at every position `t`, a score
# for every possible next token.

# %%
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=V, dropout=0.0)
model = GPT(config)
print(f"{model.num_parameters():,} parameters")
x = torch.tensor([tokenizer.encode(text[:config.block_size], add_special_tokens=False)])  # (1, T)
with torch.no_grad():
    out = model(x, labels=x)
print("input_ids", tuple(x.shape), "-> logits", tuple(out.logits.shape))

# %% [markdown]
# ## L_LM by hand
#
# The logits at position `t` predict token `t+1`, so we compare `logits[:, :-1]` with
# `labels[:, 1:]` (the labels are the input ids themselves, shifted by one; `-100` marks a label
# to skip, e.g. padding):
#
#     -mean over t of log softmax(logits[:, t - 1])[x_t]      (the same L_LM, in the code's indices)
#
# An untrained model spreads its probability about evenly, so `L_LM` starts near `ln V`.

# %%
logits, labels = out.logits, x  # (1, T, V), (1, T)
log_p = log_softmax(logits[:, :-1, :])  # (1, T-1, V): log p(. | x_<=t) for t = 1 .. T-1
next_ids = labels[:, 1:]  # (1, T-1): x_{t+1}
by_hand = -log_p.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1).mean()
print(f"L_LM by hand {float(by_hand):.4f}   causal_lm_loss {float(causal_lm_loss(logits, labels)):.4f}   "
      f"model's loss {float(out.loss):.4f}   ln V = {math.log(V):.4f}")
assert torch.allclose(by_hand, causal_lm_loss(logits, labels), rtol=1e-5)
assert torch.allclose(by_hand, out.loss, rtol=1e-5)

# %% [markdown]
# ## The causal property
#
# The causal mask `M[i, j] = j <= i` (tutorial 02) lets position `i` attend to positions `j <= i`
# only. So the logits at position `t` depend on `x_1 .. x_t` and on nothing later: change token
# `k`, and the logits before `k` stay **exactly** the same. This is what makes the loss honest
# (no position can peek at the token it predicts) and what makes the KV cache of tutorial 09
# possible.

# %%
k = 20
changed = x.clone()
changed[0, k] = (changed[0, k] + 1) % V
with torch.no_grad():
    a, b = model(x).logits[0], model(changed).logits[0]  # (T, V) each
difference = (a - b).abs().amax(dim=-1)  # (T,) largest change per position
print(f"changed token {k}: largest logit change at positions < {k}: {float(difference[:k].max()):.2e}, "
      f"at positions >= {k}: {float(difference[k:].min()):.2e} .. {float(difference[k:].max()):.2e}")
assert float(difference[:k].max()) == 0.0, "a later token changed an earlier position's logits"
print("causal_mask(5):\n", causal_mask(5)[0, 0].int())
with torch.no_grad():
    weights = model(x[:, :8], output_attentions=True).attentions[0][0, 0]  # layer 0, head 0: (8, 8)
print("attention weights of layer 0, head 0 (zero above the diagonal):\n", weights)

# %% [markdown]
# ## The decoder block, by hand
#
# One block of the model, written out with its own sub-modules, equals the block's `forward`:

# %%
block = model.transformer.h[0]
h = torch.randn(1, 8, config.n_embd)  # (B, T, d)
mask = causal_mask(8)  # (1, 1, T, T)
with torch.no_grad():
    attended, _ = block.attn(block.ln_1(h), mask=mask)  # MultiHead(LN_1(x)), W^O included
    by_hand = h + attended
    by_hand = by_hand + block.mlp(block.ln_2(by_hand))  # x + FFN(LN_2(x))
    library, _ = block(h, mask=mask)
print(f"pre-LN block by hand vs DecoderBlock: max difference {float((by_hand - library).abs().max()):.2e}")
assert torch.allclose(by_hand, library, atol=1e-6)

# %% [markdown]
# ## Cross-attention: a decoder that reads an encoder
#
# The encoder-decoder Transformer (Vaswani et al. 2017; T5) adds a third sub-layer to each decoder
# block: the queries come from the decoder, the keys and values from the encoder's output `E`
# (`S` positions), so `Y = E` in `head_i = Attention(X W_i^Q, Y W_i^K, Y W_i^V)` of tutorial 01:
#
#     x <- x + MultiHead(LN_c(x), E)          no causal mask: every decoder position reads all of E
#
# The scores are `(T, S)`, one row per decoder position. By hand, with the block's own modules
# (`DecoderBlock(add_cross_attention=True)`, graded by the `decoder_block` exercise):

# %%
from common.nn.blocks import DecoderBlock

torch.manual_seed(0)
cross_block = DecoderBlock(hidden_size=32, num_heads=4, add_cross_attention=True).eval()
x_dec = torch.randn(1, 5, 32)  # (B, T, d): 5 decoder positions
enc = torch.randn(1, 7, 32)  # (B, S, d): 7 encoder positions
with torch.no_grad():
    step = x_dec + cross_block.attn(cross_block.ln_1(x_dec), mask=causal_mask(5))[0]
    read, cross_weights = cross_block.crossattention(cross_block.ln_cross_attn(step), key_value_states=enc,
                                                     output_attentions=True)
    step = step + read
    by_hand = step + cross_block.mlp(cross_block.ln_2(step))
    library, _ = cross_block(x_dec, mask=causal_mask(5), encoder_hidden_states=enc)
print("cross-attention weights", tuple(cross_weights.shape), "(B, h, T, S): decoder positions x encoder positions")
print(f"block with cross-attention, by hand vs DecoderBlock: max difference {float((by_hand - library).abs().max()):.2e}")
assert torch.allclose(by_hand, library, atol=1e-6)
assert cross_weights.shape == (1, 4, 5, 7)

# %% [markdown]
# ## Training
#
# `GroupedTextDataset` cuts the token stream into consecutive blocks of `block_size` tokens;
# `DataCollatorForLanguageModeling(mlm=False)` sets `labels = input_ids` (the shift happens in the
# loss). The same `Trainer` as in 06 and 07 runs AdamW with warm-up and linear decay, and
# evaluates on the held-out stories. Loss in nats per character; `exp(L)` is the perplexity, "how
# many characters the model hesitates between".

# %%
folder = _setup.OUT / "08_data"
folder.mkdir(parents=True, exist_ok=True)
(folder / "train.txt").write_text(text, encoding="utf-8")
(folder / "heldout.txt").write_text(heldout_text, encoding="utf-8")
train_blocks = GroupedTextDataset(tokenizer, folder / "train.txt", config.block_size)
heldout_blocks = GroupedTextDataset(tokenizer, folder / "heldout.txt", config.block_size)
print(f"{len(train_blocks)} training blocks, {len(heldout_blocks)} held-out blocks of {config.block_size} characters")

steps = 100 if QUICK else 1500
args = TrainingArguments(output_dir=str(_setup.OUT / "08_run"), overwrite_output_dir=True, save_strategy="no",
                         max_steps=steps, per_device_train_batch_size=32, per_device_eval_batch_size=128,
                         learning_rate=3e-3, warmup_steps=steps // 20, lr_scheduler_type="linear",
                         weight_decay=0.01, logging_steps=max(1, steps // 100), eval_strategy="steps",
                         eval_steps=steps // 5, seed=0)
trainer = Trainer(model, args, train_dataset=train_blocks, eval_dataset=heldout_blocks,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
trainer.train()
history = trainer.state.log_history
train_curve = [(r["step"], r["loss"]) for r in history if "loss" in r]
eval_curve = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
for step, loss in eval_curve:
    print(f"step {step:>5}: held-out L_LM {loss:.3f} nats/char, perplexity {math.exp(loss):.2f}")
assert eval_curve[-1][1] < math.log(V) - 0.5, "the held-out loss should fall well below ln V"

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*train_curve), label="training L_LM")
    ax.plot(*zip(*eval_curve), "o-", label="held-out L_LM")
    ax.axhline(math.log(V), color="grey", linestyle=":", label="ln V (uniform guess)")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per character")
    ax.legend()
    ax.set_title("A character-level GPT on the generated stories")
    _setup.save_plot(fig, "08_gpt_loss.png")

# %% [markdown]
# ## Predict, then run: remove the causal mask
#
# Take the trained GPT above and evaluate it on the held-out blocks **without** the causal mask:
# every position may now attend to every other, the token it must predict included. **Does the
# held-out loss go down (the answer is in plain sight) or up?** Guess, then run. We swap the mask
# function the model calls for one that allows everything, and restore it afterwards.

# %%
import minigpt.model as gpt_module

causal = gpt_module.causal_mask


def everything_allowed(T_q, T_k=None, device=None):
    return torch.ones(1, 1, T_q, T_q if T_k is None else T_k, dtype=torch.bool, device=device)


def heldout_loss(m, n=64):
    with torch.no_grad():
        ids = torch.stack([heldout_blocks[i]["input_ids"] for i in range(min(n, len(heldout_blocks)))])
        return float(m(ids, labels=ids).loss)


model.eval()
with_mask = heldout_loss(model)
gpt_module.causal_mask = everything_allowed
try:
    without_mask = heldout_loss(model)
finally:
    gpt_module.causal_mask = causal
print(f"held-out L_LM with the causal mask {with_mask:.3f}, without it {without_mask:.3f}   (ln V = {math.log(V):.3f})")
assert without_mask > with_mask, "the model never learned to read the future: more context is noise to it"

# %% [markdown]
# Up. The model was trained with the mask, so its weights never learned what to do with a
# later token; giving it the answer changes every attention average and breaks what it learned.
# The other way round (train without the mask) is worse still: the "prediction" of `x_{t+1}` can
# read `x_{t+1}`, so the model only needs to learn to copy it; its training loss heads for 0 and
# it cannot generate, because when generating the next token is not there to copy (try it: train
# with `gpt_module.causal_mask = everything_allowed`, more steps than quick mode's, and watch the
# training loss against `ln V`). The mask is what makes `L_LM` the chain rule. BERT has no such
# mask and so reads the right context, but pays with `[MASK]` tokens and cannot generate left to
# right: tutorial 10.
#
# ## What it writes
#
# Greedy decoding, the most likely character at every step (`model.generate`; tutorial 09 is
# about the other ways to choose, and about doing it fast). After the full run the words are
# spelled right and the sentences follow the stories' templates; after quick mode, much less so.

# %%
prompt = torch.tensor([tokenizer.encode("Once there was a", add_special_tokens=False)])
continuation = model.generate(prompt, max_new_tokens=config.block_size - prompt.size(1))
print(repr(tokenizer.decode(continuation[0].tolist())))
model.save_pretrained(_setup.OUT / "08_gpt")
tokenizer.save_pretrained(_setup.OUT / "08_gpt")
print(f"saved to {_setup.OUT / '08_gpt'} (tutorial 09 can load it)")

# %% [markdown]
# ## Your turn: exercises `decoder_block` and `causal_lm_loss`
#
# - `causal_lm_loss` in `common/nn/losses.py` (Bronze): score `logits[:, :-1]` against
#   `labels[:, 1:]` with `cross_entropy`, skipping `-100`.
# - `decoder_block`: `DecoderBlock.forward` in `common/nn/blocks.py` (Silver): the pre-LN residual
#   sums above (and, with `add_cross_attention`, one more sub-layer between them that attends to
#   an encoder's output). Its tests check causality, the identity when the sub-layers output zero,
#   and cross-attention.
#
#     make exercises                  # the student copy in ../student, every exercise stubbed
#     cd ../student && make grade        # the table and the grade ladder
#
# or only these two:
#
#     python -m tutorials.exercises make --out ../student --only causal_lm_loss --only decoder_block
#     cd ../student && python -m tutorials.exercises grade --only causal_lm_loss --only decoder_block

# %%
from tutorials.exercises import REGISTRY

for name in ("causal_lm_loss", "decoder_block"):
    print(f"{name:<15} {REGISTRY[name].pytest_command()}")
