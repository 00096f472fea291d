# %% [markdown]
# # 20 · 更小的模型：蒸馏、int8 量化、注意力头剪枝
#
# 训练好的模型有三种变小的方法，每一种都比训练它便宜得多：
#
# - **蒸馏**（Hinton et al. 2015；DistilBERT，Sanh et al. 2019）：训练一个较小的*学生*，让它复现*教师*
#   经温度 T 软化后的整个输出分布：
#
#       L = alpha_ce * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + alpha_task * L_task
#
# - **int8 量化**：把权重的每一行存成 8 位整数加一个浮点缩放因子，
#   `s = max|w| / 127`，`q = round(w / s)`，运行时做整数乘法；
# - **注意力头剪枝**（Michel et al. 2019）：去掉损失几乎不依赖的注意力头。
#
# 代码：`common/nn/distillation.py`、`common/nn/quantization.py`、`common/nn/pruning.py` 和
# `MultiHeadAttention.prune_heads`（`common/nn/attention.py`）；命令行工具 `python -m minibert.distill`、
# `python -m minibert.quantize`、`python -m minigpt.quantize`。测试：`tests/test_distillation.py`、
# `tests/test_quantization.py`、`tests/test_pruning.py`、`tests/test_compression_cli.py`。在 SST-2 上用微调过的
# MiniLM 测得的数字：`docs/results/compression.md`。`TUTORIAL_QUICK=1`：几秒钟。

# %%
import _setup

import time

import torch
import torch.nn as nn

from common.nn.distillation import distillation_loss, every_other_layer
from common.nn.pruning import head_gates, head_importance, heads_to_prune
from common.nn.quantization import Int8Linear, dequantize, quantize_absmax, use_int8_kernel
from minibert import BertConfig, BertForSequenceClassification

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. 软目标与温度
#
# 一个说"正面 0.90、负面 0.10"的教师，比标签"正面"知道得更多：它有多确定，以及（类别多时）哪些错误类别
# 离得近。把 logits 除以 T > 1 会把概率摊开，让学生看到这些小数字：

# %%
z_teacher = torch.tensor([[4.0, 1.0, 0.5, -2.0]])
for T in (1.0, 2.0, 4.0):
    print(f"T = {T:.0f}: softmax(z_t / T) =", [round(p, 3) for p in torch.softmax(z_teacher / T, -1)[0].tolist()])
print("KL of the teacher to itself:", float(distillation_loss(z_teacher, z_teacher, 2.0)))

# %% [markdown]
# **先预测，再运行。** `KL(p_t || p_s)` 对学生 logits 的梯度是 `(p_s - p_t) / T`，而对于较软的 logits，
# `p_s - p_t` 本身约为 `(z_s - z_t) / (K T)`。没有 T^2 这个因子时，T = 8 的梯度比 T = 1 小多少倍：约 8 倍、
# 约 64 倍，还是差不多？有 T^2 时呢？先写下你的猜测；下面的表格给出答案。

# %%
g = torch.Generator().manual_seed(0)
z_t = torch.randn(32, 5, generator=g) * 0.2
z_s = z_t + torch.randn(32, 5, generator=g) * 0.2
print(f"{'T':>3} {'|grad| with T^2':>16} {'|grad| without':>15}")
sizes = {}
for T in (1.0, 2.0, 4.0, 8.0):
    z = z_s.clone().requires_grad_(True)
    distillation_loss(z, z_t, T).backward()
    with_t2 = z.grad.norm().item()
    sizes[T] = (with_t2, with_t2 / T**2)
    print(f"{T:>3.0f} {with_t2:>16.5f} {with_t2 / T**2:>15.6f}")
print(f"T = 1 vs T = 8 without T^2: {sizes[1.0][1] / sizes[8.0][1]:.0f}x smaller; "
      f"with T^2: {sizes[1.0][0] / sizes[8.0][0]:.2f}x")
assert sizes[1.0][1] / sizes[8.0][1] > 50 and abs(sizes[1.0][0] / sizes[8.0][0] - 1) < 0.1

# %% [markdown]
# 没有它时约小 64 = 8^2 倍，有它时几乎不变：T^2 让蒸馏项的权重 alpha_ce 在任何温度下含义相同。
# （`distillation_loss` 是本教程的练习；`tests/test_distillation.py` 正是对 T ∈ {1, 2, 4, 8} 检查这一点。）
#
# ## 2. 学生向教师学习
#
# 一个玩具例子：一个宽的教师网络已经学会了二维点上的十分类问题；一个小学生只见到 64 个带标签的点。
# 只用标签训练，它会过拟合这些点；在同样的点加上无标签的点上用教师的软目标训练，它就复制了教师的
# 分类边界。（DistilBERT 做的是同一件事：一个 6 层 BERT，从 BERT-base 每隔一层复制而来。）

# %%
def mlp(width):
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))


def true_label(x):  # ten angular sectors, the rule the teacher learned
    return ((torch.atan2(x[:, 1], x[:, 0]) + torch.pi) / (2 * torch.pi) * 10).long().clamp(max=9)


def train(model, x, loss_fn, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x)).backward()
        opt.step()
    return model


steps = 150 if QUICK else 600
x_all, x_test = torch.randn(4000, 2), torch.randn(2000, 2)
teacher = train(mlp(128), x_all, lambda out: nn.functional.cross_entropy(out, true_label(x_all)), steps)
x_few = x_all[:64]
x_free = torch.randn(1000, 2)  # no labels needed: the teacher labels them softly
with torch.no_grad():
    soft = teacher(x_free)
