# %% [markdown]
# # 01 · 注意力，亲手算一遍
#
# ## 注意力要解决的问题
#
# 在 "the animal did not cross the street because **it** was too tired"（那只动物没有过马路，因为
# **它**太累了）这句话里，模型为 "it" 构造的向量必须带上 "animal" 的信息，而它在六个词元之前。循环
# 网络把一切都塞进同一个状态向量，一步一步往下传，远处的词传到时已经淡了，而且无法并行计算；卷积只
# 看得到一个固定的窗口。注意力让每个位置都能*直接*读取其他每个位置，权重由内容本身算出：
# "it" 提出一个问题（查询，query），每个词给出一个标签（键，key）和一份内容（值，value），"it"
# 按各个键回答其查询的好坏，按比例收到这些值的混合。一次矩阵乘法就同时完成了所有位置的计算。
# BERT 和 GPT 都是这种运算的堆叠；它们的区别只在于每个位置*能*读取哪些位置（教程 02），以及
# 它们被训练去预测什么（教程 04 和 08）。
#
# ## 记号（所有教程通用）
#
# 在这里和 `docs/notation.md` 中统一说明一次（后者还列出了课程中的所有公式）：
#
# | 符号 | 含义 | 代码中的名字 |
# | --- | --- | --- |
# | `B`, `T`, `V` | 批大小、序列长度、词表大小 | `batch_size`, `seq_len`, `vocab_size` |
# | `d` | 模型宽度（Vaswani：`d_model`；Devlin：`H`） | `hidden_size`, `n_embd` |
# | `h` | 头数（Devlin：`A`） | `num_attention_heads`, `n_head` |
# | `d_k = d / h` | 一个头的宽度 | `head_dim` |
# | `L` | 层数；`H_l` 为第 `l` 层之后 `(T, d)` 的隐藏状态 | `num_hidden_layers` |
# | `Q, K, V, M` | 查询、键、值、加性掩码 | `query`, `key`, `value`, `mask` |
# | `W_i^Q, W_i^K, W_i^V, W^O` | 每个头的投影 `(d, d_k)`；输出投影 `(d, d)` | `query`, `key`, `value`, `out_proj` |
# | `c` | BERT 池化后的 [CLS] 向量 `tanh(H_L[0] W_p + b_p)`（Devlin：`C`） | `pooler` |
# | `x`, `x_<t`, `x~`, `I` | 词元 id、`t` 之前的前缀、经 MLM 加噪后的输入、被掩码的位置集合 | `input_ids`, `labels != -100` |
#
# ## 公式
#
# BERT 和 GPT 的每一层都围绕同一个公式构建（Vaswani et al. 2017，式 1；我们加上了掩码项 `M`，
# 式 1 本身没有）：
#
#     Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
#
# - `Q`（查询），形状 `(T_q, d_k)`：每个*发问*的位置一行；
# - `K`（键），形状 `(T_k, d_k)`：每个*可被查看*的位置一行；
# - `V`（值），形状 `(T_k, d_v)`：每个被查看的位置*交出*的内容；
# - `M`（掩码），形状 `(T_q, T_k)`：允许查看处为 0，不允许处为极大的负数（教程 02）。
#
# 结果的第 `i` 行是 `V` 各行的加权平均；权重 `softmax(q_i K^T / sqrt(d_k))` 表示查询 `i` 与
# 每个键的匹配程度。
#
# 在本项目中，这个公式就是 `common/nn/attention.py:scaled_dot_product_attention`，测试在
# `tests/test_attention.py`。我们先用小张量一步一步算出它，再检查项目的函数给出同样的数值。
#
# 运行：`python tutorials/zh/01_attention.py`（加上 `TUTORIAL_QUICK=1` 运行简短版）。

# %%
import _setup

import math

import torch

from common.nn.attention import (MultiHeadAttention, merge_heads, scaled_dot_product_attention,
                              split_heads)

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
torch.set_grad_enabled(False)  # nothing is trained here: no gradients needed

# %% [markdown]
# ## 第 0 步：三个小矩阵
#
# 四个位置（`T = 4`），每个查询/键八维（`d_k = 8`），值的大小为 `d_v = 3`，这样输出容易看。
# 库函数按批、按头处理 `(B, h, T, d_k)`；这里先取 `B = h = 1`，打印时省去这两个轴。

