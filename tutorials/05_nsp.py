# %% [markdown]
# # 05 · Next-sentence prediction and the full pre-training loss
#
# BERT's second pre-training task (Devlin et al. 2019, section 3.1) teaches it how sentences
# relate. Each training example is a pair of text segments:
#
#     [CLS] A [SEP] B [SEP]
#
# - **IsNext** (label 0): B is the text that really follows A in the same document;
# - **NotNext** (label 1): B comes from a different, random document.
#
# Half of the pairs are of each kind. A small classifier on the pooled `[CLS]` vector
# `c = tanh(H_L[0] W_p + b_p)` (tutorial 03; Devlin et al. write `C`) predicts the label, and its
# loss is the cross-entropy of two classes:
#
#     p(y | A, B) = softmax(c W_nsp + b_nsp)_y,        L_NSP = -log p(y | c)
#
# The same pairs are also masked (tutorial 04), and the two losses are added:
#
#     L = w_MLM * L_MLM + w_NSP * L_NSP            (w_MLM = w_NSP = 1 in BERT)
#
# with `L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)` of tutorial 04 and `L_NSP` averaged over
# the pairs of the batch: both are means.
#
# Code: `common/data/language_modeling.py:TextDatasetForNextSentencePrediction`, `common/nn/losses.py` (`nsp_loss`,
# `pretraining_loss`), `minibert/heads.py:BertForPreTraining`. Tests: `tests/test_data.py`
# (`test_nsp_*`), `tests/test_losses.py`, `tests/test_bert_model.py`.
#
# Run it: `python tutorials/05_nsp.py`.

# %%
import _setup

import math
from collections import Counter

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling, TextDatasetForNextSentencePrediction
from common.nn.losses import IGNORE_INDEX, log_softmax, mlm_loss, nsp_loss, pretraining_loss
from common.text.auto import BertTokenizer
from minibert import BertConfig, BertForPreTraining

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## A corpus of documents
#
# The input format is plain text, **one sentence per line and a blank line between documents**.
# `demo.corpus.write_corpus` writes such a file of generated stories; each story is one
# document about one hero at one place, so a sentence from another story usually names another
# hero and another place - the clues NSP can learn.

# %%
corpus_path = demo_data.write_corpus(_setup.OUT / "05_nsp_corpus.txt",
                                     num_documents=60 if _setup.QUICK else 600, seed=0)
lines = corpus_path.read_text(encoding="utf-8").splitlines()
print(f"wrote {corpus_path}: {len(lines)} lines")
print(*lines[:14], sep="\n")

tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())

# %% [markdown]
# ## Building the pairs
#
# `TextDatasetForNextSentencePrediction(tokenizer, file, block_size, nsp_probability=0.5,
# short_seq_probability=0.1, seed=0)` walks through each document as BERT's own data script did:
#
# 1. pick a target length `t = block_size - 3` (room for `[CLS]` and two `[SEP]`), or, with
#    probability `short_seq_probability`, a random shorter one - so the model also sees short
#    inputs;
# 2. gather whole sentences into a chunk until it holds `t` tokens;
# 3. A = the first `k` sentences of the chunk, `k` random;
# 4. with probability `1 - nsp_probability` B = the rest of the chunk (IsNext); otherwise B =
#    sentences from a random **other** document (NotNext), and the unused sentences of the chunk
#    are put back for the next pair;
# 5. cut tokens off the longer of A and B, at its front or back, until the pair fits in
#    `block_size`.

# %%
block_size = 48
dataset = TextDatasetForNextSentencePrediction(tokenizer, corpus_path, block_size=block_size,
                                               nsp_probability=0.5, short_seq_probability=0.1, seed=0)
print(f"{len(dataset.documents)} documents -> {len(dataset)} pairs")
print("one item:", {key: (tuple(value.shape), value.dtype) for key, value in dataset[0].items()})


def show(example):
    """[CLS] A [SEP] B [SEP] as text, with the label's name."""
    tokens = tokenizer.convert_ids_to_tokens(example["input_ids"].tolist())
    first_sep = tokens.index("[SEP]")
    label = int(example["next_sentence_label"])
    print(f"  label {label} = {'IsNext' if label == 0 else 'NotNext'}")
    print("  A:", " ".join(tokens[1:first_sep]))
    print("  B:", " ".join(tokens[first_sep + 1:-1]))


