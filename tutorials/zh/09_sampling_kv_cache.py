# %% [markdown]
# # 09 · 选择下一个词元，以及 KV 缓存
#
# 训练好的 GPT（教程 08）在最后一个位置给出 logits `z`（词表中每一项一个）以及 `p = softmax(z)`。生成就是
# 把它们变成一个词元，追加上去，然后重复：
#
#     greedy        x_{t+1} = argmax_i z_i                      总是取最可能的：容易重复
#     sampling      x_{t+1} ~ softmax(filter(z / tau))          多样，由以下参数控制：
#       温度 tau：        tau < 1 时 softmax(z / tau) 更尖锐，tau > 1 时更平坦
#       top-k：           保留最大的 k 个 z_i，其余设为 -inf（概率为 0）
#       top-p（核采样）：  保留概率之和达到 p 的最小的最可能词元集合
#                         （Holtzman et al. 2020）：模型有把握时词元少，没把握时词元多
#
# 后半部分讲速度。第 `t` 步需要之前所有词元的键和值，而它们永远不变（教程 08 的因果性质）。没有缓存时，
# 每一步都要重新运行整个前缀；**KV 缓存**把键和值保存下来，于是一步只需送入最新的词元。注意力仍然要读取
# 全部 `t` 个缓存的键（每步 `O(t)` 的工作量）；省下的是重新计算前缀的 `K, V`，以及前缀各行通过每个权重
# 的计算（见“一步的代价”一节）。
#
# 最后一节：**投机解码**（speculative decoding），由一个小的草稿模型提出词元，GPT 一次检查好几个，输出不变。
#
# 代码：`common/nn/sampling.py`（`apply_temperature`、`top_k_filter`、`top_p_filter`、`next_token`）、
# `common/generation/`（唯一的生成循环 `loop.py`、`speculative.py`）、`minigpt/generate.py`（`generate`，
# GPT 的适配器）、`common/nn/attention.py:KVCache`。测试：`tests/test_generate.py`、`tests/test_generation.py`、
# `tests/test_attention.py`（`test_incremental_attention_with_kv_cache_*`）、`tests/test_blocks.py`
# （`test_decoder_block_with_kv_cache_*`）。
#
# 运行：`python tutorials/zh/09_sampling_kv_cache.py`；`TUTORIAL_QUICK=1` 只需几秒。

# %%
import _setup

import statistics
import time

import torch

from demo import corpus as demo_data
from common.text.char import CharTokenizer
from common.data.language_modeling import DataCollatorForLanguageModeling, GroupedTextDataset
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minigpt import GPT, GPTConfig
from common.nn.sampling import apply_temperature, next_token, top_k_filter, top_p_filter

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 一个玩具分布
#
# 八个候选的下一个词，以及模型在 "The soup was" 之后可能给它们的 logits：

# %%
words = ["good", "hot", "cold", "salty", "green", "loud", "purple", "asleep"]
z = torch.tensor([3.0, 2.5, 2.0, 1.5, 0.5, 0.0, -1.0, -2.0])
p = torch.softmax(z, dim=-1)
for word, zi, pi in zip(words, z.tolist(), p.tolist()):
    print(f"  {word:<7} z = {zi:+.1f}   p = {pi:.3f}")

# %% [markdown]
# ## 温度
#
# `softmax(z / tau)`：除以 `tau < 1` 会拉大 logits 之间的差距（排第一的词拿得更多），`tau > 1` 会缩小差距
# （趋向均匀），`tau -> 0` 就是贪心。熵 `-sum_i p_i ln p_i` 衡量分散程度：只有一个确定的词时为 `0`，
# 均匀时为 `ln 8 = 2.08`。

# %%
for tau in (0.5, 1.0, 2.0):
    q = torch.softmax(apply_temperature(z, tau), dim=-1)
    assert torch.allclose(q, torch.softmax(z / tau, dim=-1))
    entropy = float(-(q * q.log()).sum())
    print(f"tau = {tau}: p = {q}   p(good) = {float(q[0]):.3f}, entropy {entropy:.3f}")

# %% [markdown]
# ## top-k 与 top-p：保留的集合
#
# top-k 保留固定数量的词。top-p 按概率排序，只要排在前面的词合起来的概率还不到 `p` 就保留当前的词，所以
# 最可能的词总会被保留，集合随模型的把握程度变大或变小。两者都把被丢弃的 logits 设为 `-inf`；softmax
# 随后在保留的词上重新归一化。

