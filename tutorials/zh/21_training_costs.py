# %% [markdown]
# # 21 · 训练的代价
#
# 在一次训练开始之前，就可以算出（误差在几个百分点以内）它训练多少参数、每一步需要多少浮点运算、
# 需要多少内存。本教程先预测这些数字并与实测对比，然后介绍少花一些的办法：从不构造 T x T 矩阵的
# 注意力（FlashAttention 的在线 softmax）、激活检查点（用重算代替存储），以及把权重分片到多个进程（FSDP）。
# 接着讲怎样花得更值：让每一步学到更多的优化器 Muon，以及回答“给定算力预算，模型该多大”的缩放研究。
#
# 代码：`common/train/accounting.py`、`common/train/measure.py`、各模型族的 `accounting.py`、
# `common/nn/checkpointing.py`、`common/nn/flash_attention.py`、`common/train/muon.py`、
# `bench/scaling.py`。测试：`tests/test_accounting.py`、`tests/test_checkpointing.py`、
# `tests/test_flash_attention.py`、`tests/test_muon.py`、`tests/test_bench_scaling.py`。
# 结果：`docs/results/compute.md`。运行：`python tutorials/zh/21_training_costs.py`（约一分钟）；
# `TUTORIAL_QUICK=1` 只需几秒。

# %%
import _setup

import math

import torch

from common.nn.attention import scaled_dot_product_attention
from common.nn.flash_attention import flash_attention, online_softmax_update
from common.nn.masks import causal_mask
from common.train.measure import peak_allocated_bytes, profiled_flops
from minigpt import GPT, GPTConfig
from minigpt.accounting import estimate

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. 计数：参数、FLOPs、内存
#
# 一个输入维度 k、输出维度 n 的 Linear 作用在 m 个 token 上，前向需要 2 m k n 次浮点运算，反向是它的
# 两倍（对输入的梯度和对权重的梯度）。对每个 token 经过的 N_mat 个权重求和，每步 D = B T 个 token，
# 再加上每层注意力的两个 (T x T) 矩阵乘法：
#
#     C_step = 6 N_mat D + 12 B h T^2 d_k L
#
# 用 AdamW 做 float32 训练的内存：4 |theta| 权重 + 4 |theta| 梯度 + 8 |theta| AdamW 状态（m 和 v）
# + autograd 为反向传播保存的激活值。`estimate(config, B, T)` 把这些都算出来；torch 的 profiler
# 统计实际执行的 FLOPs。

# %%
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, block_size=64)
model = GPT(config)
B, T = 2, 64
ids = torch.randint(0, config.vocab_size, (B, T))
cost = estimate(config, B, T)
print(cost.table())
print("parameters the model has:", sum(p.numel() for p in model.parameters()))
counted = profiled_flops(lambda: model(ids, labels=ids).loss.backward())
print(f"FLOPs the profiler counts: {counted:,} (predicted {cost.flops:,})")
model.zero_grad(set_to_none=True)

# %% [markdown]
# **先预测，再运行：这次训练需要多少内存？** 同一个模型用 AdamW，在 B = 2、T = 64 上训练一步。
# 把上表中的权重、AdamW 状态和激活值（再加上反向传播开始时的第一批梯度）加起来，然后实测：
# profiler 会累计这一步里的每一次内存分配。

# %%
optimizer = torch.optim.AdamW(model.parameters())


def train_step():
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


train_step()  # AdamW creates its state on the first step
measured = cost.weights + cost.adamw_state + peak_allocated_bytes(train_step)
print(f"predicted peak {cost.peak / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB")

