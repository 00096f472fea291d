# %% [markdown]
# # 17 · 从 GPT-2 到 Llama
#
# 如今训练的解码器（Llama、Mistral、Qwen 等）就是把 GPT-2（教程 08）换掉了四个部件，每个部件只是几行
# 数学。在 minigpt 里，每个部件都是 `GPTConfig` 上的一个开关：
#
# | 开关 | GPT-2 | Llama | 公式 |
# |---|---|---|---|
# | `position_embedding` | `learned`：h_0 = W_te[x] + W_pe[p] | `rope` | q、k 按 p omega_i 旋转，omega_i = base^(-2i/d_k) |
# | `normalization` | `layernorm` | `rmsnorm` | x / sqrt(mean(x^2) + eps) * weight |
# | `feed_forward` | `gelu`：GELU(x W_1) W_2 | `swiglu` | (silu(x W_1) * (x W_3)) W_2 |
# | `n_kv_head` | = n_head | < n_head | 每 n_head / n_kv_head 个查询头共享一个键/值头 |
#
# 另外没有偏置（`bias=False`），而且大多数 Llama 检查点有自己单独的语言模型头
# （`tie_word_embeddings=False`）。`minigpt.config.LLAMA_SHAPE` 包含这四个开关和 `bias=False`。
#
# 代码：`common/nn/rope.py`、`common/nn/norms.py:RMSNorm`、`common/nn/blocks.py:SwiGLU`、
# `common/nn/attention.py:repeat_kv`、`minigpt/config.py`。测试：`tests/test_llama.py`（与 transformers
# 的 `LlamaForCausalLM` 相等，以及下面检查的各项性质）。
#
# 运行：`python tutorials/zh/17_llama.py`（约 6 分钟：六次各 60 秒的训练）；`TUTORIAL_QUICK=1` 只需几秒。

# %%
import _setup

import time
from pathlib import Path

import torch

from common.nn.attention import repeat_kv
from common.nn.blocks import SwiGLU, silu
from common.nn.norms import RMSNorm
from common.nn.rope import apply_rope, rope_cos_sin
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.config import LLAMA_SHAPE, swiglu_width

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. RoPE：把位置表示为旋转
#
# GPT-2 给每个输入加上一个可学习的向量 W_pe[p]：模型必须在每个位置上分别学会“往前 3 个词元”是什么意思，
# 而且超过 block_size 的位置没有对应的向量。RoPE（Su et al. 2021）则把每个头的查询和键看作 d_k/2 个
# 平面，在第 i 个平面上旋转角度 p omega_i，omega_i = base^(-2i/d_k)，i = 0 .. d_k/2 - 1（原文写作 theta_i；
# 本课程中 theta 表示参数）。先旋转 p omega、再做旋转 s omega 的逆，等于旋转 (p - s) omega，
# 所以分数 q . k 只看得到距离 p - s。旋转保持长度不变，所以没有向量会随位置增大。我们使用 Hugging Face
# 的 "rotate-half" 顺序（第 i 个平面 = 第 i 维和第 i + d_k/2 维）；Meta 的原始代码把 (2i, 2i + 1) 配成一对，
# 在对 W^Q、W^K 做置换之后是同一个函数。
#
# **先预测，再运行。** 同样的 q 和 k，分别放在位置 (3, 1)、(10, 8) 和 (107, 105)：三个分数 q . k 会不同吗？
# 把 q 按位置 50 旋转之后，它的范数呢？

# %%
d = 8
q, k = torch.randn(2, 1, 1, 1, d, dtype=torch.float64)


def rotated(x, position):
    cos, sin = rope_cos_sin(torch.tensor([[position]]), d, dtype=torch.float64)  # (1, 1, d)
    return apply_rope(x, cos, sin)


for p, s in [(3, 1), (10, 8), (107, 105)]:
    score = (rotated(q, p) * rotated(k, s)).sum().item()
    print(f"q at {p:3d}, k at {s:3d} (distance {p - s}): score {score:+.6f}")
print("norm before / after rotation:", q.norm().item(), rotated(q, 50).norm().item())
scores = [(rotated(q, p) * rotated(k, s)).sum().item() for p, s in [(3, 1), (10, 8), (107, 105)]]
assert max(scores) - min(scores) < 1e-5 and abs(q.norm() - rotated(q, 50).norm()) < 1e-5  # float32 angles

