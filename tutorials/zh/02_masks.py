# %% [markdown]
# # 02 · 掩码：谁可以看谁
#
# 教程 01 公式中的 `M` 决定了每个查询可以关注哪些键：
#
#     Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
#     M[i, j] = 0                 若查询 i 可以查看键 j
#     M[i, j] = 极大的负数         若不可以（此时 exp(...) = 0：键 j 的权重为 0）
#
# 屏蔽一个键有两种原因：
#
# - **填充**：一个批次中的句子长短不一，短句用 `[PAD]` 补齐。任何位置都不可以关注填充。BERT 只用
#   这一种掩码，所以每个词元都能看到它两侧的词元：BERT 是*双向*的。
# - **因果性**：从 `x_1..x_t` 预测下一个词元 `x_{t+1}` 的语言模型不能偷看它。查询 `i` 只能看到
#   `j <= i` 的键。GPT 使用这种掩码（以及填充掩码）：它从左往右读，正因如此它才能生成文本
#   （教程 08 和 10）。
#
# 在代码里，掩码是一个**布尔张量，True = 可以关注**（`common/nn/masks.py`）。它的形状能与分数
# `(B, h, T_q, T_k)`（`h` 个头）广播：
#
#     padding_mask(attention_mask)  -> (B, 1, 1, T_k)
#     causal_mask(T_q, T_k)         -> (1, 1, T_q, T_k)
#
# 运行：`python tutorials/zh/02_masks.py`。

# %%
import _setup

import math

import torch

from common.nn.attention import scaled_dot_product_attention
from common.nn.masks import additive_mask, causal_mask, combine_masks, mask_value, padding_mask
from common.text.auto import BertTokenizer

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## 填充：分词器给出的 attention_mask
#
# 对一个批次做填充的分词器还会返回 `attention_mask`：真实词元为 1，填充为 0（这是 Hugging Face
# `transformers` 的约定，我们的分词器沿用它）。一个很小的词级词表就足以看清：

# %%
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
tokenizer = BertTokenizer(vocab=vocab)
batch = tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
for row in range(2):
    print(tokenizer.convert_ids_to_tokens(batch["input_ids"][row].tolist()))
print("attention_mask:\n", batch["attention_mask"])

# %% [markdown]
# `padding_mask` 把 `(B, T)` 的 1 和 0 变成形状为 `(B, 1, 1, T)` 的布尔值：两个长度为 1 的轴在头和
# 查询上广播，因此每个头的每个查询都看不到填充所在的那一列。

# %%
pad = padding_mask(batch["attention_mask"])
print("padding_mask", tuple(pad.shape), "(B, 1, 1, T_k)")
B, T = batch["input_ids"].shape
h = 2
print("broadcast to the scores (B, h, T, T):", tuple(pad.expand(B, h, T, T).shape))
print("sentence 2, every query sees:", pad[1, 0, 0].int().tolist())

# %% [markdown]
# ## 因果性：下三角
#
#     causal_mask: M[i, j] = True  当且仅当  j <= i
#
# 使用 KV 缓存时（教程 09），只计算最新的 `T_q` 个查询，对应到目前为止的全部 `T_k` 个键；此时查询
# `i` 位于位置 `i + T_k - T_q`，掩码就是完整三角形的最后 `T_q` 行。

# %%
print("causal_mask(5):\n", causal_mask(5)[0, 0].int())
print("causal_mask(q_len=2, k_len=5), the last two rows:\n", causal_mask(2, 5)[0, 0].int())
assert torch.equal(causal_mask(2, 5)[0, 0], causal_mask(5)[0, 0, 3:])

# %% [markdown]
# ## 两者同时使用
#
# 处理填充批次的解码器两者都需要：允许 =（键不是填充）并且（键不在未来）。`combine_masks` 就是这个
# 逻辑与，带广播：`(B, 1, 1, T)` 和 `(1, 1, T, T)` 得到 `(B, 1, T, T)`。