# %%
T, d_k, d_v = 4, 8, 3
Q = torch.randn(T, d_k)  # (T, d_k)
K = torch.randn(T, d_k)  # (T, d_k)
V = torch.randn(T, d_v)  # (T, d_v)
print("Q", tuple(Q.shape), " K", tuple(K.shape), " V", tuple(V.shape))

# %% [markdown]
# ## 第 1 步：scores = Q K^T / sqrt(d_k)
#
# `scores[i, j] = (q_i . k_j) / sqrt(d_k)`：每一对（查询，键）一个数，构成 `(T_q, T_k)` 矩阵。
# 分数大表示“查询 i 对键 j 感兴趣”。

# %%
raw = Q @ K.T  # (T, T)  raw[i, j] = q_i . k_j
scores = raw / math.sqrt(d_k)  # (T, T)
print("scores", tuple(scores.shape))
print(scores)
print("check one entry by hand: q_0 . k_1 / sqrt(8) =",
      round(float(sum(Q[0, c] * K[1, c] for c in range(d_k)) / math.sqrt(d_k)), 4),
      " scores[0, 1] =", round(float(scores[0, 1]), 4))

# %% [markdown]
# ## 第 2 步：weights = softmax(scores)，逐行计算
#
#     softmax(s)_j = exp(s_j) / sum_u exp(s_u)
#
# 每一行变成键上的一个概率分布：全为正，和为 1。先减去该行的最大值在数学上不改变任何东西（它在
# 分子和分母之间抵消），却能防止 `exp` 溢出；`torch.softmax` 也是这样做的。

# %%
shifted = scores - scores.max(dim=-1, keepdim=True).values  # every entry <= 0
weights = shifted.exp() / shifted.exp().sum(dim=-1, keepdim=True)  # (T, T)
print(weights)
print("row sums:", weights.sum(dim=-1))
print("equals torch.softmax:", torch.allclose(weights, torch.softmax(scores, dim=-1), atol=1e-7))

# %% [markdown]
# ## 第 3 步：output = weights V
#
# 输出的第 `i` 行是 `sum_j weights[i, j] v_j`：值向量各行的混合，比例由查询 `i` 决定。

# %%
output = weights @ V  # (T, d_v)
print("output", tuple(output.shape))
print(output)
mix = weights[0, 0] * V[0] + weights[0, 1] * V[1] + weights[0, 2] * V[2] + weights[0, 3] * V[3]
print("row 0 by hand:", mix)

# %% [markdown]
# ## 项目的函数给出同样的数值
#
# `scaled_dot_product_attention(query, key, value, mask=None, ...)` 接受 `(B, h, T, d_k)` 的张量，
# 所以我们用 `[None, None]` 加上前面两个轴。`need_weights=True` 还会返回 softmax 权重（模型在
# `output_attentions=True` 时会要它们）。

# %%
lib_out, lib_weights = scaled_dot_product_attention(Q[None, None], K[None, None], V[None, None],
                                                    need_weights=True)
print("library output", tuple(lib_out.shape), " weights", tuple(lib_weights.shape))
print("max |ours - library| output :", float((lib_out[0, 0] - output).abs().max()))
print("max |ours - library| weights:", float((lib_weights[0, 0] - weights).abs().max()))
assert torch.allclose(lib_out[0, 0], output, atol=1e-6)

# %% [markdown]
# 测试能证明的比一个例子更多：权重的每一行和为 1，被屏蔽的键权重恰好为 0
# （`test_attention_rows_sum_to_one_and_blocked_keys_get_exactly_zero`），结果等于 PyTorch 的融合
# 内核（`test_hand_written_attention_equals_torch_sdpa`），而且在没有位置信息时，注意力不关心词元的
# 顺序（`test_self_attention_without_positions_is_permutation_equivariant`）——这正是 BERT 和 GPT
# 要加上位置嵌入的原因（教程 03）。
#
# ## 为什么要除以 sqrt(d_k)？
#
# 如果 `q` 和 `k` 的各分量相互独立、均值为 0、方差为 1，那么 `q . k = sum_{c=1}^{d_k} q_c k_c`
# 是 `d_k` 个方差为 1 的项之和，因此
#
#     Var(q . k) = d_k,     Var(q . k / sqrt(d_k)) = 1.
#
# 不做缩放时，头越宽分数越大，softmax 会饱和（一个权重接近 1，其余接近 0），梯度随之消失。
#
# **先预测，再运行。** 一个查询对 16 个随机键，`d_k = 256`。不除以 `sqrt(d_k)` 时，16 个 softmax
# 权重中最大的那个（对查询取平均）更接近 1/16 = 0.06 还是 1？除了之后呢？先把你的猜测写下来；
# 下面的表格给出答案，表格后的 assert 会检查它。

