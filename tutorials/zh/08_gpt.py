# %% [markdown]
# # 08 · GPT 与因果语言模型损失
#
# BERT 看得到整个句子，做的是填空。GPT（Radford et al. 2018, 2019）从左往右读，预测**下一个**词元，所以
# 它可以一次一个词元地写出文本：它是*自回归*的。它用概率的链式法则给序列建模，这对任何分布都精确成立
# （不需要任何假设）：
#
#     p(x) = p(x_1 .. x_T) = prod_{t=1}^{T} p(x_t | x_<t),      x_<t = (x_1, ..., x_{t-1})
#
# 训练目标是在真实文本上最大化这个概率，即最小化
#
#     L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t)
#
# （在被打分的位置 t = 2 .. T 上取均值：第一个词元没有可用来预测它的前缀。）所以训练拟合的是
# log p(x_2 .. x_T | x_1) = sum_{t=2}^{T} log p(x_t | x_<t)：少了链式法则的第一个因子 p(x_1)，没有哪个位置
# 预测它。网络是在词元嵌入 + 位置嵌入
# 之上堆叠的 **pre-LN 解码器块**（GPT-2）：
#
#     H_0[t] = W_te[x_t] + W_pe[t]
#     X  <- X + MultiHead(LN_1(X))      使用因果掩码：位置 t 只能看到 <= t 的位置
#     X  <- X + FFN(LN_2(X))
#     p(x_{t+1} | x_<=t) = softmax(LN_f(H_L)[t] W_te^T)        （输出层复用 W_te）
#
# （`MultiHead` 包含 `W^O`，见教程 01；输出层与词元嵌入共享权重，就像 BERT 的 MLM 解码器那样，见教程 04。）
#
# "Pre-LN" 把 LayerNorm 放在每个子层之前（教程 03 中 BERT 的 post-LN 把它放在残差相加之后）；这样残差
# 通路就是从输入到输出的一条干净的求和，更深的堆叠也更容易训练。
#
# 代码：`minigpt/model.py`（`GPTModel`、`GPT`）、`common/nn/blocks.py:DecoderBlock`、
# `common/nn/losses.py:causal_lm_loss`、`common/nn/masks.py:causal_mask`。测试：`tests/test_gpt_model.py`、
# `tests/test_blocks.py`（`test_decoder_*`）、`tests/test_losses.py`（`test_causal_lm_loss*`）、
# `tests/test_gpt_parity.py`（与 transformers 的 GPT-2 相等）。
#
# 运行：`python tutorials/zh/08_gpt.py`（在 2 核空闲 CPU 上不到一分钟：实测 43 秒）；
# `TUTORIAL_QUICK=1` 只需几秒。

# %%
import _setup

import math

import torch

from demo import corpus as demo_data
from common.text.char import CharTokenizer
from common.data.language_modeling import DataCollatorForLanguageModeling, GroupedTextDataset
from common.nn.losses import causal_lm_loss, log_softmax
from common.nn.masks import causal_mask
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minigpt import GPT, GPTConfig

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 文本与字符分词器
#
# 教程 05-07 中生成的故事，作为一条字符流。`CharTokenizer` 给每个不同的字符一个 id（它在排序后的集合中
# 的名次），与 nanoGPT 的 `shakespeare_char` 相同：词表很小，没有未知词，模型还得学会拼写。

# %%
documents = demo_data.generate_corpus(num_documents=300 if QUICK else 3000, seed=0)
heldout_documents = demo_data.generate_corpus(num_documents=20 if QUICK else 100, seed=1)
text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
heldout_text = "\n\n".join("\n".join(doc) for doc in heldout_documents) + "\n"
tokenizer = CharTokenizer.from_text(text + heldout_text)
V = len(tokenizer)
print(f"{len(text):,} training characters, {len(heldout_text):,} held out")
print(f"vocabulary V = {V}: {''.join(tokenizer.chars)!r}")
ids = tokenizer.encode("Once there was", add_special_tokens=False)
print("'Once there was' ->", ids, "->", repr(tokenizer.decode(ids)))

# %% [markdown]
# ## 一个小 GPT 及其输出
#
# `GPTConfig` 使用 GPT-2 的名字：`n_layer`、`n_head`、`n_embd`，以及最长上下文 `block_size`。
# `GPT(config)(input_ids)` 返回 `(B, T, V)` 的 logits：在每个位置 `t`，对每个可能的下一个词元给一个分数。