is_next = next(dataset[i] for i in range(len(dataset)) if dataset[i]["next_sentence_label"] == 0)
not_next = next(dataset[i] for i in range(len(dataset)) if dataset[i]["next_sentence_label"] == 1)
show(is_next)
show(not_next)

# %% [markdown]
# ## Segments: token_type_ids
#
# The model is told which tokens belong to which segment: `token_type_ids` is 0 for
# `[CLS] A [SEP]` and 1 for `B [SEP]`. It selects the row of the segment table `E_segment` that
# is added to every token's embedding (tutorial 03).

# %%
tokens = tokenizer.convert_ids_to_tokens(is_next["input_ids"].tolist())
print(" ".join(f"{token}/{segment}" for token, segment in zip(tokens, is_next["token_type_ids"].tolist())))
n_a = is_next["input_ids"].tolist().index(tokenizer.sep_token_id) + 1  # [CLS] A [SEP]
expected = [0] * n_a + [1] * (len(tokens) - n_a)
print("token_type_ids == [0] * |[CLS] A [SEP]| + [1] * |B [SEP]|:", is_next["token_type_ids"].tolist() == expected)

# %% [markdown]
# ## What the data set looks like in numbers
#
# About half the pairs are NotNext, every pair fits in `block_size`, and most fill it (the
# shorter ones come from `short_seq_probability` or from a document's end).

# %%
labels = Counter(int(dataset[i]["next_sentence_label"]) for i in range(len(dataset)))
lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
print(f"IsNext {labels[0]}, NotNext {labels[1]}: NotNext fraction {labels[1] / len(dataset):.3f} (asked: 0.5)")
print(f"lengths: max {max(lengths)} <= block_size {block_size}; "
      f"{sum(n >= block_size - 4 for n in lengths)} of {len(lengths)} within 4 tokens of it")
assert max(lengths) <= block_size

# %% [markdown]
# A tight `block_size` shows the truncation: with 16, most pairs lose tokens from the front or
# the back of the longer segment, so a segment may start or end in the middle of a sentence. The
# model then cannot rely on a segment always starting cleanly.

# %%
tight = TextDatasetForNextSentencePrediction(tokenizer, corpus_path, block_size=16, seed=0)
print(f"block_size 16: {len(tight)} pairs, longest {max(len(tight[i]['input_ids']) for i in range(len(tight)))} tokens")
for i in range(3):
    show(tight[i])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_label = {0: [], 1: []}
    for i, n in enumerate(lengths):
        by_label[int(dataset[i]["next_sentence_label"])].append(n)
    ax.hist([by_label[0], by_label[1]], bins=range(0, block_size + 2, 2), label=["IsNext", "NotNext"],
            stacked=True)
    ax.axvline(block_size, color="grey", linestyle=":", label="block_size")
    ax.set_xlabel("tokens per pair")
    ax.set_ylabel("pairs")
    ax.legend()
    _setup.save_plot(fig, "05_nsp_pair_lengths.png")

# %% [markdown]
# ## A pre-training batch
#
# `DataCollatorForLanguageModeling` pads the pairs, passes `token_type_ids` and
# `next_sentence_label` through, and adds the masked-LM corruption and `labels` of tutorial 04.
# That is everything `BertForPreTraining` needs.

# %%
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
batch = collator([dataset[i] for i in range(8)])
for key, value in batch.items():
    print(f"{key:<20} {tuple(value.shape)}")
print("next_sentence_label:", batch["next_sentence_label"].tolist())

# %% [markdown]
# ## L_NSP and L = w_MLM L_MLM + w_NSP L_NSP, by hand
#
# `BertForPreTraining` returns `prediction_logits` `(B, T, V)` for the MLM and
# `seq_relationship_logits` `(B, 2)` for NSP, and their weighted sum as `loss`. The weights are
# config fields, `mlm_alpha` and `nsp_beta`. We take `w_MLM = 1`, `w_NSP = 0.5` to tell the terms
# apart:

# %%
config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=64, mlm_alpha=1.0, nsp_beta=0.5)
model = BertForPreTraining(config).eval()
out = model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
            labels=batch["labels"], next_sentence_label=batch["next_sentence_label"])