# %%
n_pairs = 2_000 if _setup.QUICK else 20_000
n_keys = 16
print(f"{'d_k':>5} {'Var(q.k)':>10} {'Var(q.k/sqrt d_k)':>18} {'max weight raw':>15} {'max weight scaled':>18}")
for d in (4, 16, 64, 256):
    q = torch.randn(n_pairs, d)
    k = torch.randn(n_pairs, d)
    dots = (q * k).sum(-1)  # (n_pairs,)
    # The largest softmax weight of one query over 16 random keys, averaged over queries:
    # close to 1/16 = 0.06 is "spread out", close to 1 is "saturated".
    keys = torch.randn(n_keys, d)
    s = q[:500] @ keys.T  # (500, n_keys)
    max_raw = torch.softmax(s, -1).max(-1).values.mean()
    max_scaled = torch.softmax(s / math.sqrt(d), -1).max(-1).values.mean()
    print(f"{d:>5} {dots.var():>10.1f} {(dots / math.sqrt(d)).var():>18.2f} {max_raw:>15.2f} {max_scaled:>18.2f}")

# %% [markdown]

# %%
# The answer at d_k = 256 (the last row): unscaled, one key takes almost all the weight.
print(f"d_k = 256: largest weight {float(max_raw):.2f} without sqrt(d_k), {float(max_scaled):.2f} with it")
assert max_raw > 0.8 and max_scaled < 0.5, (float(max_raw), float(max_scaled))

# %% [markdown]
# 原始分数的方差随 `d_k` 增长；缩放后的方差无论头多大都保持在 1 附近，softmax 在 d_k = 4 和
# d_k = 256 时同样“柔和”。
#
# ## 多个头：拆分、注意、合并
#
# 多头注意力在 `d_k = d / h` 维的切片上并排运行 `h` 个注意力（Vaswani et al. 2017，第 3.2.2 节）：
#
#     head_i = Attention(X W_i^Q, X W_i^K, X W_i^V)
#     MultiHead(X) = Concat(head_1, ..., head_h) W^O
#
# 所有头的投影合起来各是一个 `(d, d)` 矩阵；拆成多个头只是一次 reshape：`split_heads` 把
# `(B, T, d)` 变成 `(B, h, T, d_k)`，`merge_heads` 再变回来（`common/nn/attention.py`）。`W^O`
# 在拼接之后只乘一次。

# %%
B, T, d, h = 2, 5, 16, 4
x = torch.randn(B, T, d)  # (B, T, d)
heads = split_heads(x, h)  # (B, h, T, d_k) with d_k = d / h = 4
print("x", tuple(x.shape), "-> split_heads", tuple(heads.shape), "-> merge_heads", tuple(merge_heads(heads).shape))
print("head 1 of position 2 is channels 4..7 of x:", torch.equal(heads[0, 1, 2], x[0, 2, 4:8]))
print("merge_heads(split_heads(x)) == x:", torch.equal(merge_heads(heads), x))

# %% [markdown]
# `MultiHeadAttention` 用 BERT 的名字（`query`、`key`、`value`）保存投影，所以真实的 BERT 检查点
# 可以直接加载进来。`output_projection=True` 时它计算完整的
# `MultiHead(X) = Concat(head_1, ..., head_h) W^O`，`W^O` 就是它的 `out_proj`。默认情况下
# （`output_projection=False`）它停在 `Concat(head_1, ..., head_h)`：BERT 把 `W^O` 放在下一个模块里
# （`attention.output.dense`，教程 03），这样检查点里的名字才对得上。无论哪种方式，`W^O` 都恰好乘
# 一次。我们先检查包含 `W^O` 的完整公式，再检查不含它的默认模块：

