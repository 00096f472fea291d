# %% [markdown]
# # 04 · 掩码语言模型：加噪与损失
#
# BERT 通过填空从纯文本中学习（Devlin et al. 2019，第 3.1 节：15% 的词元）。这 15% 怎么抽，做法不一：
# Google 的 `create_pretraining_data.py` 在 n 个普通词元中恰好取 round(0.15 n) 个（至少 1 个，至多
# `max_predictions_per_seq` 个）；我们照 transformers 的 MLM 组批器（`DataCollatorForLanguageModeling`；
# 组批器即 collator，把一组样本拼成一个批次的函数）的做法：每个普通词元独立地做一次 Bernoulli(0.15)
# 抽样，`m_i ~ Bernoulli(0.15)`（所以只是*平均* 15%：一个短句可能一个都没选中，另一个可能选中三个）；
# 把被选中位置的集合记为 `I = {i : m_i = 1}`。然后替换每个被选中的词元：
#
#     概率 0.8   替换为 [MASK]               "the cat [MASK] on the mat"
#     概率 0.1   替换为一个随机词元           "the cat apple on the mat"
#     概率 0.1   保持不变                     "the cat sat on the mat"
#
# 得到加噪后的序列 `x~`，模型必须在 `I` 的每个位置上预测原来的词元。`I` 中的位置是*同时*加噪的，
# 每个预测读取的都是同一个 `x~`：
#
#     L_MLM = E_{(I, x~) ~ corrupt(x)} [ -(1/|I|) sum_{i in I} log p(x_i | x~; theta) ]
#
# 这是对随机加噪取的期望：每个批次抽一次加噪，算一次损失，即在被掩码位置上的均值（`mlm_loss` 的默认值，也是 BERT 报告的值；`reduction="sum"` 去掉 `1/|I|`）。
# 注意模型的条件是什么：是 `x~`，而不是“只遮住位置 `i` 的句子”。由此得出两点：
#
# - **独立性假设**：两个被掩码的词元从同一个 `x~` 预测，各自都看不到对方，所以 `p(x_i, x_j | x~)`
#   被建模为 `p(x_i | x~) p(x_j | x~)`。在 "[MASK] [MASK] is a city" 中，"New York" 和
#   "Los Angeles" 得分都高，"New Angeles" 也是（教程 10 会测量这一点）；
# - **不匹配**：之后使用模型时 `[MASK]` 从不出现（微调读的是真实文本）。10% 的随机词元和 10% 不变的
#   词元（此时 `x_i` 本身在 `x~` 中可见）让模型对它看到的*每个*输入都要预测一个词元，而不只是对
#   `[MASK]`；最后那个“先预测，再运行”的问题测量了没有它们时会怎样。
#
# 代码：`common/nn/masks.py:mlm_mask_tokens`、`common/data/language_modeling.py:DataCollatorForLanguageModeling`、
# `common/nn/losses.py`（`log_softmax`、`cross_entropy`、`mlm_loss`）。测试：`tests/test_masks.py`、
# `tests/test_data.py`、`tests/test_losses.py`。
#
# 运行：`python tutorials/zh/04_mlm.py`（`TUTORIAL_QUICK=1` 使用更少的句子和步数）。

# %%
import _setup

import math

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling
from common.nn.losses import IGNORE_INDEX, cross_entropy, log_softmax, mlm_loss
from common.text.auto import BertTokenizer
from minibert import BertConfig, BertForMaskedLM

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## 一小段分过词的文本
#
# `demo/corpus.py` 用一个固定种子的生成器写出一些小故事（不下载任何东西）。它的 `word_list()` 包含
# 生成器可能产生的每一个词，所以一个词级词表——BERT 的五个特殊词元加上这些词——永远用不到 `[UNK]`。

# %%
stories = demo_data.generate_corpus(num_documents=100 if _setup.QUICK else 1000, seed=0)
sentences = [sentence for story in stories for sentence in story]
tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())
print(f"{len(stories)} stories, {len(sentences)} sentences, vocabulary of {len(tokenizer)} tokens")
print("the first story begins:", *stories[0][:3], sep="\n  ")
print("tokens:", tokenizer.convert_ids_to_tokens(tokenizer.encode(sentences[1])))

# %% [markdown]
# ## 80/10/10 加噪
#
# `DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)` 把一组样本填充成一个批次，并用
# `mlm_mask_tokens` 给它加噪。它从不选中 `[CLS]`、`[SEP]` 或 `[PAD]`，随机分支也只抽取普通的词。
# `labels` 在被选中的位置保存原来的 id，**其他位置都是 -100**；-100 是本项目中每个损失（以及 PyTorch
# 和 transformers 中）表示“忽略我”的值。

