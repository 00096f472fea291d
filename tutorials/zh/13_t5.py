# %% [markdown]
# # 13 · T5：一个负责读的编码器，一个边读边写的解码器
#
# BERT（教程 03-07）是编码器：每个词元都能看到其他所有词元，它的任务是补全被掩码的词元。GPT（08-09）是
# 解码器：每个词元只能看到它前面的词元，它的任务是写出下一个。T5（Raffel et al. 2020）把两者接在一起：
# 编码器读入源序列 x，解码器逐个词元写出目标序列 y，并且每一层都要*回看编码器的输出*：
#
#     enc = Encoder(x)                                          (B, S, d)，只算一次
#     h   = h + SelfAttn(RMS(h))          因果的，只看 y_<t
#     h   = h + CrossAttn(RMS(h), enc)    Q 来自解码器，K 和 V 来自 enc
#     h   = h + FFN(RMS(h))
#
# （`RMS` 即 RMSNorm，`x / sqrt(mean(x^2) + eps) * weight`，教程 17 会手写它；`h` 是解码器的隐藏状态，
# `d` 与全课程一样表示模型宽度，见 docs/notation.md。）本教程讲结构和预训练目标：交叉注意力（第 1 节）、
# 相对位置分桶（第 2 节）、片段遮盖（第 3 节）。T5 怎样在句对上训练、怎样生成（教师强制、贪心解码与束搜索、
# BLEU）放在教程 14。代码：`minit5/model.py`、`common/data/span_corruption.py`。测试：
# `tests/test_t5_parity.py`（与 transformers 的 T5 结果一致）、`tests/test_span_corruption.py`。
#
# 运行：`python tutorials/zh/13_t5.py`（几秒钟，不训练）。

# %%
import _setup

import random

import torch

from common.data.span_corruption import (compute_input_and_target_lengths, corrupt_spans,
                                         random_spans_noise_mask)
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration, relative_position_bucket

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 1. 交叉注意力：查询来自目标，键和值来自源
#
# 自注意力里，Q、K、V 都来自同一个序列。交叉注意力里，T 个目标位置提问（Q，T 行），S 个源位置作答
# （K、V，S 行）：注意力权重的形状是 (T, S)。源序列中的填充位置被掩码挡住，所以那里放什么都不会影响输出。

# %%
config = T5Config(vocab_size=60, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32)
model = T5ForConditionalGeneration(config).eval()
source = torch.tensor([[5, 6, 7, 8, 1, 0, 0]])  # 4 tokens, </s>, 2 pads
source_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
target = torch.tensor([[0, 9, 10]])  # decoder start (= pad), then two tokens
encoded = model.encode(source, source_mask)
layer = model.decoder.block[0].layer[1].EncDecAttention
q = layer.split(layer.q(model.decoder.embed_tokens(target)))  # (1, H, T, d_k)
k, v = layer.key_value(encoded)  # (1, H, S, d_k)
print("queries", tuple(q.shape), " keys", tuple(k.shape), " weights (B, H, T, S) =",
      (1, config.num_heads, target.size(1), source.size(1)))

with torch.no_grad():
    logits = model(input_ids=source, attention_mask=source_mask, decoder_input_ids=target).logits
    other_pads = source.clone()
    other_pads[0, 5:] = 42  # change what stands in the padded slots
    logits_other = model(input_ids=other_pads, attention_mask=source_mask, decoder_input_ids=target).logits
print("max change of the logits when the padded source tokens change:", (logits - logits_other).abs().max().item())