# %% [markdown]
# 对于真正要训练的模型，`python -m bench.compute costs FOLDER --batch_size 8 --seq_len 1024` 会从
# config.json 打印同样的表：GPT-2 small（1.24 亿参数）在 B = 8、T = 1024 时每步约 7 TFLOP，激活值约
# 12 GiB，而权重、梯度和 AdamW 状态加起来只有 1.9 GiB。随批大小和上下文长度增长的正是激活值。
#
# ## 2. 激活检查点：用重算代替存储
#
# `model.gradient_checkpointing_enable()`（每个训练工具的 `--gradient_checkpointing` 参数）在前向传播
# 中只保存每个块的输入；反向传播时再把这个块算一遍，得到其余的值。多一次前向传播（大约一步的三分之一），
# 换来不再随层数增长的激活内存。每个块开始时的随机数状态被保存并重放，所以 dropout 抽到相同的掩码，
# 梯度逐位相等。

# %%
config = GPTConfig(n_layer=4 if QUICK else 8, n_head=4, n_embd=64, vocab_size=256, block_size=128, dropout=0.1)
ids = torch.randint(0, 256, (2, 128))
kept = {}
for enabled in (False, True):
    _setup.seed(1)
    model = GPT(config)
    if enabled:
        model.gradient_checkpointing_enable()
    torch.manual_seed(2)
    peak = peak_allocated_bytes(lambda: model(ids, labels=ids).loss.backward())
    kept[enabled] = (peak, model.transformer.h[0].attn.query.weight.grad.clone())
    print(f"checkpointing {str(enabled):5s}: peak of forward + backward {peak / 2**20:.1f} MiB")
print("same gradients, dropout included:", torch.equal(kept[False][1], kept[True][1]))

# %% [markdown]
# ## 3. 当模型超出一个进程：FSDP
#
# 数据并行训练（DDP，`torchrun --nproc_per_node=W`）用 W 个进程处理批次的 W 个切片，每个进程都保存
# 完整的权重、梯度和 AdamW 状态：每个进程 16 |theta| 字节。`--fsdp` 用 torch.distributed 的
# `fully_shard`（common/train/fsdp.py）把它们分片：每个进程只保存每个张量的 1/W，在运行某个块之前
# 才把这个块的完整权重收集过来。更新与 DDP 相同（tests/test_fsdp.py：两个进程时相差不超过 1e-5，每个进程
# 只持有一半）。

# %%
gpt2_small = estimate(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257), 8, 1024)
state = gpt2_small.weights + gpt2_small.gradients + gpt2_small.adamw_state
for W in (1, 2, 4, 8):
    print(f"{W} processes: DDP {state / 2**30:.2f} GiB each, FSDP {state / W / 2**30:.2f} GiB each "
          f"(+ activations {gpt2_small.activation_bytes / 2**30:.1f} GiB either way)")

# %% [markdown]
# ## 4. 在线 softmax
#
# softmax(s)_j = exp(s_j - m) / sum_k exp(s_k - m) 在得到第一个权重之前就需要整行的最大值 m 和对所有
# 键的求和，所以教科书式的注意力要写出整个 (T_q x T_k) 分数矩阵 S、再写出权重 P，并为反向传播保存 P：
# 每个头 O(T^2) 的内存。在线 softmax（Milakov & Gimelshein 2018）按块读取键，对每一行查询保存
#
#     m   = 到目前为止见过的最大分数
#     l   = sum exp(s - m)        对目前见过的分数求和
#     acc = sum exp(s - m) v      对目前见过的分数求和
#
# 当新块带来更大的最大值 m' 时，之前按 m 求和的部分乘以 exp(m - m') 重新缩放：
# l' = exp(m - m') l + rowsum(exp(S_b - m'))，acc' = exp(m - m') acc + exp(S_b - m') V_b。
# 最后一块之后，acc / l 恰好等于 softmax(S) V。FlashAttention（Dao et al. 2022）在查询和键的分块上运行
# 这一过程，每行只保存 m 和 l，并在反向传播中重算每个分块的权重。这个更新就是 `online_softmax_update`：