# %%
def kept(filtered):
    return [w for w, value in zip(words, filtered.tolist()) if value != float("-inf")]


k = 3
print(f"top-k, k = {k}: keeps {kept(top_k_filter(z, k))}")
order = p.argsort(descending=True)
mass_before = torch.cumsum(p[order], 0) - p[order]  # sum of the probabilities before each word
for top_p in (0.5, 0.9):
    by_hand = [words[i] for i, before in zip(order.tolist(), mass_before.tolist()) if before < top_p]
    library = kept(top_p_filter(z, top_p))
    print(f"top-p, p = {top_p}: keeps {library} (mass {float(p[[words.index(w) for w in library]].sum()):.3f}); "
          f"by hand {by_hand}")
    assert by_hand == library
sharp = torch.tensor([6.0, 1.0, 0.5, 0.0, 0.0, -1.0, -1.0, -2.0])  # a confident model
print(f"top-p, p = 0.9, on a confident distribution p(good) = {float(torch.softmax(sharp, -1)[0]):.3f}: "
      f"keeps {kept(top_p_filter(sharp, 0.9))}")

# %% [markdown]
# `next_token` 按这个顺序应用它们（温度、top-k、top-p），然后抽样。抽样很多次后，频率与重新归一化的保留
# 概率一致，被丢弃的词从不出现：

# %%
generator = torch.Generator().manual_seed(0)
n = 2000 if QUICK else 20000
draws = next_token(z.expand(n, -1), do_sample=True, temperature=1.0, top_k=None, top_p=0.9, generator=generator)
counts = torch.bincount(draws, minlength=len(words)).float() / n
target = torch.softmax(top_p_filter(z, 0.9), dim=-1)
for word, c, t in zip(words, counts.tolist(), target.tolist()):
    print(f"  {word:<7} drawn {c:.3f}   expected {t:.3f}")
assert counts[target == 0].sum() == 0

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), sharey=True)
    for tau in (0.5, 1.0, 2.0):
        axes[0].plot(words, torch.softmax(z / tau, -1).tolist(), "o-", label=f"tau = {tau}")
    axes[0].set_title("temperature")
    axes[0].legend()
    for ax, title, filtered in ((axes[1], f"top-k, k = {k}", top_k_filter(z, k)),
                                (axes[2], "top-p, p = 0.9", top_p_filter(z, 0.9))):
        ax.bar(words, p.tolist(), color="lightgrey", label="p = softmax(z)")
        ax.bar(words, torch.softmax(filtered, -1).tolist(), width=0.4, label="after the filter")
        ax.set_title(title)
        ax.legend()
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_ylabel("probability")
    _setup.save_plot(fig, "09_sampling_filters.png")

# %% [markdown]
# ## 从 GPT 贪心解码与抽样
#
# 如果教程 08 的字符级 GPT 目录存在就用它；否则对同一个模型做一次简短的训练，这样本教程也能单独运行。

# %%
gpt_dir = _setup.OUT / "08_gpt"
if (gpt_dir / "model.safetensors").is_file():
    model = GPT.from_pretrained(gpt_dir)
    tokenizer = CharTokenizer.from_pretrained(gpt_dir)
    print(f"loaded tutorial 08's GPT from {gpt_dir}")
