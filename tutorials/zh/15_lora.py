# %% [markdown]
# # 15 · LoRA：通过低秩更新来微调
#
# 微调（教程 07）训练每一个权重。对一个有十亿个权重的模型，这意味着十亿个梯度、二十亿个 Adam 矩，以及每个
# 任务一份完整的模型副本。LoRA（Hu et al. 2021）冻结每一个预训练矩阵 `W`（out x in），只学习一个低秩的变化：
#
#     y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,      A: (r, in),  B: (out, r),  r << in, out
#
# `B A` 是一个秩至多为 r 的 (out x in) 矩阵，只由 r (in + out) 个数构成，而不是 in x out 个。PyTorch 和
# peft（Hugging Face 的参数高效微调库，LoRA 是其中一种方法）都按 (out, in) 存放权重，所以上式带着转置；
# 按课程的行向量约定（docs/notation.md）写，就是 y = x W + b + (alpha / r) x A B。
#
# `alpha / r` 对更新做缩放。Hu 等人这样选，是为了换几个秩也能沿用同一个学习率；但它并不能让更新的大小与 r
# 无关：Kalajdzievski（2023）指出，在 alpha / r 下 r 越大更新越小，而 alpha / sqrt(r)（rsLoRA，peft 的
# `use_rslora`）能让它保持稳定。本课程与 peft 的默认做法一样，用 alpha / r。
#
# 代码：`common/nn/lora.py:LoRALinear`、`common/nn/lora.py:inject_lora`、`common/nn/lora.py:merge_and_unload`、
# `common/hub/adapters.py:save_adapter`（peft 的文件格式）。测试：`tests/test_lora.py`（在 BERT 和 GPT 上与
# peft 对照）、`tests/test_lora_cli.py`（`--lora_r` 参数）。
# `TUTORIAL_QUICK=1`：几秒钟。

# %%
import _setup

import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from common.hub.adapters import save_adapter
from common.nn.lora import LoraConfig, LoRALinear, inject_lora, merge_and_unload, trainable_parameters_line
from minigpt import GPT, GPTConfig

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## 第 0 步：B 从零开始，所以什么都不变
#
# A 像任何 Linear 权重一样抽取（kaiming-uniform：每个元素在 ±1/sqrt(in) 内均匀分布，这是 PyTorch 中
# `nn.Linear` 的默认初始化）；B 全为零。于是 `B A = 0`，加了适配器的层与冻结的层计算
# 的结果完全相同：微调从预训练模型开始，而不是从它的一个扰动副本开始。

# %%
base = nn.Linear(64, 48)
layer = LoRALinear(base, r=4, lora_alpha=8)
x = torch.randn(5, 64)
print("max |LoRA(x) - W x| at step 0:", (layer(x) - base(x)).abs().max().item())
print("A", tuple(layer.lora_A.weight.shape), "B", tuple(layer.lora_B.weight.shape),
      "scaling alpha / r =", layer.scaling)

# %% [markdown]
# **先预测，再运行。** 在第 0 步做一次反向传播，A 随机、B = 0：A 和 B 哪个得到梯度？如果 A 也是零呢？

# %%
grads = {}
for name, init_A in (("A random, B = 0", False), ("A = 0,    B = 0", True)):
    layer = LoRALinear(nn.Linear(64, 48), r=4, lora_alpha=8)
    if init_A:
        nn.init.zeros_(layer.lora_A.weight)
    layer(x).pow(2).sum().backward()
    grads[name] = (layer.lora_A.weight.grad.norm().item(), layer.lora_B.weight.grad.norm().item())
    print(f"{name}: |dL/dA| = {grads[name][0]:.3f}, |dL/dB| = {grads[name][1]:.3f}")
assert grads["A random, B = 0"][0] == 0 < grads["A random, B = 0"][1] and grads["A = 0,    B = 0"] == (0, 0)