alone = train(mlp(16), x_few, lambda out: nn.functional.cross_entropy(out, true_label(x_few)), steps)
student = train(mlp(16), x_free, lambda out: distillation_loss(out, soft, temperature=2.0), steps)
accuracy = lambda m: (m(x_test).argmax(-1) == true_label(x_test)).float().mean().item()  # noqa: E731
with torch.no_grad():
    print(f"teacher {accuracy(teacher):.3f} | student on 64 labels {accuracy(alone):.3f} | "
          f"student distilled {accuracy(student):.3f}")
print("DistilBERT's initialisation, 6 teacher layers -> 3 student layers: teacher layers", every_other_layer(6, 3))

# %% [markdown]
# 在真实数据上：`python -m minibert.distill --task classification --teacher_name_or_path out/sst2
# --train_file sst2/train.tsv --validation_file sst2/dev.tsv --student_num_hidden_layers 3
# --temperature 2 --alpha_ce 0.5 --alpha_task 0.5 --output_dir out/student`。
#
# ## 3. int8：按输出通道的 absmax
#
# 权重矩阵的每一行（一个输出通道）有自己的缩放因子 `s = max|w| / 127`；整数是 [-127, 127] 中的
# `q = round(w / s)`，`s q` 与 `w` 的差不超过半个步长。

# %%
w = torch.randn(4, 8)
w[2, 0] = 12.0  # one large weight in row 2
q, s = quantize_absmax(w)
error = (w - dequantize(q, s)).abs()
print("scales per row:", [round(v, 4) for v in s.view(-1).tolist()])
print("largest error / scale per row:", [round(v, 3) for v in (error / s).max(1).values.tolist()], "(<= 0.5)")
q_tensor = torch.round(w / (w.abs().max() / 127)).clamp(-127, 127)
tensor_error = (w - q_tensor * (w.abs().max() / 127)).abs().mean()
print(f"mean error: per channel {error.mean():.4f}, one scale for the tensor {tensor_error:.4f}")

# %% [markdown]
# 一个大权重只降低它所在那一行的分辨率；如果整个张量只用一个缩放因子，它会降低所有行的分辨率。
# 激活在运行时按词元各取一个缩放因子（动态量化），于是一个 Linear 变成
#
#     y[t, o] = s_x[t] s_w[o] sum_j qx[t, j] qw[o, j] + b[o]
#
# 求和是在整数上进行的：torch 的 int8 矩阵乘法（`torch._int_mm`）能精确地算出它。`Int8Linear` 有两条路径：
# 教科书路径先反量化再用 float32 相乘，快速路径直接做整数乘法。数字相同；速度如何？

# %%
linear = nn.Linear(384, 1536)
int8 = Int8Linear.from_linear(linear)
x = torch.randn(256 if QUICK else 2048, 384)
textbook = int8(x)
use_int8_kernel(int8)
fast = int8(x)
with torch.no_grad():
    exact = linear(x)
print(f"int8 kernel vs textbook: max difference {(fast - textbook).abs().max():.2e}; vs float32: "
      f"{(fast - exact).abs().max():.4f} on outputs up to {exact.abs().max():.2f}")


def ms(fn, repeats=5 if QUICK else 20):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


with torch.no_grad():
    print(f"float32 {ms(lambda: linear(x)):.2f} ms, int8 {ms(lambda: int8(x)):.2f} ms (one run, a busy machine "
          "varies; docs/results/compression.md has medians)")
print(f"bytes: float32 {linear.weight.numel() * 4:,}, int8 + scales {int8.weight.numel() + int8.weight_scale.numel() * 4:,}")

# %% [markdown]
# `python -m minibert.quantize --model_name_or_path out/sst2 --output_dir out/sst2-int8` 写出一个文件夹：
# 它的 config.json 带有 `quantization_config`，model.safetensors 存着 int8 权重和它们的缩放因子；
# `BertForSequenceClassification.from_pretrained("out/sst2-int8")` 可以加载它。
#
# ## 4. 注意力头剪枝
#
# 在每个头的输出上放一个门 `xi_h`（= 1）；一个头的重要性是 `|dL / dxi_h|` 在数据上的平均。删掉一个头，
# 就是删掉它在 W^Q、W^K、W^V 中的行和在 W^O 中的列：模型算出的正是门为 0 时的结果，而权重更少。

# %%
config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config).eval()
batch = dict(input_ids=torch.randint(1, 60, (8, 10)), labels=torch.randint(0, 2, (8,)))
importance = head_importance(model, [batch])
print("importance per layer and head:\n", importance.numpy().round(2))
plan = heads_to_prune(model, importance, fraction=0.5)
gates = torch.ones(2, 4)
for layer, heads in plan.items():
    gates[layer, heads] = 0.0
with torch.no_grad(), head_gates(model, gates):
    masked = model(batch["input_ids"]).logits
before = model.num_parameters()
model.prune_heads(plan)
with torch.no_grad():
    pruned = model(batch["input_ids"]).logits
print(f"pruned {plan}: max |pruned - masked| = {(pruned - masked).abs().max():.1e}, "
      f"parameters {before:,} -> {model.num_parameters():,}")
assert (pruned - masked).abs().max() < 1e-6

# %% [markdown]
# ## 轮到你了：练习 `distillation_loss` 和 `quantize_absmax`
#
#     python -m tutorials.exercises make --out ../student --only distillation_loss --only quantize_absmax
#     cd ../student && python -m tutorials.exercises grade --only distillation_loss --only quantize_absmax
#
#
# `make exercises` 会把 `distillation_loss`（`common/nn/distillation.py`）和 `quantize_absmax`
# （`common/nn/quantization.py`）替换成桩；`make grade` 运行它们的测试。然后试试：用 `--alpha_cos 0.5`
# 蒸馏（同时对齐隐藏状态）并比较；只量化前馈层（`--modules_to_not_convert query,key,value`）并测量准确率；
# 每剪掉 10% 的头就重新估计一次重要性，而不是只估计一次。