# %%
both = combine_masks(pad, causal_mask(T))
print("combined", tuple(both.shape))
print("sentence 2 ('[CLS] a dog ran [SEP]' + 3 pads):\n", both[1, 0].int())

# %% [markdown]
# ## 被屏蔽的分数变成什么
#
# 注意力代码写的是 `scores.masked_fill(~mask, mask_value(dtype))`：被屏蔽的分数被替换为该数据类型
# **最小的有限数**，即 `torch.finfo(dtype).min`。softmax 之后，`exp(min - max)` 下溢为恰好 0，所以
# 被屏蔽的键权重为 0——只要这一行至少有一个键被允许，结果就与用 `-inf` 相同。
# `additive_mask` 把同样的东西写成公式里的加性 `M`。下面用三种数据类型：float32，以及两种把内存减半的
# 16 位浮点数：float16（5 位指数、10 位尾数：精度较细，范围小，最大 65504）和 bfloat16（“brain float”：
# 与 float32 一样的 8 位指数，7 位尾数：范围与 float32 相同，只有约 3 位有效数字）。

# %%
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    print(f"{str(dtype):>15}: mask_value = {mask_value(dtype):.4g}")
print("additive M for '[CLS] a dog ran [SEP] + pads':", [f"{m:.3g}" for m in additive_mask(pad[1, 0, 0]).tolist()])

scores = torch.randn(1, 1, T, T)  # (B, h, T_q, T_k) for sentence 2
blocked = scores.masked_fill(~pad[1:2], mask_value(scores.dtype))
weights = torch.softmax(blocked, dim=-1)
print("weights of query 0 over the keys:", weights[0, 0, 0])
print("weight on the pads, all queries:", float(weights[..., 5:].abs().max()), "(exactly zero)")

# %% [markdown]
# ## 为什么不用 -inf？一行无处可看
#
# 有时一个查询**没有**任何可以关注的键。左填充（批量生成时使用，让每个句子都在同一位置结束）再加上
# 因果掩码时就会发生：开头的填充位置作为查询，它们的过去只有填充。

# %%
left_tokenizer = BertTokenizer(vocab=vocab, padding_side="left")
left = left_tokenizer(["the cat sat on the mat", "a dog ran"], padding=True, return_tensors="pt")
print(left_tokenizer.convert_ids_to_tokens(left["input_ids"][1].tolist()))
left_mask = combine_masks(padding_mask(left["attention_mask"]), causal_mask(T))
empty_rows = (~left_mask.any(dim=-1))[1, 0]
print("queries of sentence 2 that may attend to nothing:", empty_rows.nonzero().flatten().tolist())

# %% [markdown]
# 用 `-inf` 时，这样一行是 `softmax(-inf, ..., -inf) = 0 / 0 = NaN`，NaN 会传遍后面的每一层，
# 一直传进损失。用最小的有限值时，这一行的所有分数都相等，softmax 在全部 `T` 个键上均匀分布
# （这里是 1/8），输出是有限的（这一行是填充，它算出什么都不会被用到）。模型运行时用到的每种数据
# 类型都是如此：

# %%
q = torch.randn(B, h, T, 8)
k = torch.randn(B, h, T, 8)
v = torch.randn(B, h, T, 8)
with_inf = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~left_mask, float("-inf")), dim=-1)
print("with -inf: NaN in the weights?", bool(with_inf.isnan().any()))
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    out, w = scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), left_mask, need_weights=True)
    print(f"{str(dtype):>15}: output finite everywhere: {bool(out.isfinite().all())},"
          f" weights of the empty row: {w[1, 0, 0, :3].float().tolist()} ...")
    assert out.isfinite().all()