# %% [markdown]
# ## 2. 相对位置分桶
#
# T5 没有位置嵌入。每个注意力分数加上一个可学习的偏置 `b_h[bucket(r)]`（每个头 h、每个桶一个标量），
# 它只取决于查询 i 到键 j 的距离 r = j - i。近的距离各占一个桶；远的距离按对数间隔共用桶，直到
# max_distance D（128），超过 D 的全部落进最后一个桶。记 `n_b` 为**一个方向**上的桶数：
#
# - 编码器（双向）把 32 个桶一分为二，查询之前的键用 `n_b = 16` 个，之后的键用另外 16 个；解码器（因果）
#   看不到未来，32 个桶全部留给过去，`n_b = 32`；
# - 在一个方向内，记 n = |r|：n < n_b/2 时 `bucket(n) = n`（精确），否则
#   `n_b/2 + floor(log(n / (n_b/2)) / log(D / (n_b/2)) (n_b - n_b/2))`，最大为 `n_b - 1`。
#
# **先预测，再运行。** 共 32 个桶时，编码器在多大的距离以内给每个距离单独一个桶？解码器呢？
# （提示：两者都是 n_b/2 - 1。）

# %%
distances = torch.arange(-20, 21)
both = relative_position_bucket(distances, bidirectional=True, num_buckets=32, max_distance=128)
causal = relative_position_bucket(distances, bidirectional=False, num_buckets=32, max_distance=128)
print("r       ", " ".join(f"{int(r):3d}" for r in distances[::2]))
print("encoder ", " ".join(f"{int(b):3d}" for b in both[::2]))
print("decoder ", " ".join(f"{int(b):3d}" for b in causal[::2]))
far = relative_position_bucket(torch.tensor([-8, -16, -32, -64, -127, -128, -1000]), True, 32, 128)
print("encoder buckets of r = -8, -16, -32, -64, -127, -128, -1000:", far.tolist())
past = torch.arange(0, -200, -1)  # r = 0, -1, ..., -199: keys at or before the query


def own_bucket_up_to(buckets):
    """The largest n such that every distance 0..n has a bucket no other distance shares."""
    alone = torch.bincount(buckets)[buckets] == 1  # (200,) distance n alone in its bucket
    return int(alone.long().cumprod(0).sum()) - 1


exact_encoder = own_bucket_up_to(relative_position_bucket(past, True, 32, 128))
exact_decoder = own_bucket_up_to(relative_position_bucket(past, False, 32, 128))
print(f"one bucket per distance up to |r| = {exact_encoder} (encoder, n_b = 16) and "
      f"{exact_decoder} (decoder, n_b = 32)")
assert (exact_encoder, exact_decoder) == (7, 15), "n < n_b/2 is exact: 8 = 16/2 and 16 = 32/2"

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
# ## 3. 在一个句子上做片段遮盖
#
# 15% 的词元按平均长度 3 成段地被拿掉：round(L * 0.15) 个噪声词元，分成 round(noise / 3) 段，切分位置随机。
# 输入里每一段换成一个哨兵词元；目标依次写出每个哨兵词元和它遮住的内容（最后一段之后不再加哨兵：T5 的代码
# 就此结束，论文图 2 多画了一个）。之后组批器（collator）在两者末尾各加一个 </s>。哨兵词元从词表顶端往下
# 编号（<extra_id_0> = vocab_size - 1）。要得到 128 个词元的输入，T5 每次切 141 个原始词元：
# 141 - 21 个噪声词元 + 7 个哨兵 + </s> = 128。

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
# 在打印出来的这一对里，输入中的每个哨兵在目标中恰好出现一次，后面跟着它遮住的词：解码器学的正是编码器
# 看不到的那部分；目标长度约为输入的四分之一（128 个输入词元对应 21 + 7 + 1 个目标词元），所以这种预训练
# 很省算力。
#
# ## 轮到你了：练习 `relative_position_bucket` 和 `span_corruption`
#
# 在学生副本里（`make exercises`），`relative_position_bucket`（`minit5/model.py`）以及
# `random_spans_noise_mask` / `corrupt_spans`（`common/data/span_corruption.py`）会抛出
# `NotImplementedError`。按第 2 节的公式和第 3 节的规则写出它们，然后评分：
#
#     python -m tutorials.exercises make --out ../student --only relative_position_bucket --only span_corruption
#     cd ../student && python -m tutorials.exercises grade --only relative_position_bucket --only span_corruption

# %%
from tutorials.exercises import REGISTRY

for name in ("relative_position_bucket", "span_corruption"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