# %%
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
examples = [{"input_ids": tokenizer.encode(s)} for s in sentences[:8]]
batch = collator(examples)
print({key: tuple(value.shape) for key, value in batch.items()})
row = int((batch["labels"] != IGNORE_INDEX).sum(-1).argmax())  # the sentence with most choices
original = tokenizer.convert_ids_to_tokens(tokenizer.encode(sentences[row]))
corrupted = tokenizer.convert_ids_to_tokens(batch["input_ids"][row].tolist())
print(f"\n{'original':>12} {'model sees':>12} {'label':>6}")
for t, (before, after) in enumerate(zip(original, corrupted)):
    label = int(batch["labels"][row, t])
    note = "" if label == IGNORE_INDEX else ("  <- [MASK]" if after == "[MASK]" else
                                             "  <- random" if after != before else "  <- kept, still predicted")
    print(f"{before:>12} {after:>12} {label:>6}{note}")

# %% [markdown]
# ## 统计各个分支
#
# 一个批次只能看到少数几次选择；为了看清比例，我们给每一个句子加噪并计数。期望：普通词元中 15% 被选中，
# 被选中的词元中 80% / 10% / 10%，每一项都在几个二项分布标准差 `sqrt(p (1 - p) / n)` 之内。

# %%
all_examples = [{"input_ids": tokenizer.encode(s)} for s in sentences]
big = collator(all_examples)
original_ids = tokenizer.pad(all_examples, return_tensors="pt")["input_ids"]  # the same padding
special = torch.isin(original_ids, torch.tensor(tokenizer.all_special_ids))  # [CLS] [SEP] [PAD]
chosen = big["labels"] != IGNORE_INDEX
masked = chosen & (big["input_ids"] == tokenizer.mask_token_id)
replaced = chosen & ~masked & (big["input_ids"] != original_ids)
kept = chosen & (big["input_ids"] == original_ids)
n_ordinary, n_chosen = int((~special).sum()), int(chosen.sum())


def report(name, count, total, p):
    sd = math.sqrt(p * (1 - p) / total)
    print(f"{name:<22} {count:>6} / {total:<6} = {count / total:.3f}   expected {p:.2f} +- {sd:.3f}")


report("chosen / ordinary", n_chosen, n_ordinary, 0.15)
report("[MASK] / chosen", int(masked.sum()), n_chosen, 0.8)
report("random / chosen", int(replaced.sum()), n_chosen, 0.1)
report("kept / chosen", int(kept.sum()), n_chosen, 0.1)
print("special tokens or pads chosen:", int((chosen & special).sum()))
print("labels at the chosen positions are the originals:",
      bool(torch.equal(big["labels"][chosen], original_ids[chosen])))
assert int((chosen & special).sum()) == 0

# %% [markdown]
# （随机抽取可能碰巧抽到原来的词，这里约 540 次中有 1 次；这时它算作“保持”。）
# `tests/test_masks.py::test_mlm_split_is_80_10_10_within_binomial_noise` 和
# `tests/test_data.py::test_mlm_selection_rate_and_exact_80_10_10_split` 检查这些比例。
#
# ## log-softmax：对数空间中的概率
#
# 模型为词表中的每个词 `v` 输出一个分数（logit）`z_v`；softmax 把它们变成概率，而损失需要概率的对数：
#
#     log p_v = z_v - log sum_u exp(z_u) = (z_v - m) - log sum_u exp(z_u - m),   m = max_u z_u
#
# 先减去最大值 `m` 可以防止 `exp` 溢出。如果直接计算，大的 logit 会出问题：

# %%
z = torch.tensor([1000.0, 1001.0, 1002.0])
print("naive log(softmax):", torch.log(torch.exp(z) / torch.exp(z).sum()))
print("log_softmax       :", log_softmax(z))
z = torch.randn(4, 7)
print("max |log_softmax - torch.log_softmax| on random logits:",
      float((log_softmax(z) - torch.log_softmax(z, dim=-1)).abs().max()))

# %% [markdown]
# ## 交叉熵，以及被忽略的行
#
#     CE(z, y) = -log p_y        y = -100 的行被跳过；"mean" 除以保留下来的行数
#
# 这里的 `log` 是自然对数，所以损失的单位是*奈特*（nat；1 奈特 = 1 / ln 2 = 1.44 比特）；本课程所有损失
# 都以奈特计。

# %%
logits = torch.randn(4, 5)  # (N, V)
targets = torch.tensor([1, IGNORE_INDEX, 3, 0])  # (N,)
logp = log_softmax(logits)
by_hand = -(logp[0, 1] + logp[2, 3] + logp[3, 0]) / 3  # three kept rows
print("by hand:", float(by_hand), "  cross_entropy:", float(cross_entropy(logits, targets)))
assert torch.allclose(by_hand, cross_entropy(logits, targets))