# %% [markdown]
# `tests/test_masks.py::test_a_fully_blocked_row_gives_finite_outputs_never_nan` 对这三种数据类型
# 证明了这一点。
#
# ## 填充不改变真实词元的任何结果
#
# 因为填充键的权重恰好为 0，无论填充位置上放的是什么向量，真实词元的输出都不变。我们用噪声覆盖
# 填充位置的键和值：

# %%
out_before, _ = scaled_dot_product_attention(q, k, v, pad)
k_noisy, v_noisy = k.clone(), v.clone()
k_noisy[1, :, 5:] = 100 * torch.randn_like(k_noisy[1, :, 5:])
v_noisy[1, :, 5:] = 100 * torch.randn_like(v_noisy[1, :, 5:])
out_after, _ = scaled_dot_product_attention(q, k_noisy, v_noisy, pad)
print("largest change of any output:", float((out_after - out_before).abs().max()))
assert torch.equal(out_after, out_before)

# %% [markdown]
# （`tests/test_attention.py::test_changing_blocked_keys_and_values_never_changes_the_output`
# 在随机形状上检查这一点。）
#
# ## 先预测，再运行：谁会感受到变化？
#
# 八个位置，在 `x` 自身上做自注意力（`Q = K = V = x`）。我们只改变位置 3 的向量。**使用因果掩码时，
# 八个输出行中哪些会变？只用填充掩码时（这里没有填充：每个键都允许），又是哪些？** 先猜，再运行。

# %%
x = torch.randn(1, 1, 8, 8)  # (B, h, T, d_k)
x_changed = x.clone()
x_changed[..., 3, :] += 1.0
changed = {}
for name, mask in (("causal", causal_mask(8)), ("bidirectional", None)):
    before, _ = scaled_dot_product_attention(x, x, x, mask)
    after, _ = scaled_dot_product_attention(x_changed, x_changed, x_changed, mask)
    changed[name] = ((after - before).abs().amax(-1) > 1e-6)[0, 0].nonzero().flatten().tolist()
    print(f"{name:>13}: output rows that changed: {changed[name]}")
assert changed["causal"] == [3, 4, 5, 6, 7], changed
assert changed["bidirectional"] == list(range(8)), changed

# %% [markdown]
# 因果：只有第 3..7 行，即变化处及其之后的位置；较早的位置永远看不到较晚的词元
# （`test_with_a_causal_mask_a_later_token_never_changes_earlier_outputs` 在随机形状上证明了这一点）。
# 双向：每一行都变，包括较早的行。这一个差别就是 GPT（自回归：每个位置根据它左边的内容预测）与
# BERT（自编码：每个位置读取两侧）之间的全部分野，教程 10 会深入讨论。
#
# ## 三种掩码的图

# %%
plt = _setup.pyplot()
if plt is not None:
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][1].tolist())
    pictures = {
        "padding (sentence 2)": pad[1, 0, 0].expand(T, T),
        "causal": causal_mask(T)[0, 0],
        "padding AND causal": both[1, 0],
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (title, picture) in zip(axes, pictures.items()):
        ax.imshow(picture.int().numpy(), cmap="Greys", vmin=0, vmax=1.4)
        ax.set_xticks(range(T), tokens, rotation=60)
        ax.set_yticks(range(T), tokens)
        ax.set_title(title)
        ax.set_xlabel("key j")
    axes[0].set_ylabel("query i   (dark = may attend)")
    _setup.save_plot(fig, "02_masks.png")

# %% [markdown]
# ## 轮到你了：练习 `masks`
#
# 在学生副本中（`make exercises`），`padding_mask` 和 `causal_mask` 会抛出 `NotImplementedError`。
# 根据文档字符串和上面的公式把它们写出来，然后评分：
#
#     python -m tutorials.exercises make --out ../student --only masks
#     cd ../student && python -m tutorials.exercises grade --only masks     # 或：make grade
#
# 练习 `attention` 建立在这个练习之上：它的测试会把掩码传入注意力。

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["masks"].pytest_command())
print("hint:", REGISTRY["masks"].hint)
