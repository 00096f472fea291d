# %% [markdown]
# # 12 · T5：一个负责读的编码器，一个边读边写的解码器
#
# BERT（教程 03-07）是编码器：每个词元都看得到其他所有词元，它填充被掩码的词元。GPT（08-09）是解码器：
# 每个词元只看得到它之前的词元，它写出下一个。T5（Raffel et al. 2020）把两者结合起来。编码器读取源序列 x；
# 解码器一次一个词元地写出目标序列 y，并且在每一层中*关注编码器的状态*：
#
#     enc = Encoder(x)                                          (B, S, C)，只计算一次
#     d   = d + SelfAttn(RMS(d))          因果的，作用于 y_<t
#     d   = d + CrossAttn(RMS(d), enc)    Q 来自解码器，K 和 V 来自 enc
#     d   = d + FFN(RMS(d))
#
# 预训练填充被破坏的*片段*（第 3 节），生成时可以保留多个候选（束搜索，第 4 节）。代码：`minit5/model.py`、
# `minit5/generate.py`、`common/data/span_corruption.py`。测试：`tests/test_t5_parity.py`（与 transformers
# 的 T5 相等）、`tests/test_span_corruption.py`。
#
# 运行：`python tutorials/zh/13_t5.py`（约两分钟）；`TUTORIAL_QUICK=1` 只需几秒。

# %%
import _setup

import random
import time

import torch

from common.data.span_corruption import (compute_input_and_target_lengths, corrupt_spans,
                                         random_spans_noise_mask)
from minit5.config import T5Config
from minit5.metrics import corpus_bleu
from minit5.model import T5ForConditionalGeneration, relative_position_bucket

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. 交叉注意力：查询来自目标，键和值来自源
#
# 在自注意力中，Q、K、V 都来自同一个序列。在交叉注意力中，T 个目标位置提问（Q，T 行），S 个源位置回答
# （K、V，S 行）：权重的形状是 (T, S)。被填充的源位置被掩码屏蔽，所以那里放的是什么都不会改变输出。

# %%
config = T5Config(vocab_size=60, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32)
model = T5ForConditionalGeneration(config).eval()
source = torch.tensor([[5, 6, 7, 8, 1, 0, 0]])  # 4 tokens, </s>, 2 pads
source_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
target = torch.tensor([[0, 9, 10]])  # decoder start (= pad), then two tokens
encoded = model.encode(source, source_mask)
layer = model.decoder.block[0].layer[1].EncDecAttention
q = layer.split(layer.q(model.decoder.embed_tokens(target)))  # (1, H, T, d)
k, v = layer.key_value(encoded)  # (1, H, S, d)
print("queries", tuple(q.shape), " keys", tuple(k.shape), " weights (B, H, T, S) =",
      (1, config.num_heads, target.size(1), source.size(1)))

with torch.no_grad():
    logits = model(input_ids=source, attention_mask=source_mask, decoder_input_ids=target).logits
    other_pads = source.clone()
    other_pads[0, 5:] = 42  # change what stands in the padded slots
    logits_other = model(input_ids=other_pads, attention_mask=source_mask, decoder_input_ids=target).logits
print("max change of the logits when the padded source tokens change:", (logits - logits_other).abs().max().item())

# %% [markdown]
# ## 2. 相对位置桶
#
# T5 没有位置嵌入。每个注意力分数都加上一个可学习的偏置，它只取决于从查询 i 到键 j 的距离 r = j - i，并通过
# 一个桶来查：小于 N/4 的距离（这里共 32 个桶：0..7）各占一个桶，更长的距离按对数间隔共享桶，直到
# max_distance（128），超过它的都归入最后一个桶。编码器用一半的桶表示查询之前的键，另一半表示查询之后的键；
# 解码器从不看到未来，所以全部桶都用于过去。

# %%
distances = torch.arange(-20, 21)
both = relative_position_bucket(distances, bidirectional=True, num_buckets=32, max_distance=128)
causal = relative_position_bucket(distances, bidirectional=False, num_buckets=32, max_distance=128)
print("r       ", " ".join(f"{int(r):3d}" for r in distances[::2]))
print("encoder ", " ".join(f"{int(b):3d}" for b in both[::2]))
print("decoder ", " ".join(f"{int(b):3d}" for b in causal[::2]))
far = relative_position_bucket(torch.tensor([-8, -16, -32, -64, -127, -128, -1000]), True, 32, 128)
print("encoder buckets of r = -8, -16, -32, -64, -127, -128, -1000:", far.tolist())

plt = _setup.pyplot()
if plt is not None:
    T = 48
    grid = torch.arange(T)[None, :] - torch.arange(T)[:, None]  # r = j - i
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, bidirectional, title in ((axes[0], True, "encoder (bidirectional)"), (axes[1], False, "decoder (causal)")):
        ax.imshow(relative_position_bucket(grid, bidirectional, 32, 128), cmap="viridis")
        ax.set_title(title)
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    _setup.save_plot(fig, "13_t5_buckets.png")

# %% [markdown]
# ## 3. 在一个句子上做片段破坏
#
# 15% 的词元以平均长度 3 的片段被去掉：round(L * 0.15) 个噪声词元分成 round(noise / 3) 个片段，随机切分。
# 每个片段在输入中变成一个哨兵词元；目标依次列出每个哨兵词元及其替换掉的内容。哨兵词元从词表顶端往下数
# （<extra_id_0> = vocab_size - 1）。对于 128 个词元的输入，T5 切出 141 个词元的原始块。

# %%
words = ("the quick brown fox jumps over the lazy dog while the small cat watches from the warm "
         "window and the old man reads his morning paper at the kitchen table before he walks "
         "down the hill to the market").split()
vocab_size = 1000
ids = list(range(len(words)))  # token i = word i
mask = random_spans_noise_mask(len(words), 0.15, 3.0, random.Random(7))  # T5 always ends with a span
inputs, targets = corrupt_spans(ids, mask, first_sentinel_id=vocab_size - 1)
name = lambda i: words[i] if i < len(words) else f"<extra_id_{vocab_size - 1 - i}>"  # noqa: E731
print("noise tokens:", sum(mask), "of", len(words), " spans:", len(set(i for i in inputs if i >= len(words))))
print("input :", " ".join(map(name, inputs)))
print("target:", " ".join(map(name, targets)))
print("compute_input_and_target_lengths(128) =", compute_input_and_target_lengths(128), "(raw tokens, target)")

# %% [markdown]
# ## 4. 贪心与束搜索
#
# 贪心解码在每一步取最可能的词元；束搜索保留 num_beams 个最可能的前缀（对数概率之和），最后完成最好的那个，
# 得分为 log P / length^alpha。一个玩具翻译任务：目标是把源序列倒过来、每个字母重复一次，一分钟就能学会。
# 然后两种解码器翻译留出的源序列；这里测量 BLEU 和时间（机器是共享的：时间每次运行都不同，比值变化较小）。

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
# 束搜索每一步的解码器工作量大约是 num_beams 倍（编码器以及交叉注意力的键和值对每个源序列只计算一次，由它的
# 各个束共享）。在训练得好的模型上，贪心往往一样好；当模型在早期没有把握时，束搜索最有帮助。