# %% [markdown]
# ## 2. RMSNorm：只保留重新缩放
#
# LayerNorm 做中心化（减去均值）、重新缩放和平移。Zhang & Sennrich（2019）发现起作用的是重新缩放：
# RMSNorm 除以均方根，再乘以一个权重，没有均值也没有偏置。运算更少，训练效果相同。

# %%
x = 3 * torch.randn(2, 16) + 1
rms = RMSNorm(16)(x)
print("root mean square after RMSNorm (weight = 1):", rms.pow(2).mean(-1).sqrt())
print("its mean is not 0 (no centring):", rms.mean(-1))

# %% [markdown]
# ## 3. SwiGLU：带门控的前馈网络
#
# Shazeer（2020）把 GELU(x W_1) W_2 换成两个投影的乘积，其中一个经过 silu(x) = x sigmoid(x)：
# (silu(x W_1) * (x W_3)) W_2（课程的行向量写法）。门控让一个隐藏单元按乘法去放大或压低另一个。矩阵从两个
# 变成三个，所以宽度取 8d/3（向上取整到 8 的倍数），参数量才与 GPT-2 中宽度为 4d 的前馈网络相同。

# %%
d = 48
ffn = SwiGLU(d, swiglu_width(d))
x = torch.randn(2, 5, d)
by_hand = ffn.down_proj(silu(ffn.gate_proj(x)) * ffn.up_proj(x))
print("SwiGLU by hand == module:", torch.allclose(by_hand, ffn(x)))
print(f"d = {d}: SwiGLU width {swiglu_width(d)}, parameters {3 * d * swiglu_width(d)} vs GELU FFN {8 * d * d}")

# %% [markdown]
# ## 4. 分组查询注意力：更小的 KV 缓存
#
# 生成一个词元要读取每一层的整个 KV 缓存；上下文很长时，内存流量的大头是它，而不是权重。Ainslie et al.
# （2023）的做法是只投影 n_kv_head 个键/值头，让每 n_head / n_kv_head 个查询头共享其中一个（n_kv_head = 1 就是
# 多查询注意力）。缓存因此缩小这么多倍；`repeat_kv` 把第 h // (n_head / n_kv_head) 个 kv 头交给查询头 h。

# %%
kv = torch.arange(2.0)[None, :, None, None].expand(1, 2, 1, 1)  # 2 kv heads holding 0 and 1
print("query heads 0..5 read kv heads:", repeat_kv(kv, 3)[0, :, 0, 0].tolist())
for n_kv in (6, 2, 1):
    model = GPT(GPTConfig(n_layer=4, n_head=6, n_embd=192, block_size=256, vocab_size=65, n_kv_head=n_kv))
    caches = model.new_kv_caches(1, 256)
    mib = sum(c.key.numel() + c.value.numel() for c in caches) * 4 / 2**20
    print(f"n_kv_head = {n_kv}: KV cache for 256 tokens {mib:.2f} MiB")

# %% [markdown]
# ## 5. 每个开关在 tiny shakespeare 上的效果
#
# 相同的数据、相同的方案，每个模型的墙钟时间预算相同：先是 GPT-2，然后一次换一个开关，最后是完整的
# Llama 形态。参数量相差不超过几个百分点（RoPE 去掉了 block_size x d 的位置表，`bias=False` 去掉了偏置，
# GQA 去掉了 W^K、W^V 的一部分），打印在每个损失旁边。机器是共享的，所以在预算内步数较少的模型会在
# `steps` 列中显示出来；完整比较的三种子中位数见 docs/results/minigpt.md。

# %%
DATA = _setup.ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
if DATA.is_file():
    text = DATA.read_text(encoding="utf-8")
else:  # a clone without the shared data folder: a small stand-in, so the tutorial still runs
    print(f"({DATA} not found: using a repeated verse instead)")
    text = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n" * 400
if QUICK:
    text = text[:60_000]
tokenizer = CharTokenizer.from_text(text)
ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False))
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]

BASE = dict(n_layer=2 if QUICK else 4, n_head=4, n_embd=64 if QUICK else 128, block_size=64,
            vocab_size=len(tokenizer))
VARIANTS = {
    "GPT-2": {},
    "+ RoPE": dict(position_embedding="rope"),
    "+ RMSNorm": dict(normalization="rmsnorm"),
    "+ SwiGLU": dict(feed_forward="swiglu"),
    "+ GQA (2 kv heads)": dict(n_kv_head=2),
    "Llama shape": dict(LLAMA_SHAPE),
}
BUDGET = 5.0 if QUICK else 60.0  # seconds of training per model
STEPS = 12 if QUICK else 10**9  # quick mode: at most a few steps each
BATCH, LR = 8 if QUICK else 32, 6e-3


