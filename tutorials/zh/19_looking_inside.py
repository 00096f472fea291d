# %% [markdown]
# # 19 · 看进模型内部
#
# 训练好的模型是一堆能用的矩阵；可解释性要问的是它*怎样*做到的。本教程用四类工具打开本课程的模型，
# 每个工具都是 `interpret/` 中的一个函数，并有一个检验其恒等式的测试：
#
# | 工具 | 问题 | 恒等式（已测试） |
# |---|---|---|
# | 隐藏状态、注意力 | 每一层存着什么，每个头看向哪里？ | 与 transformers 逐层相等 |
# | 钩子：缓存与修补 | 让这个头沉默会怎样？ | 不加修补的运行就是模型的前向计算 |
# | 归纳得分 / 前一词元得分 | 哪个头复制“上次出现之后的那个词元”？ | 完美的头得分为 1 |
# | logit lens | 如果模型在第 l 层停下，它会说什么？ | 在最后一层它就是 logits |
# | 注意力 rollout | 词元 j 经过所有层流入位置 i 的有多少？ | 每行之和为 1 |
# | 线性探针 + 控制任务 | 能否从第 l 层读出词性，而不只是词本身？ | 选择性 = 准确率 - 控制任务准确率 |
#
# 代码：`interpret/hooks.py`、`interpret/induction.py`、`interpret/lens.py`、`interpret/rollout.py`、
# `interpret/probes.py`、`interpret/page.py`（`python -m interpret`：离线可用的注意力网页）。
# 测试：`tests/test_interpret_*.py`、`tests/test_insides_parity.py`。真实模型上的结果：
# `docs/results/interpret.md`。
#
# 运行：`python tutorials/zh/19_looking_inside.py`（在 2 核空闲 CPU 上约一分钟：一个 2 层模型训练 5,000 步，
# 较慢的机器上最多 200 秒）；
# `TUTORIAL_QUICK=1` 只需几秒（那时模型几乎学不到东西，但代码相同）。

# %%
import _setup

import math
import time
from pathlib import Path

import torch

from interpret import hooks, induction, lens, rollout
from interpret.page import attention_data, render_html
from minigpt import GPT, GPTConfig

_setup.seed(0)
torch.set_num_threads(1)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. 每一层的输出，用 transformers 的名字
#
# `output_hidden_states=True` 返回 L + 1 个 (B, T, d) 张量：嵌入 h_0、每个块之后的残差流，以及最后的
# LN_f(h_L)，也就是语言模型头读取的那个（transformers 的约定）。`output_attentions=True` 返回每层的
# softmax 权重 (B, H, T_q, T_k)。T5 返回 `encoder_hidden_states`、`decoder_hidden_states`、
# `encoder_attentions`、`decoder_attentions` 和 `cross_attentions`；BERT 返回 `hidden_states` 和 `attentions`。
#
# 我们的模型：一个 2 层的**纯注意力** GPT（`feed_forward="none"`：完全没有 MLP，Elhage et al. 2021），
# 只有注意力头在搬运信息，所以它们的电路可以读出来。

# %%
VOCAB, PERIOD = 26, 16
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=VOCAB, feed_forward="none",
                   position_embedding="rope")
model = GPT(config).eval()
ids = induction.repeated_tokens(8, PERIOD, VOCAB, seed=1)  # (8, 32): 16 random tokens, then the same 16
with torch.no_grad():
    out = model(ids, output_hidden_states=True, output_attentions=True)
print("hidden_states:", len(out.hidden_states), "x", tuple(out.hidden_states[0].shape))
print("attentions:   ", len(out.attentions), "x", tuple(out.attentions[0].shape), "(B, H, T_q, T_k)")
assert torch.equal(model.lm_head(out.hidden_states[-1]), out.logits)

# %% [markdown]
# ## 2. 钩子：每个具名激活，以及替换其中任意一个
#
# `run_with_cache` 用模型自己的模块走一遍模型，把每个中间值交给一个钩子；缓存保存全部中间值。
# `run_with_hooks(..., patches={name: f})` 把一个值替换为 `f(value)`：置零、换成均值，或取自另一次运行
# （激活修补）。

# %%
logits, cache = hooks.run_with_cache(model, ids)
print(hooks.describe_names(list(cache)))
print("pattern of layer 1:", tuple(cache["blocks.1.attn.pattern"].shape),
      " heads of layer 1:", tuple(cache["blocks.1.attn.heads"].shape))
assert (logits - out.logits).abs().max() < 1e-5  # the hooked run IS the forward