print("prediction_logits      ", tuple(out.prediction_logits.shape))
print("seq_relationship_logits", tuple(out.seq_relationship_logits.shape))

y = batch["next_sentence_label"]  # (B,)
log_p = log_softmax(out.seq_relationship_logits)  # (B, 2)
L_NSP = -log_p[torch.arange(len(y)), y].mean()  # -log p(y | c), averaged over the batch
I = batch["labels"] != IGNORE_INDEX
L_MLM = -log_softmax(out.prediction_logits)[I, batch["labels"][I]].mean()
L = config.mlm_alpha * L_MLM + config.nsp_beta * L_NSP
print(f"L_NSP by hand {float(L_NSP):.4f}   nsp_loss {float(nsp_loss(out.seq_relationship_logits, y)):.4f}"
      f"   (log 2 = {math.log(2):.4f}: an untrained model guesses 50/50)")
print(f"L_MLM by hand {float(L_MLM):.4f}   mlm_loss {float(mlm_loss(out.prediction_logits, batch['labels'])):.4f}")
L_lib = pretraining_loss(out.prediction_logits, batch["labels"], out.seq_relationship_logits, y,
                         alpha=config.mlm_alpha, beta=config.nsp_beta)
print(f"L = {config.mlm_alpha} * L_MLM + {config.nsp_beta} * L_NSP = {float(L):.4f}"
      f"   pretraining_loss {float(L_lib):.4f}   model's loss {float(out.loss):.4f}")
assert torch.allclose(L, out.loss, rtol=1e-5)

# %% [markdown]
# `tests/test_bert_model.py::test_pretraining_loss_is_alpha_mlm_plus_beta_nsp` and
# `tests/test_losses.py::test_pretraining_loss_is_linear_in_alpha_and_beta_in_value_and_gradient`
# check this relation for other weights, and for the gradients too. Training on these batches is
# tutorial 06.
#
# ## Predict, then run: nsp_beta = 0
#
# Later models (RoBERTa, Liu et al. 2019) drop NSP altogether. Set `nsp_beta = 0` and take one
# backward pass of `L`. **Which parameters receive no gradient at all?** Only the NSP classifier
# `cls.seq_relationship`? Something else too? Guess, then run.

# %%
no_nsp = BertForPreTraining(BertConfig.from_dict(config.to_dict(), nsp_beta=0.0)).eval()
no_nsp.load_state_dict(model.state_dict())
with torch.enable_grad():  # this tutorial computes without gradients elsewhere
    no_nsp(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
           labels=batch["labels"], next_sentence_label=batch["next_sentence_label"]).loss.backward()
silent = sorted(name for name, p in no_nsp.named_parameters() if p.grad is None or not p.grad.any())
print("parameters with zero gradient when nsp_beta = 0:", silent)
assert silent == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                  "cls.seq_relationship.bias", "cls.seq_relationship.weight"], silent

# %% [markdown]
# The pooler too: `c = tanh(H_L[0] W_p + b_p)` feeds only the NSP classifier, and MLM reads the
# token rows of `H_L`, never `c`. So with `w_NSP = 0` the pooler of a pre-trained checkpoint is
# still its random initialisation, and a classifier fine-tuned on top of it (tutorial 07) starts
# from an untrained layer; this is why some recipes pool differently (the mean of `H_L`).
#
# ## Your turn: exercises `nsp_pairs` and `nsp_loss`
#
# - `nsp_pairs`: the pair-building methods of `TextDatasetForNextSentencePrediction` in
#   `common/data/language_modeling.py` (`_random_other_document`, `_create_examples_from_document`,
#   `_truncate_seq_pair`), following steps 1-5 above. The tests check that every pair fits,
#   that IsNext's B really follows A, and that NotNext's B comes from another document.
# - `nsp_loss` in `common/nn/losses.py`: two-class cross-entropy on the `(B, 2)` logits.
#
#     python -m tutorials.exercises make --out ../student --only nsp_pairs --only nsp_loss
#     cd ../student && python -m tutorials.exercises grade --only nsp_pairs --only nsp_loss

# %%
from tutorials.exercises import REGISTRY

for name in ("nsp_pairs", "nsp_loss"):
    print(f"{name:<10} {REGISTRY[name].pytest_command()}")