# %% [markdown]
# 设 s = alpha / r，G = dL/dy，梯度为 `dL/dB = s G^T (x A^T)` 和 `dL/dA = s (G B)^T x`。A 随机时，B 立刻
# 得到梯度，A 没有（B = 0 把它乘没了）；一旦 B 不为零，A 也开始移动。如果 A = 0 且 B = 0，两个梯度都为零，
# 适配器永远不动：所以两者中必须有一个随机初始化。

# %% [markdown]
# ## 学习一个低秩的变化
#
# 假设任务需要 `W* = W + Delta`，其中 Delta 的秩为 2。完整微调要训练全部 64 x 48 = 3,072 个数；秩为 2 的
# 适配器只训练 2 (64 + 48) = 224 个数，仍能精确地表示 Delta。

# %%
_setup.seed(1)
W = nn.Linear(64, 48)
delta = 0.5 * torch.randn(48, 2) @ torch.randn(2, 64) / 8  # rank 2
target = lambda inputs: inputs @ (W.weight + delta).T + W.bias  # noqa: E731
W_before = W.weight.detach().clone()
layer = LoRALinear(W, r=2, lora_alpha=2)
optimizer = torch.optim.Adam([layer.lora_A.weight, layer.lora_B.weight], lr=1e-2)
steps = 150 if QUICK else 1500
for step in range(steps + 1):
    inputs = torch.randn(32, 64)
    loss = (layer(inputs) - target(inputs)).pow(2).mean()
    if step % (steps // 5) == 0:
        print(f"step {step:5d}  mse {loss.item():.6f}")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
error = (layer.delta_weight() - delta).norm() / delta.norm()
print(f"relative error of (alpha / r) B A against Delta: {error:.4f}; W moved: {not torch.equal(W.weight, W_before)}")

# %% [markdown]
# ## 合并：推理时没有额外开销
#
# 训练之后，`W' = W + (alpha / r) B A` 是一个形状不变的矩阵：合并后的层与原来的层代价完全相同，`unmerge`
# 会再把更新减掉。

# %%
with torch.no_grad():
    before = layer(x)
    layer.merge()
    after = layer(x)
    layer.unmerge()
print("max |merged - unmerged| =", (after - before).abs().max().item())

# %% [markdown]
# ## 一整个 GPT：训练什么，存储什么
#
# `inject_lora` 包装每一个名字匹配 `target_modules` 的 Linear（peft 的规则：模块路径以该名字结尾，或者一个
# 正则表达式匹配整个路径），并冻结其他一切。

# %%
config = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=500)
model = GPT(config)
print("full fine-tuning:", trainable_parameters_line(model))
lora = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
wrapped = inject_lora(model, lora)
print(f"LoRA r=8 on {len(wrapped)} layers:", trainable_parameters_line(model))
with tempfile.TemporaryDirectory() as folder:
    save_adapter(model, lora, folder)
    sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
print("the adapter on disk:", sizes, f"(the whole model: {4 * sum(p.numel() for p in model.parameters()):,} bytes)")
plain = merge_and_unload(model)
print("after merge_and_unload the keys are the base model's again:",
      "transformer.h.0.attn.query.weight" in plain.state_dict())

# %% [markdown]
# 在真实数据上：`python -m minibert.finetune ... --lora_r 8` 和 `python -m minigpt.train ... --lora_r 8` 训练
# 适配器而不是每个权重；docs/results/lora_sft.md 在 SST-2 上比较 LoRA 与完整微调（准确率、训练的参数、内存、
# 每步时间、磁盘上的大小）。
#
# ## 轮到你了：练习 `lora_linear`
#
# 在学生副本中（`make exercises`），`LoRALinear` 的 forward、`delta_weight`、`merge` 和 `unmerge`
# （`common/nn/lora.py`）会抛出 `NotImplementedError`。按开头的公式写出它们；测试在 BERT 和 GPT 上把输出和
# 梯度与 peft 对照：
#
#     python -m tutorials.exercises make --out ../student --only lora_linear
#     cd ../student && python -m tutorials.exercises grade --only lora_linear

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["lora_linear"].pytest_command())
print("hint:", REGISTRY["lora_linear"].hint)