# %%
scores = torch.tensor([[0.0, 1.0, 5.0, 2.0, -1.0, 3.0]])
values = torch.arange(6.0)[:, None]
m, l, acc = torch.full((1, 1), -math.inf), torch.zeros(1, 1), torch.zeros(1, 1)
for start in range(0, 6, 2):  # three blocks of two keys
    m, l, acc = online_softmax_update(m, l, acc, scores[:, start:start + 2], values[start:start + 2])
    print(f"after keys {start}..{start + 1}: m = {m.item():.0f}, l = {l.item():.4f}, acc / l = {(acc / l).item():.4f}")
print("softmax(s) v in one go:", (torch.softmax(scores, -1) @ values).item())

# %% [markdown]
# **先预测，再运行。** 教科书式的路径为反向传播保存 P（每个头 T x T 个浮点数）；分块的路径只保存
# Q、K、V、O 和每行两个数。在 T = 1024、4 个宽度为 64 的头时，分块路径的一次前向 + 反向传播分配的
# 内存少多少倍？（分块大小为 128 x 128；两种路径都要分配梯度 dQ、dK、dV。）

# %%
T = 256 if QUICK else 1024
q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
mask = causal_mask(T)


def step(attend):
    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out, _ = attend(*leaves, mask)
        out.sum().backward()
    return run


textbook_mib = peak_allocated_bytes(step(scaled_dot_product_attention)) / 2**20
flash_mib = peak_allocated_bytes(step(flash_attention)) / 2**20
print(f"T = {T}: textbook {textbook_mib:.1f} MiB, tiled {flash_mib:.1f} MiB "
      f"({textbook_mib / flash_mib:.1f}x less)")
out_textbook, _ = scaled_dot_product_attention(q, k, v, mask)
out_flash, _ = flash_attention(q, k, v, mask)
print("max |textbook - tiled| =", (out_textbook - out_flash).abs().max().item())
assert (out_textbook - out_flash).abs().max() < 1e-5

# %% [markdown]
# 这个倍数随 T 增长：教科书式路径是 O(T^2)，分块路径是 O(T d)。docs/results/compute.md 给出了
# T = 512、1024、2048 的结果（2048 时少 17 倍）以及时间：在 CPU 上用纯 PyTorch 写的分块路径是一个遍历
# 分块的 Python 循环，速度与教科书式路径相当；在 GPU 上，同样的思想就是快速的内核，因为 S 从不进入
# GPU 的慢速显存。在 GPT 或 BERT 的配置中设置 `attn_impl="flash"` 即可选用它。
#
# ## 5. Muon：让更新在每个方向上一样大
#
# AdamW 逐个元素地用该权重自己的梯度大小（滑动平均）去除它的步长。而一个权重*矩阵*的结构比它的
# 元素更多：它的动量 M = U S V^T（奇异值分解）通常由少数几个奇异方向主导，所以沿 M 走一步，权重
# 主要只在这几个方向上移动。Muon（`--optim muon`，`common/train/muon.py`；Jordan 等人 2024，
# 做法同 modded-nanogpt）对每个隐藏层矩阵的梯度维护一个 Nesterov 动量 M_t，然后改为沿它的正交部分
# U V^T 更新：所有奇异值都变成 1 左右，于是少见的方向和常见的方向移动得一样远。每一步都做一次奇异值
# 分解太慢；从 X_0 = M / ||M||_F 出发做五步 Newton-Schulz 迭代就足够接近：
#
#     X_{k+1} = a X_k + (b A + c A^2) X_k,   A = X_k X_k^T,   (a, b, c) = (3.4445, -4.7750, 2.0315)
#
# 每一步把 X 的每个奇异值 sigma 映射为 p(sigma) = a sigma + b sigma^3 + c sigma^5，奇异向量不变。
# 词嵌入、输出层、偏置和归一化的增益仍然用 AdamW。
#
# 下面看一个真实的动量矩阵：一个小 GPT 读入几批示例故事；对它第一个 MLP 的输出权重（`c_proj`），我们按 Muon 的
# 做法累积梯度 G_t 的动量 B_t = mu B_{t-1} + (1 - mu) G_t（mu = 0.95），取 Nesterov 式的前瞻
# M_t = mu B_t + (1 - mu) G_t，再把它正交化。