# %%
mha = MultiHeadAttention(hidden_size=d, num_heads=h, output_projection=True).eval()
context, mha_weights = mha(x, output_attentions=True)
print("context", tuple(context.shape), " weights", tuple(mha_weights.shape), "(B, h, T_q, T_k)")

q = split_heads(mha.query(x), h)  # (B, h, T, d_k): X W_i^Q for every head i at once
k = split_heads(mha.key(x), h)
v = split_heads(mha.value(x), h)
concat = merge_heads(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1) @ v)  # (B, T, d)
by_hand = mha.out_proj(concat)  # Concat(head_1, ..., head_h) W^O: the one W^O
print("max |by hand - MultiHead(X)|:", float((by_hand - context).abs().max()))
assert torch.allclose(by_hand, context, atol=1e-5)

no_wo = MultiHeadAttention(hidden_size=d, num_heads=h).eval()  # output_projection=False
no_wo.load_state_dict(mha.state_dict(), strict=False)  # same W^Q, W^K, W^V; it has no out_proj
print("default module returns Concat(heads), before W^O:", torch.allclose(no_wo(x)[0], concat, atol=1e-5))
assert torch.allclose(no_wo(x)[0], concat, atol=1e-5)

# %% [markdown]
# ## 权重长什么样
#
# 随机权重画出来的图没什么看头，所以我们在句子 "the cat sat on the mat" 上构造两个职责已知的头。
# 每个词元有一个随机向量 `e_t`，每个位置有一个随机向量 `p_t`（在 64 维中几乎正交）。
#
# - **同词头**：`q_t = k_t = e_t`（乘以一个增益）。每个词元与自己匹配得最好，两个 "the" 彼此匹配。
# - **前一词元头**：`q_t = p_{t-1}`，`k_t = p_t`。查询 t 匹配前一个位置的键，真实的 GPT 模型
#   被发现会学到这种模式。

# %%
_setup.seed(1)
words = "the cat sat on the mat".split()
dim = 64
vocab = sorted(set(words))
word_vec = {w: torch.randn(dim) for w in vocab}
pos_vec = torch.randn(len(words), dim)
E = torch.stack([word_vec[w] for w in words])  # (T, dim)

gain = 0.5
same_word_q = gain * E
same_word_k = gain * E
previous_q = gain * torch.cat([pos_vec[:1], pos_vec[:-1]])  # query t looks for position t-1 (0 looks at itself)
previous_k = gain * pos_vec
q_heads = torch.stack([same_word_q, previous_q])[None]  # (1, 2, T, dim)
k_heads = torch.stack([same_word_k, previous_k])[None]  # (1, 2, T, dim)
v_heads = torch.eye(len(words)).expand(1, 2, -1, -1)  # values = one-hot positions, so output = weights
_, demo_weights = scaled_dot_product_attention(q_heads, k_heads, v_heads, need_weights=True)
for h, name in enumerate(("same-word", "previous-token")):
    print(f"{name} head: each query's favourite key ->",
          [f"{words[i]}->{words[j]}" for i, j in enumerate(demo_weights[0, h].argmax(-1).tolist())])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for h, (ax, name) in enumerate(zip(axes, ("same-word head", "previous-token head"))):
        im = ax.imshow(demo_weights[0, h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(words)), words)
        ax.set_yticks(range(len(words)), words)
        ax.set_xlabel("key (looked at)")
        ax.set_title(name)
    axes[0].set_ylabel("query (looking)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="softmax weight")
    _setup.save_plot(fig, "01_attention_weights.png")

# %% [markdown]
# 热力图的每一行是一次 softmax：和为 1。在同词头中，两个 "the" 所在的行把权重分给两个 "the" 列。
#
# ## 轮到你了：练习 `attention`
#
# `make exercises` 把课程复制到 `../student/`，其中 `scaled_dot_product_attention` 的函数体被替换为
# `raise NotImplementedError(...)`。在那里把它写出来（上面的三步，加上教程 02 的掩码，以及
# `training` 时对权重做 dropout），然后 `cd ../student && make grade` 运行该练习的测试并打印你的等级。
# 一次做一个练习：
#
#     python -m tutorials.exercises make --out ../student --only attention
#     cd ../student && python -m tutorials.exercises grade --only attention
#
# 给它评分的测试：

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["attention"].pytest_command())
print("hint:", REGISTRY["attention"].hint)