# %% [markdown]
# ## 在真实批次上计算 L_MLM：手算与 `mlm_loss`
#
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~; theta),      I = {i : labels_i != -100}
#
# 一个很小的 `BertForMaskedLM`（随机权重；关闭 dropout，使数值可重复）给出 `(B, T, V)` 的 logits。
# 逐行实现公式：

# %%
config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=64,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model = BertForMaskedLM(config)
with torch.no_grad():
    out = model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
labels = batch["labels"]  # (B, T)
log_p = log_softmax(out.logits)  # (B, T, V)
I = labels != IGNORE_INDEX  # (B, T) the chosen positions
log_p_original = log_p[I, labels[I]]  # (|I|,) log p(x_i | x~) for i in I
L_sum = -log_p_original.sum()
L_mean = L_sum / I.sum()
print("logits", tuple(out.logits.shape), " |I| =", int(I.sum()))
print(f"by hand     : sum {float(L_sum):.4f}   mean {float(L_mean):.4f}")
print(f"mlm_loss    : sum {float(mlm_loss(out.logits, labels, reduction='sum')):.4f}"
      f"   mean {float(mlm_loss(out.logits, labels)):.4f}")
print(f"model's loss:                 mean {float(out.loss):.4f}")
print(f"log V = log {len(tokenizer)} = {math.log(len(tokenizer)):.4f}  (an untrained model guesses uniformly)")
assert torch.allclose(L_sum, mlm_loss(out.logits, labels, reduction="sum"), rtol=1e-5)
assert torch.allclose(out.loss, L_mean, rtol=1e-5)

# %% [markdown]
# `I` 之外位置上的 logits 完全不进入损失（`test_mlm_loss_ignores_the_logits_of_unmasked_positions`），
# 均匀的 logits 对每个被掩码的词元恰好给出 `log V`（`test_mlm_loss_of_uniform_logits_is_log_V_per_masked_token`）。

# %% [markdown]
# ## 亲手实现 MLM 头：先变换，再用一次词元嵌入
#
# `(B, T, V)` 的 logits 从哪里来？BERT 的 MLM 头（`cls.predictions`）分两步把每个最终隐藏状态
# `H_L[i]`（一个 `d` 维向量）映射为 `V` 个分数：
#
#     u_i      = LayerNorm(GELU(H_L[i] W_t + b_t))      变换，d -> d
#     logits_i = u_i E_token^T + b                      解码器，d -> V
#
# 解码器的权重就是**词元嵌入表 `E_token` 本身**（`(V, d)`，教程 03），而不是一个新矩阵：这叫权重共享
# （BERT 和 GPT 都用）。在输入端把词元 id 变成向量的那些行，在输出端又把向量变回词元上的分数，所以一个
# 词的分数就是 `u_i` 与该词嵌入的点积。这省下 `V d` 个参数，而且每个 MLM 梯度也在训练输入嵌入。
# 用模型自己的权重手算一遍：