# %% [markdown]
# **先预测，再运行。** 这个模型还没训练：它的查询和键都很小，所以每个头几乎均匀地关注它能看到的位置，
# A[t, k] ≈ 1 / (t + 1)。一个头的归纳得分，是重复段中每个词元（t = 16..31）对“该词元第一次出现之后的
# 那个词元”（k = t - 15）的平均注意力。它大约是多少：0.5、0.25，还是低于 0.05？运行之前先用
# 1 / (t + 1) 算一算。

# %%
scores = induction.induction_score(out.attentions, PERIOD)
uniform = sum(1 / (t + 1) for t in range(PERIOD, 2 * PERIOD)) / PERIOD
print("induction scores of the untrained model:\n", scores.round(decimals=3))
print(f"uniform attention would give mean_t 1/(t+1) = {uniform:.3f}")
assert (scores - uniform).abs().max() < 0.02, "an untrained head scores what uniform attention scores"

# %% [markdown]
# ## 3. 培养一个归纳头
#
# 在后半段重复前半段的序列上训练，周期每个批次都不同（固定的周期可以被一个总是回看固定距离的头解决）。
# 只有重复段是可预测的；预测它的唯一办法，是找到当前词元上一次出现的位置并复制其后继：第 0 层的一个
# 前一词元头加上第 1 层的一个归纳头（Olsson et al. 2022）。这是教科书里的电路，而不是保证：在
# docs/results/interpret.md 的短时间训练中，一个模型在任何头得到高分之前就已经通过别的头复制得很好
# （重复段损失 1.44，对比 3.34），另一个模型则找到了基于位置的捷径。先测量，再命名。

# %%
def batch_of_repeats(step, batch=32):
    period = 8 + step % 17  # 8 .. 24
    return induction.repeated_tokens(batch, period, VOCAB, seed=step + 1000)

model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
steps = 30 if QUICK else 5000
budget = 10 if QUICK else 200  # seconds
start = time.perf_counter()
for step in range(steps):
    x = batch_of_repeats(step)
    loss = model(x, labels=x).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 200 == 0:
        print(f"step {step:5d}  loss {loss.item():.3f}")
    if time.perf_counter() - start > budget:
        break
model.eval()
print(f"trained {step + 1} steps in {time.perf_counter() - start:.0f} s")

# %%
test = induction.repeated_tokens(64, PERIOD, VOCAB, seed=7)
logits, cache = hooks.run_with_cache(model, test)
pattern = cache.stack("attn.pattern")  # (L, B, H, T, T)
ind, prev = induction.induction_score(pattern, PERIOD), induction.previous_token_score(pattern)
print("induction score (layer x head):\n", ind.round(decimals=3))
print("previous-token score (layer x head):\n", prev.round(decimals=3))
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
    for ax, grid, title in zip(axes, (ind, prev), ("induction score", "previous-token score")):
        im = ax.imshow(grid.numpy(), vmin=0, vmax=1, cmap="Blues")
        ax.set_title(title), ax.set_xlabel("head"), ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes)
    _setup.save_plot(fig, "19_induction_scores.png")

# %% [markdown]
# ## 4. 消融：让最好的归纳头沉默
#
# 把 `blocks.l.attn.heads[:, h]` 置零，恰好从残差流中去掉头 h 的那一项（attn_out = sum_h z_h W^O_h）。
# 如果复制是这个头做的，重复段上的损失一定会跳回接近随机前半段的损失（ln 26 = 3.26）。

# %%
layer, head = divmod(int(ind.argmax()), ind.size(1))
name = f"blocks.{layer}.attn.heads"
ablated, _ = hooks.run_with_hooks(model, test, patches={name: hooks.zero_head(head)}, cache=False)
first, repeat = induction.loss_per_half(logits, test, PERIOD)
_, repeat_ablated = induction.loss_per_half(ablated, test, PERIOD)
print(f"best head: layer {layer} head {head}, induction score {ind[layer, head]:.3f}")
print(f"loss on the first copy {first:.3f}; on the repeat {repeat:.3f}, with the head zeroed {repeat_ablated:.3f}")

# %% [markdown]
# ## 5. logit lens
#
# 用最终的归一化和语言模型头读取每一层的残差流：lens_l = LN_f(h_l) W_U。在最后一层它就是模型的输出
# （下面的恒等式）；之前的各层说明模型如果在那里停下“会回答什么”。

