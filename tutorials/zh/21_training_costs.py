# %% [markdown]
# # 21 · 训练的代价
#
# 在一次训练开始之前，就可以算出（误差在几个百分点以内）它训练多少参数、每一步需要多少浮点运算、
# 需要多少内存。本教程先预测这些数字并与实测对比，然后介绍少花一些的办法：从不构造 T x T 矩阵的
# 注意力（FlashAttention 的在线 softmax）、激活检查点（用重算代替存储），以及把权重分片到多个进程（FSDP）。
#
# 代码：`common/train/accounting.py`、`common/train/measure.py`、各模型族的 `accounting.py`、
# `common/nn/checkpointing.py`、`common/nn/flash_attention.py`。测试：`tests/test_accounting.py`、
# `tests/test_checkpointing.py`、`tests/test_flash_attention.py`。
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
# <!-- i30b: the Muon and scaling-study sections go here (sections 5 and 6). -->
#
# ## 轮到你了
#
# `make exercises` 会把 `online_softmax`（`common/nn/flash_attention.py:online_softmax_update`）
# 替换为桩：写出三行更新，dropout 的保留系数作用在对值的求和上，而不作用在 l 上。`make grade` 运行
# `tests/test_flash_attention.py`；测试把随机的分数行按随机的分块折叠，与 softmax(S) V 比较，并把整个
# 分块注意力与教科书式注意力比较。