# %%
import numpy as np

from common.text.char import CharTokenizer
from common.train.muon import NS_COEFFICIENTS, create_muon, newton_schulz
from demo import corpus as demo_data

stories = demo_data.generate_corpus(num_documents=200 if QUICK else 2000, seed=0)
story_text = "\n\n".join("\n".join(story) for story in stories)
chars = CharTokenizer.from_text(story_text)
story_ids = torch.tensor(chars.encode(story_text, add_special_tokens=False))
train_ids, heldout_ids = story_ids[: int(0.9 * len(story_ids))], story_ids[int(0.9 * len(story_ids)):]


def windows(ids, B, T, generator):
    """(B, T) random windows; with labels = the window itself, the loss predicts x_2 .. x_T."""
    starts = torch.randint(0, len(ids) - T, (B,), generator=generator)
    return torch.stack([ids[s:s + T] for s in starts])


def heldout_loss(model, T, count=64):
    starts = torch.linspace(0, len(heldout_ids) - T - 1, count).long()
    x = torch.stack([heldout_ids[s:s + T] for s in starts])
    with torch.no_grad():
        return model(x, labels=x).loss.item()


def train(model, optimizer, steps, B=8, T=32, seed=0):
    """`steps` optimizer steps on random windows; returns the held-out L_LM."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = windows(train_ids, B, T, generator)
        model(x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return heldout_loss(model, T)


_setup.seed(0)
small = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=len(chars), dropout=0.0)
model = GPT(small)
weight = model.transformer.h[0].mlp.c_proj.weight
generator = torch.Generator().manual_seed(0)
buffer = torch.zeros_like(weight)
for _ in range(10):
    x = windows(train_ids, 8, 32, generator)
    model(x, labels=x).loss.backward()
    buffer = 0.95 * buffer + 0.05 * weight.grad
    momentum = 0.95 * buffer + 0.05 * weight.grad
    model.zero_grad(set_to_none=True)
before = torch.linalg.svdvals(momentum)  # 64 values, largest first
after = torch.linalg.svdvals(newton_schulz(momentum))
print(f"M_t {tuple(momentum.shape)}, singular values number 1, 16, 32, 48, 63, 64:")
print("  M_t         ", " ".join(f"{v:9.2e}" for v in before[[0, 15, 31, 47, 62, 63]]))
print("  NS_5(M_t)   ", " ".join(f"{v:9.3f}" for v in after[[0, 15, 31, 47, 62, 63]]))

# %% [markdown]
# M_t 的奇异值相差好几个数量级，正交化之后大多落在 1 附近的一个区间里。最小的几个非零奇异值可能
# 停在较低处：五步迭代最多把一个很小的值放大约 3.4^5 ≈ 470 倍，所以比最强方向弱上千倍的方向只走了
# 一部分路（Muon 接受这一点：这些方向几乎不携带梯度）。
# 第 64 个在前后都是零，而且理应如此：这个矩阵（`c_proj`，形状为 (out, in)）把结果写进残差流，而残差流的每一个读者都是
# LayerNorm，它对所有特征同时平移一个常数毫无反应；所以残差流上的梯度在特征维上求和为零，从不指向
# (1, ..., 1)。p(0) = 0：Muon 把梯度已有的方向拉平，不会凭空造出梯度里没有的方向。

# %% [markdown]
# **先预测，再运行。** 经过 X_0 = M / ||M||_F 之后，每个奇异值都不超过 1。一个 0.01 的奇异值经过 p
# 一步之后变成多少？五步之后呢？0.5 呢？（p'(0) = a = 3.4445：小的值每步大约放大 3.4 倍，直到高次项
# 把它拉进 1 附近的区间。这组系数换来的是速度而不是精确：这个区间大约是 0.7 到 1.2，而不是恰好为 1。）

# %%
a, b, c = NS_COEFFICIENTS
s = torch.tensor([0.01, 0.1, 0.5, 1.0], dtype=torch.float64)
for k in range(1, 6):
    s = a * s + b * s**3 + c * s**5
    print(f"after step {k}: {s.numpy().round(3)}")

# %% [markdown]
# 同一个小 GPT、同样的批次、同样的步数：要么全部参数用 AdamW（学习率 3e-3），要么隐藏层矩阵用 Muon
# （0.02，即 `--muon_learning_rate` 的默认值）、其余参数用 AdamW（3e-3）。在 tiny shakespeare 上，用
# `minigpt.train` 的模型（4 层，宽 128），Muon 让默认配方在 nanoGPT 的训练时间内把验证损失降到
# nanoGPT 的 0.84（docs/results/minigpt.md 第 5 节）；Muon 的一步更贵（多了 Newton-Schulz 的矩阵乘），
# 所以那里公平的比较是等时间。这里比较的是等步数：

# %%
steps = 30 if QUICK else 600
for name in ("AdamW", "Muon"):
    _setup.seed(1)
    model = GPT(small)
    if name == "AdamW":
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    else:
        optimizer = create_muon(model, learning_rate=3e-3, muon_learning_rate=0.02)
    print(f"{name:5s}: held-out L_LM after {steps} steps {train(model, optimizer, steps):.3f}")

# %% [markdown]
# ## 6. 给定算力，模型该多大？IsoFLOP 曲线
#
# 一次 S 步的训练花费 C = S C_step 次浮点运算，读入 D = S B T 个词元，所以对 N 个参数的模型有
# C ≈ 6 N D（不计注意力项）。同一份预算 C，可以买一个大模型配少量词元，也可以买一个小模型配大量词元。
# Hoffmann 等人（2022，“Chinchilla”，方法二）在几个预算下各训练若干种大小的模型，把最终损失对 log N
# 作图：每个预算一个山谷，称为 IsoFLOP（等算力）曲线。小模型见到的词元多，却装不下它们教的东西；
# 大模型则在训练不足时就停下了。对每个山谷拟合一条抛物线，顶点就是 N_opt(C)（以及 D_opt(C) =
# C / (6 N_opt)）；再跨预算拟合 N_opt ∝ C^a 和 D_opt ∝ C^b。他们测得 a ≈ b ≈ 0.5：模型和数据要一起
# 增长，大约每个参数 20 个词元。由于 C ≈ 6 N D，a + b ≈ 1；这项研究真正测量的是更大的预算该怎样分配。
#
# 下面是缩小版的 IsoFLOP 曲线：在每个预算下，每种宽度都训练预算所能买到的步数，再对
# (log10 N, 留出集上的损失) 拟合抛物线找山谷。快速运行只有一个很小的预算和三种宽度：足以把代码跑通，
# 却不足以相信算出的顶点（三个点总能被一条抛物线恰好穿过）。完整运行有三个预算，首尾相差十倍，
# 每个预算四种宽度。

# %%
B, T = 8, 32
budgets = (3e8,) if QUICK else (2e9, 6e9, 2e10)
widths = (8, 16, 32) if QUICK else (8, 16, 32, 64)
valleys = []
for budget in budgets:
    curve = []
    for width in widths:
        _setup.seed(0)
        config = GPTConfig(n_layer=1, n_head=max(1, width // 16), n_embd=width, block_size=T,
                           vocab_size=len(chars), dropout=0.0)
        model = GPT(config)
        steps = int(budget // estimate(config, B, T).flops)  # C = S C_step
        loss = train(model, torch.optim.AdamW(model.parameters(), lr=3e-3), steps, B, T)
        n_params = model.num_parameters() - model.transformer.wpe.weight.numel()
        curve.append((n_params, loss))
        print(f"C = {budget:.0e}  width {width:3d}: N = {n_params:6,d}, {steps:5d} steps, "
              f"D = {steps * B * T:9,d} tokens, held-out L_LM {loss:.3f}")
    log_n = np.log10([n for n, _ in curve])
    p2, p1, _ = np.polyfit(log_n, [loss for _, loss in curve], 2)
    vertex = -p1 / (2 * p2)
    if p2 > 0 and log_n.min() < vertex < log_n.max():
        valleys.append((budget, 10 ** vertex))
        print(f"  the parabola's vertex: N_opt ~ {10 ** vertex:,.0f} parameters")
    else:
        print("  no valley among these widths: the optimum lies outside them")
if len(valleys) >= 2:
    c_log, n_log = np.log10([c for c, _ in valleys]), np.log10([n for _, n in valleys])
    print(f"N_opt ~ C^{np.polyfit(c_log, n_log, 1)[0]:.2f} over {len(valleys)} budgets")

# %% [markdown]
# **先预测，再运行。** Chinchilla 拟合出的损失是 L(N, D) = E + A / N^alpha + B_D / D^beta，其中
# (E, A, B_D, alpha, beta) = (1.69, 406.4, 410.7, 0.34, 0.28)。在 C = 6 N D 的约束下求它的最小值，得到
# N_opt ~ C^(beta / (alpha + beta))，D_opt ~ C^(alpha / (alpha + beta))。下面用同样的“抛物线加直线”
# 拟合，从这个曲面上三个预算的虚构结果里能得到什么指数？如果 alpha = beta 呢？

# %%
E, A, B_D, alpha, beta = 1.69, 406.4, 410.7, 0.34, 0.28
budgets = np.array([1e18, 1e19, 1e20])
n_opt = []
def surface(n, C):
    return E + A / n**alpha + B_D / (C / (6 * n)) ** beta


for C in budgets:
    coarse = 10 ** np.linspace(5, 13, 81)  # a first sweep finds the valley,
    n = coarse[np.argmin(surface(coarse, C))] * 10 ** np.linspace(-0.5, 0.5, 7)  # then 7 sizes around it
    loss = surface(n, C)
    q2, q1, _ = np.polyfit(np.log10(n), loss, 2)
    n_opt.append(10 ** (-q1 / (2 * q2)))
a_fit = np.polyfit(np.log10(budgets), np.log10(n_opt), 1)[0]
b_fit = np.polyfit(np.log10(budgets), np.log10(budgets / (6 * np.array(n_opt))), 1)[0]
print(f"N_opt ~ C^{a_fit:.3f} (beta / (alpha + beta) = {beta / (alpha + beta):.3f}), "
      f"D_opt ~ C^{b_fit:.3f} (alpha / (alpha + beta) = {alpha / (alpha + beta):.3f})")

# %% [markdown]
# `python -m bench.scaling` 在 tiny shakespeare 上做了真正的研究（2 层 GPT，按字符）。从 1e10 到 3e11
# 次浮点运算的四个预算各有一个山谷，拟合得到 N_opt ~ C^0.63（标准误差 0.07）和 D_opt ~ C^0.48
# （0.06）：Chinchilla 的 0.5 在大约两个标准误差之内；只看其中两个预算，得到的指数从 0.37 到 0.80
# 都有；而且这些很小的模型要的是每个参数 140 到 320 个词元，而不是 20 个。表格、图以及为什么只能
# 粗略地看这些数，见 docs/results/compute.md。
#
# ## 轮到你了
#
# `make exercises` 会把 `online_softmax`（`common/nn/flash_attention.py:online_softmax_update`）
# 替换为桩：写出三行更新，dropout 的保留系数作用在对值的求和上，而不作用在 l 上。`make grade` 运行
# `tests/test_flash_attention.py`；测试把随机的分数行按随机的分块折叠，与 softmax(S) V 比较，并把整个
# 分块注意力与教科书式注意力比较。