def batch(data, generator):
    """BATCH random windows of block_size tokens; the loss shifts them by one itself."""
    starts = torch.randint(0, len(data) - BASE["block_size"], (BATCH,), generator=generator)
    return torch.stack([data[s:s + BASE["block_size"]] for s in starts.tolist()])  # (B, T)


@torch.no_grad()
def validation_loss(model, windows=BATCH if QUICK else 10 * BATCH):
    model.eval()
    generator = torch.Generator().manual_seed(1)
    losses = [model(w, labels=w).loss.item() for w in (batch(val_ids, generator) for _ in range(max(1, windows // BATCH)))]
    model.train()
    return sum(losses) / len(losses)


def train(overrides):
    _setup.seed(0)
    model = GPT(GPTConfig(**BASE, **overrides))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    curve, step, start = [], 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < BUDGET and step < STEPS:
        progress = max(elapsed / BUDGET, step / STEPS)
        for group in optimizer.param_groups:  # linear decay to 0 over the budget
            group["lr"] = LR * max(0.0, 1.0 - progress)
        window = batch(train_ids, generator)
        loss = model(window, labels=window).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if QUICK or step % 10 == 0:
            curve.append((time.perf_counter() - start, loss.item()))
    return model, curve, step


results = {}
for name, overrides in VARIANTS.items():
    model, curve, steps = train(overrides)
    results[name] = (validation_loss(model), model.num_parameters(), steps, curve)

print(f"{'model':<20} {'val loss':>8} {'params':>8} {'steps':>6}")
for name, (val, params, steps, _) in results.items():
    print(f"{name:<20} {val:8.3f} {params:8d} {steps:6d}")

plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (_, _, _, curve) in results.items():
        if curve:
            ax.plot(*zip(*curve), label=name)
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("training loss")
    ax.set_title(f"tiny shakespeare, {BUDGET:.0f} s each" + (" (quick mode)" if QUICK else ""))
    ax.legend()
    _setup.save_plot(fig, "17_llama_curves.png")

# %% [markdown]
# ## 6. 加载 Llama 检查点
#
# Hugging Face 的 `LlamaForCausalLM` 目录（含 `"model_type": "llama"` 的 config.json 和
# model.safetensors）可以用 `GPT.from_pretrained(folder)` 加载：配置被映射到 Llama 形态，
# `model.layers.N.self_attn.q_proj` 变成 `transformer.h.N.attn.query`，依此类推
# （`minigpt/model.py:llama_state_dict_to_minigpt`）。然后 `python -m minigpt.sample --model_name_or_path
# folder --prompt_ids 1 2 3 --greedy` 续写一个提示。tests/test_llama.py 在随机权重上把 logits、损失、梯度
# 和贪心生成的词元与 transformers 对照。下面对上面训练的 Llama 形态模型做一次保存再加载的往返。

# %%
folder = _setup.OUT / "17_llama"
model.save_pretrained(folder)
again = GPT.from_pretrained(folder)
prompt = torch.tensor([tokenizer.encode("ROMEO:" if DATA.is_file() else "Shall", add_special_tokens=False)])
print(repr(tokenizer.decode(again.generate(prompt, 80 if not QUICK else 20, do_sample=True, top_k=20, seed=0)[0].tolist())))

# %% [markdown]
# ## 轮到你了：练习 `rms_norm`、`swiglu` 和 `rope`
#
# `make exercises` 把 `rms_norm`（`common/nn/norms.py`）、`swiglu`（`common/nn/blocks.py`）和 `rope`
# （`common/nn/rope.py:apply_rope`）挖空；它们的测试在 tests/test_llama.py 里：
#
#     python -m tutorials.exercises make --out ../student --only rms_norm --only swiglu --only rope
#     cd ../student && python -m tutorials.exercises grade --only rms_norm --only swiglu --only rope
#
# 然后想一想：
# 哪些看似合理的错误版本仍能通过测试？（旋转 (2i, 2i + 1) 这样的配对保持范数和相对分数不变，但通不过与
# transformers 的对照测试；在 RMSNorm 中忘了转换到 float32，在 float32 下没有任何影响，在 bfloat16（16 位浮点格式，
# 指数位与 float32 一样是 8 位，尾数只有 7 位：范围相同，只有约 3 位有效数字）下影响很大。）

# %%
from tutorials.exercises import REGISTRY

for name in ("rms_norm", "swiglu", "rope"):
    print(REGISTRY[name].pytest_command())