# %%
readings = lens.logit_lens(model, test)  # (L + 1, B, T, V)
assert (readings[-1] - logits).abs().max() < 1e-5
repeat_part = test[:, PERIOD - 1:]  # predictions of the repeat's tokens
accuracy = lens.lens_accuracy(readings[:, :, PERIOD - 1:], repeat_part)
for l, a in enumerate(accuracy.tolist()):
    print(f"{'embeddings' if l == 0 else f'after block {l - 1}'}: next-token accuracy on the repeat {a:.3f}")

# %% [markdown]
# ## 6. 注意力 rollout（Abnar and Zuidema 2020）
#
# 单独一层的注意力说明不了信息最终到了哪里：位置 i 在第 2 层之后的状态，混合的是已经混合过别的状态的
# 状态。rollout 把各层的注意力相乘，每层都与单位矩阵各占一半（代表残差连接）：
# R = Â_L ... Â_1，Â_l = 0.5 mean_h A_l + 0.5 I。R 的每一行之和为 1。

# %%
R = rollout.rollout(out.attentions if QUICK else tuple(cache.stack("attn.pattern")))
rows = R.sum(-1)
print("rollout", tuple(R.shape), "row sums in", (rows.min().item(), rows.max().item()))
assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
print("raw attention of the last query, layer 1 mean:", cache["blocks.1.attn.pattern"][0, :, -1].mean(0)[:6].round(decimals=3))
print("rollout of the last query:                   ", R[0, -1, :6].round(decimals=3))

# %% [markdown]
# ## 7. 线性探针及其控制任务
#
# 探针在冻结的某一层上训练一个线性分类器，读出某种性质（这里：词性）。Hewitt and Liang (2019)：
# 改为给每个词型一个随机标签再探一次；探针在那里答对的部分，靠的是记住词。选择性 = 准确率 - 控制
# 任务准确率。真实的 MiniLM 检查点和 CoNLL-2003（两者都在时）：`python -m interpret.figures probes`，
# 以及 docs/results/interpret.md 里的表。这里是一个在哪里都能跑的缩影：“标签”是特征的线性函数，
# 控制任务是随机标签。

# %%
from interpret import probes  # noqa: E402

g = torch.Generator().manual_seed(0)
words = [f"w{i % 40}" for i in range(800)]
embedding = {w: torch.randn(16, generator=g) for w in set(words)}
x = torch.stack([embedding[w] + 0.3 * torch.randn(16, generator=g) for w in words])
tags = ["N" if v[0] > 0 else "V" for v in x]
rows = probes.probe_layers(x[None, :600], x[None, 600:], tags[:600], tags[600:], words[:600], words[600:])
real, control, selectivity = rows[0]
print(f"probe accuracy {real:.3f}, control task {control:.3f}, selectivity {selectivity:.3f}")

# %% [markdown]
# ## 8. 注意力网页
#
# `python -m interpret --model_name_or_path DIR --text TEXT --output page.html` 写出**一个** html 文件，
# 包含每一层 x 每个头；把鼠标悬停在某个词元上，就能看到它看向哪里。网页不从网络加载任何东西，所以在
# 哪里都能打开。数据放在 `<script type="application/json" id="attention-data">` 里，供其他工具读取。
# 下面是我们的模型在一个重复序列上的网页：

# %%
class Letters:  # our model's token ids are letters
    def convert_ids_to_tokens(self, ids):
        return [chr(ord("a") + i) for i in ids]

    def encode(self, text, add_special_tokens=False):
        return [ord(c) - ord("a") for c in text]

data = attention_data("gpt", model, Letters(), "abcdefghabcdefgh")
_setup.OUT.mkdir(parents=True, exist_ok=True)
page = Path(_setup.OUT) / "19_attention.html"
page.write_text(render_html(data, "the induction model"), encoding="utf-8")
print(f"wrote {page} ({page.stat().st_size / 1024:.0f} KB)")

# %% [markdown]
# ## 轮到你了：练习 `induction_score`
#
#     python -m tutorials.exercises make --out ../student --only induction_score
#     cd ../student && python -m tutorials.exercises grade --only induction_score
#
#
# `make exercises` 会把 `induction_score`（`interpret/induction.py`）挖空；`make grade` 运行
# tests/test_interpret_experiments.py 中它的测试。哪些错误版本会被测试抓到？关注同一词元更早的那次
# 出现（k = t - n：一个*重复词元*头）在完美的归纳头上得 0 分；忘记 `start` 偏移也一样；在头上而不是
# 在批次上取平均，会得到错误的形状。
#
# 进一步：用一次在*打乱的*词元上的运行，修补前一词元头的 `blocks.0.attn.heads`（`hooks.patch_head`），
# 看归纳头的得分如何下降：这就是 K-组合，被测量出来了。