# %%
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=V, dropout=0.0)
model = GPT(config)
print(f"{model.num_parameters():,} parameters")
x = torch.tensor([tokenizer.encode(text[:config.block_size], add_special_tokens=False)])  # (1, T)
with torch.no_grad():
    out = model(x, labels=x)
print("input_ids", tuple(x.shape), "-> logits", tuple(out.logits.shape))

# %% [markdown]
# ## 手算 L_LM
#
# 位置 `t` 上的 logits 预测词元 `t+1`，所以我们把 `logits[:, :-1]` 与 `labels[:, 1:]` 比较（标签就是输入
# id 本身，错开一位；`-100` 标记要跳过的标签，例如填充）：
#
#     -mean over t of log softmax(logits[:, t - 1])[x_t]      （同一个 L_LM，用代码中的下标写出）
#
# 没训练过的模型把概率分得差不多均匀，所以 `L_LM` 从 `ln V` 附近开始。

# %%
logits, labels = out.logits, x  # (1, T, V), (1, T)
log_p = log_softmax(logits[:, :-1, :])  # (1, T-1, V): log p(. | x_<=t) for t = 1 .. T-1
next_ids = labels[:, 1:]  # (1, T-1): x_{t+1}
by_hand = -log_p.gather(-1, next_ids.unsqueeze(-1)).squeeze(-1).mean()
print(f"L_LM by hand {float(by_hand):.4f}   causal_lm_loss {float(causal_lm_loss(logits, labels)):.4f}   "
      f"model's loss {float(out.loss):.4f}   ln V = {math.log(V):.4f}")
assert torch.allclose(by_hand, causal_lm_loss(logits, labels), rtol=1e-5)
assert torch.allclose(by_hand, out.loss, rtol=1e-5)

# %% [markdown]
# ## 因果性质
#
# 因果掩码 `M[i, j] = j <= i`（教程 02）让位置 `i` 只能关注 `j <= i` 的位置。所以位置 `t` 上的 logits 取决于
# `x_1 .. x_t`，与之后的任何东西都无关：改变词元 `k`，`k` 之前的 logits **完全**不变。这使损失是诚实的
# （任何位置都不能偷看它要预测的词元），也使教程 09 的 KV 缓存成为可能。

# %%
k = 20
changed = x.clone()
changed[0, k] = (changed[0, k] + 1) % V
with torch.no_grad():
    a, b = model(x).logits[0], model(changed).logits[0]  # (T, V) each
difference = (a - b).abs().amax(dim=-1)  # (T,) largest change per position
print(f"changed token {k}: largest logit change at positions < {k}: {float(difference[:k].max()):.2e}, "
      f"at positions >= {k}: {float(difference[k:].min()):.2e} .. {float(difference[k:].max()):.2e}")
assert float(difference[:k].max()) == 0.0, "a later token changed an earlier position's logits"
print("causal_mask(5):\n", causal_mask(5)[0, 0].int())
with torch.no_grad():
    weights = model(x[:, :8], output_attentions=True).attentions[0][0, 0]  # layer 0, head 0: (8, 8)
print("attention weights of layer 0, head 0 (zero above the diagonal):\n", weights)

# %% [markdown]
# ## 亲手实现解码器块
#
# 模型中的一个块，用它自己的子模块逐行写出，等于该块的 `forward`：

# %%
block = model.transformer.h[0]
h = torch.randn(1, 8, config.n_embd)  # (B, T, d)
mask = causal_mask(8)  # (1, 1, T, T)
with torch.no_grad():
    attended, _ = block.attn(block.ln_1(h), mask=mask)  # MultiHead(LN_1(x)), W^O included
    by_hand = h + attended
    by_hand = by_hand + block.mlp(block.ln_2(by_hand))  # x + FFN(LN_2(x))
    library, _ = block(h, mask=mask)
print(f"pre-LN block by hand vs DecoderBlock: max difference {float((by_hand - library).abs().max()):.2e}")
assert torch.allclose(by_hand, library, atol=1e-6)