else:
    documents = demo_data.generate_corpus(num_documents=300 if QUICK else 3000, seed=0)
    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    tokenizer = CharTokenizer.from_text(text)
    (_setup.OUT / "09_data").mkdir(parents=True, exist_ok=True)
    (_setup.OUT / "09_data" / "train.txt").write_text(text, encoding="utf-8")
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=len(tokenizer), dropout=0.0))
    steps = 60 if QUICK else 800
    print(f"{gpt_dir} not found (run tutorials/08_gpt.py first to reuse it); training a GPT for {steps} steps")
    args = TrainingArguments(output_dir=str(_setup.OUT / "09_run"), overwrite_output_dir=True, save_strategy="no",
                             max_steps=steps, per_device_train_batch_size=32, learning_rate=3e-3,
                             warmup_steps=steps // 20, weight_decay=0.01, logging_steps=max(1, steps // 10), seed=0)
    Trainer(model, args, train_dataset=GroupedTextDataset(tokenizer, _setup.OUT / "09_data" / "train.txt", 64),
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()

prompt = torch.tensor([tokenizer.encode("One day, she went to the", add_special_tokens=False)])  # (1, T0)
new = model.config.block_size - prompt.size(1)
print("greedy          :", repr(tokenizer.decode(model.generate(prompt, new)[0].tolist())))
for tau, top_k, top_p in ((0.8, 10, None), (1.0, None, 0.9), (1.5, None, None)):
    for seed in (0, 1):
        ids = model.generate(prompt, new, do_sample=True, temperature=tau, top_k=top_k, top_p=top_p, seed=seed)
        print(f"tau {tau}, k {str(top_k):<4}, p {str(top_p):<4}, seed {seed}:", repr(tokenizer.decode(ids[0].tolist())))

# %% [markdown]
# 贪心对每个提示只给出一个固定的文本，而且容易循环。抽样对每个种子给出不同的文本；低温度加 top-k 会停留在
# 最可能的拼写附近，不加过滤的 `tau = 1.5` 会给不太可能的字符足够的概率，从而产生拼写错误。
#
# ## KV 缓存：同样的词元
#
# `generate(..., use_cache=True)` 只运行一次提示（"prefill"），把每一层的键和值存进预先分配的 `KVCache`
# （`common/nn/attention.py`），然后每步送入一个词元，追加它的 `K, V`。没有缓存时，每一步都要把整个序列
# 再运行一遍。无论是贪心解码还是相同种子的抽样，词元都必须完全相同：

# %%
for kwargs in ({}, {"do_sample": True, "temperature": 1.0, "top_k": 20, "seed": 3}):
    with_cache = model.generate(prompt, new, use_cache=True, **kwargs)
    without = model.generate(prompt, new, use_cache=False, **kwargs)
    print(f"{kwargs or 'greedy'}: identical tokens with and without the cache: {torch.equal(with_cache, without)}")
    assert torch.equal(with_cache, without)

# %% [markdown]
# ## KV 缓存：实测
#
# 一个更大的（随机）GPT 配上更长的上下文能显示出差别：每生成一个新词元，没有缓存时模型要处理 `t` 个词元的
# 整个前缀，有缓存时只处理一个词元，对照 `t` 个缓存的键。我们用两种方式给 `generate` 计时，每种几次，交替
# 进行（这样机器忙碌时两者被同等拖慢），然后比较中位数。数字取决于你的机器；比值随生成的词元数增大。
# `packed_step=False` 关掉打包的快速路径（`common/generation/packed.py`），于是测到的只是 KV 缓存本身：
# 每步对一个词元调用 `GPT.forward`；`return_dict_in_generate=True` 会告诉你实际走的是哪条路径。

# %%
torch.manual_seed(0)
big = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=len(tokenizer)))
n_new = 64 if QUICK else 224
repeats = 3 if QUICK else 5
start_ids = prompt[:, :8]
times = {True: [], False: []}
for _ in range(repeats):
    for use_cache in (True, False):
        begin = time.perf_counter()
        out = big.generate(start_ids, n_new, use_cache=use_cache, packed_step=False)
        times[use_cache].append(time.perf_counter() - begin)
tokens_per_second = {use_cache: n_new / statistics.median(t) for use_cache, t in times.items()}
print(f"{n_new} new tokens after an {start_ids.size(1)}-token prompt, median of {repeats}:")
print(f"  with the cache    {tokens_per_second[True]:8.0f} tokens/s")
print(f"  without the cache {tokens_per_second[False]:8.0f} tokens/s")
print(f"  ratio {tokens_per_second[True] / tokens_per_second[False]:.1f}x "
      "(measured on this machine now; other jobs running alongside change it)")
paths = {flags: big.generate(start_ids, 16, return_dict_in_generate=True, **dict(flags)).decode_path
         for flags in ((), (("packed_step", False),), (("use_cache", False),))}
print("which path ran:", {", ".join(f"{k}={v}" for k, v in flags) or "default": path for flags, path in paths.items()})
c = big.config
cache_bytes = 2 * c.n_layer * 1 * c.n_head * c.block_size * c.head_dim * 4
print(f"the cost: a cache of 2 (K, V) x {c.n_layer} layers x {c.n_head} heads x {c.block_size} positions x "
      f"{c.head_dim} dims x 4 bytes = {cache_bytes / 1024:.0f} KiB per sequence")