# %%
head = model.cls.predictions
E_token = model.bert.embeddings.word_embeddings.weight  # (V, d)
with torch.no_grad():
    H_L = model.bert(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (B, T, d)
    u = head.transform.LayerNorm(torch.nn.functional.gelu(head.transform.dense(H_L)))  # (B, T, d)
    logits_by_hand = u @ E_token.T + head.bias  # (B, T, V)
print("H_L", tuple(H_L.shape), "-> u", tuple(u.shape), "-> logits", tuple(logits_by_hand.shape))
print("max |by hand - model logits|:", float((logits_by_hand - out.logits).abs().max()))
print("decoder.weight is the embedding table (one tensor, not a copy):", head.decoder.weight is E_token)
n_params = sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once
print(f"parameters: {n_params} tied; an untied decoder would add V d = {E_token.numel()} more")
assert torch.allclose(logits_by_hand, out.logits, atol=1e-5)
assert head.decoder.weight is E_token

# %% [markdown]
# 迁移的故事从这里开始：预训练之后，头 `cls.predictions` 被丢弃，一个新的小头读取 `H_L`（教程 07）；
# 只有编码器（包括嵌入）被保留下来。
#
# ## 训练几步：L_MLM 降到 log V 以下
#
# 用梯度下降最小化 `L_MLM`，每一步都在重新加噪的批次上进行，这就是 BERT 掩码语言模型预训练的全部
# （教程 06 会真正预训练一个很小的 BERT，包括 NSP）。下面是一个最简单的循环，每一步对 32 个句子做一次
# 新的随机加噪：

# %%
_setup.seed(0)
steps = 40 if _setup.QUICK else 300
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
losses = []
model.train()
for step in range(steps):
    chunk = torch.randint(len(all_examples), (32,)).tolist()
    train_batch = collator([all_examples[i] for i in chunk])
    loss = model(train_batch["input_ids"], attention_mask=train_batch["attention_mask"],
                 labels=train_batch["labels"]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if step % (steps // 5) == 0 or step == steps - 1:
        print(f"step {step:>4}  L_MLM (mean over I) = {loss.item():.3f}")
model.eval()

# %% [markdown]
# 现在让模型去填它从没见过答案的空。训练几百步之后（完整模式），正确的词已经在它最先给出的猜测之中；
# 在快速模式下它才刚刚开始学。

# %%
for text in ("Tom was a baker who [MASK] near the market.", "Finally, Tom went home and [MASK] glad."):
    probe = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probe_logits = model(probe["input_ids"], attention_mask=probe["attention_mask"]).logits  # (1, T, V)
    where = int((probe["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    top = torch.softmax(probe_logits[0, where], -1).topk(3)
    print(f"{text:<45} ->", [(tokenizer.convert_ids_to_tokens(i), round(p, 2))
                             for i, p in zip(top.indices.tolist(), top.values.tolist())])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, label="L_MLM (mean over I)")
    ax.axhline(math.log(len(tokenizer)), color="grey", linestyle=":", label="log V (uniform guess)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    _setup.save_plot(fig, "04_mlm_loss.png")

# %% [markdown]
# ## 先预测，再运行：用 100% [MASK] 训练
#
# 假设我们跳过 10% 随机 / 10% 保持这两个分支，把*每个*被选中的词元都替换成 `[MASK]`。损失仍然只问被
# 选中的位置。然后我们给模型一个**没有加噪**的句子（就像微调时那样），并在每个位置上问它那里的词元：
# 模型看得到 `x_i`，只需把它还回来。**哪个模型做得更好：上面训练的 80/10/10 模型，还是 100% [MASK] 的
# 模型？差得多，还是差一点？** 先猜，再运行：步数相同、种子相同，只有加噪方式不同。

# %%
def train_mlm(model, all_mask: bool, steps: int) -> None:
    _setup.seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        chunk = torch.randint(len(all_examples), (32,)).tolist()
        b = collator([all_examples[i] for i in chunk])
        ids = b["input_ids"].clone()
        if all_mask:  # every chosen position becomes [MASK]: x_i is never visible at a labelled position
            ids[b["labels"] != IGNORE_INDEX] = tokenizer.mask_token_id
        loss = model(ids, attention_mask=b["attention_mask"], labels=b["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def visible_token_accuracy(model) -> float:
    """Feed real sentences (no corruption); how often is argmax at position i the token x_i itself?"""
    clean = tokenizer.pad(all_examples[:200], return_tensors="pt")
    with torch.no_grad():
        guess = model(clean["input_ids"], attention_mask=clean["attention_mask"]).logits.argmax(-1)
    real = clean["attention_mask"].bool() & ~torch.isin(clean["input_ids"], torch.tensor(tokenizer.all_special_ids))
    return float((guess == clean["input_ids"])[real].float().mean())


accuracy = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a model this small trains faster on one core than split across several
for name, all_mask in (("80/10/10", False), ("100% [MASK]", True)):
    _setup.seed(0)
    fresh = BertForMaskedLM(config)
    train_mlm(fresh, all_mask, steps)
    accuracy[name] = visible_token_accuracy(fresh)
    print(f"{name:>12}: returns the visible token at {accuracy[name]:.0%} of the positions")
torch.set_num_threads(threads)
assert accuracy["80/10/10"] > accuracy["100% [MASK]"] + 0.05, accuracy

# %% [markdown]
# 100% [MASK] 的模型从没被问过可见的词元，所以它在这种位置上的输出只是它仅凭上下文学到的东西：它还回
# 被展示的那个词元的次数更少（在快速模式下两个模型都几乎没训练；差距随完整运行的步数增大）。那 10% 保持
# 不变的词元教会 80/10/10 模型：输入的词元本身就是证据，而这正是微调需要的模型（微调数据中没有
# `[MASK]`）。这就是 BERT 的预训练 / 微调不匹配，以及对它的补救，被实际测量出来。
#
# ## 轮到你了：四个练习
#
# - `mlm_masking`：`common/nn/masks.py` 中的 `mlm_mask_tokens`（每个位置一次均匀抽样决定走哪个分支）；
# - `common/nn/losses.py` 中的 `log_softmax`、`cross_entropy`、`mlm_loss`（如上，每一个都建立在前一个
#   之上）。
#
#     python -m tutorials.exercises make --out ../student     # `make exercises`：所有练习
#     cd ../student && python -m tutorials.exercises grade --only log_softmax --only cross_entropy

# %%
from tutorials.exercises import REGISTRY

for name in ("mlm_masking", "log_softmax", "cross_entropy", "mlm_loss"):
    print(f"{name:<14} {REGISTRY[name].pytest_command()}")