# %% [markdown]
# ## 交叉注意力：读取编码器的解码器
#
# 编码器-解码器 Transformer（Vaswani et al. 2017；T5）在每个解码器块中加入第三个子层：查询来自解码器，
# 键和值来自编码器的输出 `E`（`S` 个位置），即教程 01 的 `head_i = Attention(X W_i^Q, Y W_i^K, Y W_i^V)`
# 中取 `Y = E`：
#
#     x <- x + MultiHead(LN_c(x), E)          没有因果掩码：每个解码器位置都读取整个 E
#
# 分数的形状是 `(T, S)`，每个解码器位置一行。用这个块自己的模块手算一遍
# （`DecoderBlock(add_cross_attention=True)`，由练习 `decoder_block` 评分）：

# %%
from common.nn.blocks import DecoderBlock

torch.manual_seed(0)
cross_block = DecoderBlock(hidden_size=32, num_heads=4, add_cross_attention=True).eval()
x_dec = torch.randn(1, 5, 32)  # (B, T, d): 5 decoder positions
enc = torch.randn(1, 7, 32)  # (B, S, d): 7 encoder positions
with torch.no_grad():
    step = x_dec + cross_block.attn(cross_block.ln_1(x_dec), mask=causal_mask(5))[0]
    read, cross_weights = cross_block.crossattention(cross_block.ln_cross_attn(step), key_value_states=enc,
                                                     output_attentions=True)
    step = step + read
    by_hand = step + cross_block.mlp(cross_block.ln_2(step))
    library, _ = cross_block(x_dec, mask=causal_mask(5), encoder_hidden_states=enc)
print("cross-attention weights", tuple(cross_weights.shape), "(B, h, T, S): decoder positions x encoder positions")
print(f"block with cross-attention, by hand vs DecoderBlock: max difference {float((by_hand - library).abs().max()):.2e}")
assert torch.allclose(by_hand, library, atol=1e-6)
assert cross_weights.shape == (1, 4, 5, 7)

# %% [markdown]
# ## 训练
#
# `GroupedTextDataset` 把词元流切成连续的、每块 `block_size` 个词元的块；
# `DataCollatorForLanguageModeling(mlm=False)` 设置 `labels = input_ids`（错位在损失中完成）。与 06 和 07
# 中相同的 `Trainer` 运行带预热和线性衰减的 AdamW，并在留出的故事上评估。损失以每字符奈特为单位；
# `exp(L)` 是困惑度，即“模型在多少个字符之间犹豫”。

# %%
folder = _setup.OUT / "08_data"
folder.mkdir(parents=True, exist_ok=True)
(folder / "train.txt").write_text(text, encoding="utf-8")
(folder / "heldout.txt").write_text(heldout_text, encoding="utf-8")
train_blocks = GroupedTextDataset(tokenizer, folder / "train.txt", config.block_size)
heldout_blocks = GroupedTextDataset(tokenizer, folder / "heldout.txt", config.block_size)
print(f"{len(train_blocks)} training blocks, {len(heldout_blocks)} held-out blocks of {config.block_size} characters")