# %%
if plt is not None:
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(["with KV cache", "without"], [tokens_per_second[True], tokens_per_second[False]])
    ax.set_ylabel("tokens per second")
    ax.set_title(f"generate: {n_new} tokens, median of {repeats}")
    _setup.save_plot(fig, "09_kv_cache_speed.png")

# %% [markdown]
# ## 一步的代价
#
# 一次前向传播**每个词元、每个权重做一次乘加**：一次乘法和一次加法，2 FLOPs，所以每个词元大约
# `2 |theta|` FLOPs（`|theta|` 是矩阵乘法中的权重数；嵌入查找是读取，不是乘积）。此外，注意力要把新的查询与
# 之前的每个键比较：第 `t` 步 `O(t)` 的工作量，**有没有缓存都一样**。缓存省下的是前缀的其余部分：
#
#     没有缓存时，第 t 步重新运行全部 t 个词元：O(t) 行通过每个权重，注意力中 O(t^2)；
#                 T 个词元在权重上花费 O(T^2)，在注意力中花费 O(T^3)
#     有缓存时，  第 t 步运行 1 个词元：1 行通过每个权重，注意力中 O(t)；
#                 T 个词元在权重上花费 O(T)，在注意力中花费 O(T^2)
#
# **先预测，再运行。** 8 个词元的提示，生成 6 个新词元，贪心。使用缓存时，有多少个词元行通过第 0 层的键投影
# `W^K`？不用缓存呢？（第一个新词元来自提示自身的前向传播。）我们用一个前向钩子来计数：

# %%
rows = []
hook = model.transformer.h[0].attn.key.register_forward_hook(
    lambda module, inputs, output: rows.append(inputs[0].shape[1]))  # tokens in this call
counted = {}
P, n = 8, 6
for use_cache in (True, False):
    rows.clear()
    model.generate(prompt[:, :P], n, use_cache=use_cache)  # fewer than 8 steps: GPT.forward every step
    counted[use_cache] = sum(rows)
hook.remove()
print(f"rows through layer 0's W^K: with the cache {counted[True]} (= P + n - 1 = {P + n - 1}), "
      f"without {counted[False]} (= sum of P .. P + n - 1 = {sum(range(P, P + n))})")
assert counted[True] == P + n - 1 and counted[False] == sum(range(P, P + n))
flops = 2 * sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "wte" not in name and "wpe" not in name)
flops += 2 * model.transformer.wte.weight.numel()  # the tied output layer is a product too
print(f"this GPT: about {flops:,} FLOPs per token in its matrix products (2 per weight), plus attention")

# %% [markdown]
# 无论 `t` 是多少，每一步都要把权重读一遍；有缓存时一步就是每个矩阵一次行向量乘积，所以在 CPU 上它受限于
# 权重从内存流出的速度，而不是 FLOPs。`minigpt/decode_step.py` 如何把这个乘积分摊到各个核上（附实测的
# GB/s）属于基准测试工程，写在 `docs/results/bench.md`（"One decode step: the weights and the cores"）中。
#
# ## 投机解码：草稿模型提出，GPT 检查
#
# 批大小为 1 时，一步受限于读取权重（见上文），而送入 `g + 1` 个词元和送入 1 个一样，只读一遍权重。投机解码
# （Leviathan et al. 2023；Chen et al. 2023）就利用这一点：一个小的**草稿**模型逐个写出 `g` 个词元
# `d_1 .. d_g`（它很便宜），然后**目标**模型用一次前向传播给所有这些位置打分，一次得到它的分布
# `p_1 .. p_{g+1}`。草稿词元按顺序检查：
#
#     以概率 min(1, p_i(d_i) / q_i(d_i)) 保留 d_i               q_i：草稿模型的分布
#     第一次被拒绝时，改从 norm(max(0, p_i - q_i)) 中抽取该词元，然后停止
#     若 g 个全部保留，再从 p_{g+1} 抽一个：一次目标前向传播得到 g + 1 个词元
#
# **为什么是精确的。** 词元 `x` 在第 `i` 步出现的概率是
# `q(x) min(1, p(x)/q(x)) + P(拒绝) max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y))`。第一项是
# `min(q(x), p(x))`；拒绝概率是 `1 - sum_y min(q(y), p(y)) = sum_y max(0, p(y) - q(y))`，恰好约掉归一化
# 因子：第二项是 `max(0, p(x) - q(x))`。两者之和为 `p(x)`：**每个词元都服从目标模型的分布**，无论草稿模型
# 好坏。差的草稿模型只损失速度。贪心解码是同一规则配上独热的 `p` 和 `q`：草稿词元当且仅当是目标的 argmax
# 时才保留，所以输出逐词元等于目标自己的贪心文本。
#
# **能换来什么。** 若每个草稿词元以概率 `a`（接受率）被保留，一轮得到
# `1 + a + a^2 + ... + a^g = (1 - a^(g+1)) / (1 - a)` 个词元，只花一次目标前向传播。`a = 0.8, g = 4` 时：
# 每次前向 3.4 个词元，而不是 1 个。
#
# `model.generate(prompt, n, assistant_model=draft, num_assistant_tokens=g)`（transformers 的名字；
# `common/generation/speculative.py`）。这里的草稿模型就是这个 GPT 自己的第一层（它的嵌入、第 0 块、最终
# 归一化和输出头：完全不用训练）；单独训练的小模型效果更好（`docs/results/generation.md` 测量了 6 层目标
# 配 1 层草稿的情形）。