steps = 100 if QUICK else 1500
args = TrainingArguments(output_dir=str(_setup.OUT / "08_run"), overwrite_output_dir=True, save_strategy="no",
                         max_steps=steps, per_device_train_batch_size=32, per_device_eval_batch_size=128,
                         learning_rate=3e-3, warmup_steps=steps // 20, lr_scheduler_type="linear",
                         weight_decay=0.01, logging_steps=max(1, steps // 100), eval_strategy="steps",
                         eval_steps=steps // 5, seed=0)
trainer = Trainer(model, args, train_dataset=train_blocks, eval_dataset=heldout_blocks,
                  data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
trainer.train()
history = trainer.state.log_history
train_curve = [(r["step"], r["loss"]) for r in history if "loss" in r]
eval_curve = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
for step, loss in eval_curve:
    print(f"step {step:>5}: held-out L_LM {loss:.3f} nats/char, perplexity {math.exp(loss):.2f}")
assert eval_curve[-1][1] < math.log(V) - 0.5, "the held-out loss should fall well below ln V"

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*train_curve), label="training L_LM")
    ax.plot(*zip(*eval_curve), "o-", label="held-out L_LM")
    ax.axhline(math.log(V), color="grey", linestyle=":", label="ln V (uniform guess)")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per character")
    ax.legend()
    ax.set_title("A character-level GPT on the generated stories")
    _setup.save_plot(fig, "08_gpt_loss.png")

# %% [markdown]
# ## 先预测，再运行：去掉因果掩码
#
# 拿上面训练好的 GPT，在留出的块上**不用**因果掩码进行评估：现在每个位置都可以关注其他所有位置，包括它
# 要预测的那个词元。**留出集上的损失会下降（答案就摆在眼前）还是上升？** 先猜，再运行。我们把模型调用的
# 掩码函数换成一个允许一切的函数，之后再恢复。

# %%
import minigpt.model as gpt_module

causal = gpt_module.causal_mask


def everything_allowed(T_q, T_k=None, device=None):
    return torch.ones(1, 1, T_q, T_q if T_k is None else T_k, dtype=torch.bool, device=device)


def heldout_loss(m, n=64):
    with torch.no_grad():
        ids = torch.stack([heldout_blocks[i]["input_ids"] for i in range(min(n, len(heldout_blocks)))])
        return float(m(ids, labels=ids).loss)


model.eval()
with_mask = heldout_loss(model)
gpt_module.causal_mask = everything_allowed
try:
    without_mask = heldout_loss(model)
finally:
    gpt_module.causal_mask = causal
print(f"held-out L_LM with the causal mask {with_mask:.3f}, without it {without_mask:.3f}   (ln V = {math.log(V):.3f})")
assert without_mask > with_mask, "the model never learned to read the future: more context is noise to it"

# %% [markdown]
# 上升。模型是带着掩码训练的，它的权重从没学过如何处理后面的词元；把答案给它，会改变每一次注意力平均，
# 毁掉它学到的东西。反过来（不带掩码训练）更糟：对 `x_{t+1}` 的“预测”可以读到 `x_{t+1}`，所以模型只需学会
# 复制它；训练损失趋向 0，而它不能生成，因为生成时下一个词元并不在那里供它复制（试试看：用
# `gpt_module.causal_mask = everything_allowed` 训练，步数比快速模式多一些，观察训练损失与 `ln V` 的对比）。
# 正是掩码让 `L_LM` 成为链式法则。BERT 没有这样的掩码，因此能读取右侧的上下文，但代价是 `[MASK]` 词元，
# 而且不能从左往右生成：见教程 10。
#
# ## 它写出了什么
#
# 贪心解码，每一步取最可能的字符（`model.generate`；教程 09 讲其他的选择方式，以及如何做得快）。完整运行
# 之后，单词拼写正确，句子遵循故事的模板；快速模式之后则差得多。

# %%
prompt = torch.tensor([tokenizer.encode("Once there was a", add_special_tokens=False)])
continuation = model.generate(prompt, max_new_tokens=config.block_size - prompt.size(1))
print(repr(tokenizer.decode(continuation[0].tolist())))
model.save_pretrained(_setup.OUT / "08_gpt")
tokenizer.save_pretrained(_setup.OUT / "08_gpt")
print(f"saved to {_setup.OUT / '08_gpt'} (tutorial 09 can load it)")

# %% [markdown]
# ## 轮到你了：练习 `decoder_block` 和 `causal_lm_loss`
#
# - `common/nn/losses.py` 中的 `causal_lm_loss`（Bronze）：用 `cross_entropy` 对 `logits[:, :-1]` 和
#   `labels[:, 1:]` 打分，跳过 `-100`。
# - `decoder_block`：`common/nn/blocks.py` 中的 `DecoderBlock.forward`（Silver）：上面的 pre-LN 残差求和
#   （使用 `add_cross_attention` 时，两者之间还有一个子层，关注编码器的输出）。它的测试检查因果性、子层
#   输出为零时的恒等性，以及交叉注意力。
#
#     make exercises                  # 学生副本在 ../student，所有练习都被挖空
#     cd ../student && make grade        # 结果表和等级阶梯
#
# 或者只做这两个：
#
#     python -m tutorials.exercises make --out ../student --only causal_lm_loss --only decoder_block
#     cd ../student && python -m tutorials.exercises grade --only causal_lm_loss --only decoder_block

# %%
from tutorials.exercises import REGISTRY

for name in ("causal_lm_loss", "decoder_block"):
    print(f"{name:<15} {REGISTRY[name].pytest_command()}")