# %%
import dataclasses

draft = GPT(dataclasses.replace(model.config, n_layer=1))
draft.load_state_dict(model.state_dict(), strict=False)  # embeddings, block 0, ln_f, head: no training
n_spec = min(new, 48 if QUICK else new)
plain = model.generate(prompt, n_spec)
for gamma in (1, 2, 4):
    out = model.generate(prompt, n_spec, assistant_model=draft, num_assistant_tokens=gamma,
                         return_dict_in_generate=True)
    a = out.accepted_tokens / max(1, out.draft_tokens)
    per_forward = (out.sequences.size(1) - prompt.size(1)) / out.target_forwards
    expected = (1 - a ** (gamma + 1)) / (1 - a) if a < 1 else gamma + 1
    print(f"gamma {gamma}: same tokens as plain greedy: {torch.equal(out.sequences, plain)}; acceptance "
          f"a = {a:.2f}; {per_forward:.2f} tokens per target forward (formula {expected:.2f}); "
          f"{out.target_forwards} target forwards instead of {n_spec}")
    assert torch.equal(out.sequences, plain), "speculative greedy must be the target's greedy output"
sampled = model.generate(prompt, n_spec, do_sample=True, top_k=20, seed=0, assistant_model=draft)
print("sampled with the draft:", repr(tokenizer.decode(sampled[0].tolist())))

# %% [markdown]
# ## 轮到你了：练习 `sampling`、`kv_cache` 和 `speculative_sampling`（Gold）
#
# - `common/nn/sampling.py` 中的 `sampling`：`apply_temperature`、`top_k_filter`、`top_p_filter`、
#   `next_token`，按上面的公式实现。测试检查 top-k 从不输出最大的 k 个之外的词元，top-p 只从概率达到 p 的
#   最小集合中抽样。
# - `kv_cache`：`common/nn/attention.py` 中的 `KVCache.append`：把新的 `(B, h, T_new, d_k)` 键和值写在缓冲区
#   已填充部分之后，返回到目前为止填充的全部内容，放不下时抛出 `ValueError`。测试检查使用缓存的注意力等于
#   完整的因果注意力，以及 `generate` 有无缓存给出相同的词元。
# - `speculative_sampling`：`common/generation/speculative.py` 中的 `accept_draft`，即上面的规则：逐个保留或
#   拒绝草稿词元，第一次拒绝时从残差分布抽取，全部保留时多抽一个。测试把它抽几千次，用卡方检验比较每个词元的
#   频率和目标的 `p`，并检查投机贪心解码等于普通贪心解码。
#
#     make exercises && cd ../student && make grade                           # 所有练习
#     python -m tutorials.exercises grade --only sampling --only kv_cache   # 在 ../student 中：只评这两个
#
# Gold 要求先达到 Silver 和 Bronze：`sampling` 和 `kv_cache` 会运行注意力、掩码和解码器块，所以其中任何
# 一个还没通过时，`make grade` 会显示 "needs X first"。

# %%
from tutorials.exercises import REGISTRY

for name in ("sampling", "kv_cache", "speculative_sampling"):
    print(f"{name:<9} {REGISTRY[name].pytest_command()}")
