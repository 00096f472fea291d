# %% [markdown]
# # 10 · 自回归还是自编码？GPT 与 BERT 并排比较
#
# 教程 04-08 分别训练了这两类模型。这里让它们在同样的句子上相遇，词表相同、规模相同、步数相同，所以不同的
# 只有训练目标本身（记号：`docs/notation.md`）。
#
# **自回归（AR，GPT）。** 链式法则，对任何分布都精确成立：
#
#     p(x) = prod_{t=1}^{T} p(x_t | x_<t),      L_LM = -(1/N) sum_t log p(x_t | x_<t)
#
# 模型给每个句子定义了一个真正的概率，并且能一个词元接一个词元地生成。但位置 `t` 上的预测永远看不到
# `x_{t+1}, ..., x_T`：没有右侧上下文。
#
# **自编码（AE，BERT）。** 给 `x` 加噪得到 `x~`（15% 的词元，80/10/10），再从 `x~` 重建被选中的词元 `I`：
#
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)
#
# 每个预测都能看到两侧（双向）。但它给不出 `p(x)`：在同一个 `x~` 下，各个被掩码的词元是分头预测的，彼此
# 不知道对方（**独立性假设**）；
# 模型需要真实文本中从不出现的 `[MASK]` 词元（**不匹配**，教程 04）；而且它没有可以用来生成的从左到右的
# 顺序。BERT 里最接近“句子得分”的是**伪对数似然**（Salazar et al. 2020），每次掩码一个位置：
#
#     PLL(x) = sum_{t=1}^{T} log p(x_t | x with x_t replaced by [MASK])
#
# 它是 `T` 个对数条件概率之和，每一项都看得到两侧；这些条件概率相乘，得不到任何句子上的分布。
#
# 运行：`python tutorials/zh/10_ar_vs_ae.py`（2 核 CPU 上约 80 秒）；`TUTORIAL_QUICK=1` 只跑一小段，模型几乎没怎么
# 训练（但精确的检查照样成立）。

# %%
import _setup

import math
import random

import torch

from common.data.language_modeling import DataCollatorForLanguageModeling
from common.nn.losses import IGNORE_INDEX
from common.text.auto import BertTokenizer
from demo import corpus as demo_data
from minibert import BertConfig, BertForMaskedLM
from minigpt import GPT, GPTConfig

_setup.seed(0)
QUICK = _setup.QUICK
torch.set_num_threads(1)  # models this small train faster on one core than split across several

# %% [markdown]
# ## 同样的句子，同样的词表
#
# 语料用演示语料（`demo/corpus.py` 现场生成，不下载任何东西），词表按词切分。两个模型都读取 `[CLS] sentence [SEP]`：
# 对 GPT 来说，`[CLS]` 是起始词元（这样第一个词 `x_1` 也有可以用来预测它的前缀），`[SEP]` 是句子的结尾。

# %%
stories = demo_data.generate_corpus(num_documents=200 if QUICK else 2000, seed=0)
sentences = [s for story in stories for s in story]
random.Random(0).shuffle(sentences)
heldout, train = sentences[:100], sentences[100:]
tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())
V = len(tokenizer)
encoded = [tokenizer.encode(s) for s in train]
print(f"{len(train)} training sentences, {len(heldout)} held out, V = {V}")

bert = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=256, max_position_embeddings=64,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=V, dropout=0.0))
print(f"parameters: BERT {sum(p.numel() for p in bert.parameters()):,}, GPT {sum(p.numel() for p in gpt.parameters()):,}")

# %% [markdown]
# ## 用同样的方式训练两者
#
# 同样的每批 32 个句子，同样学习率的 AdamW，同样的步数。BERT 的批次由组批器（教程 04：构造每个批次的函数）加噪（每步重新抽取 80/10/10）；
# GPT 的标签就是词元 id 本身，填充处为 `-100`（标签与输入错开一位，这一步在损失函数里完成）。

# %%
steps = 150 if QUICK else 2000
mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
optimizers = {name: torch.optim.AdamW(m.parameters(), lr=2e-3) for name, m in (("bert", bert), ("gpt", gpt))}
bert.train()
gpt.train()
for step in range(steps):
    chunk = [{"input_ids": encoded[i]} for i in torch.randint(len(encoded), (32,)).tolist()]
    masked = mlm(chunk)
    padded = tokenizer.pad(chunk, return_tensors="pt")
    lm_labels = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, IGNORE_INDEX)
    losses = {"bert": bert(masked["input_ids"], attention_mask=masked["attention_mask"], labels=masked["labels"]).loss,
              "gpt": gpt(padded["input_ids"], labels=lm_labels).loss}  # right padding: pads come after every real token
    for name, loss in losses.items():
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
    if step % (steps // 5) == 0 or step == steps - 1:
        print(f"step {step:>5}: L_MLM {losses['bert'].item():.3f}   L_LM {losses['gpt'].item():.3f}   (ln V = {math.log(V):.3f})")
bert.eval()
gpt.eval()
torch.set_grad_enabled(False)

# %% [markdown]
# ## 给一个句子打分，两种方式
#
# GPT：一次前向传播给出每个位置上的 `log p(x_t | x_<t)`，它们的和就是 `log p(x)`，恰好等于 `-N L_LM`（与模型
# 自己的损失对照检查）。BERT：`T` 次前向传播，第 `t` 次把 `x_t` 替换为 `[MASK]`（作为 `T` 行组成一个批次），
# `PLL(x)` 是在被掩码位置读出的 `log p(x_t | ...)` 之和。两者的单位都是奈特（自然对数，见教程 04）。

# %%
def gpt_log_probs(ids: torch.Tensor) -> torch.Tensor:
    """(T,) ids -> (T - 1,) log p(x_t | x_<t) for t = 2 .. T (position 1 is [CLS], the given start)."""
    log_p = torch.log_softmax(gpt(ids[None]).logits[0, :-1], dim=-1)  # (T - 1, V): row t predicts x_{t+1}
    return log_p.gather(-1, ids[1:, None])[:, 0]


def bert_pseudo_log_probs(ids: torch.Tensor) -> torch.Tensor:
    """(T,) ids -> (T - 2,) log p(x_t | x with x_t masked) for every word (not [CLS], [SEP])."""
    positions = torch.arange(1, len(ids) - 1)
    rows = ids.repeat(len(positions), 1)  # (T - 2, T): one copy per masked position
    rows[torch.arange(len(positions)), positions] = tokenizer.mask_token_id
    log_p = torch.log_softmax(bert(rows).logits[torch.arange(len(positions)), positions], dim=-1)  # (T - 2, V)
    return log_p.gather(-1, ids[positions, None])[:, 0]


sentence = heldout[0]
ids = torch.tensor(tokenizer.encode(sentence))
words = tokenizer.convert_ids_to_tokens(ids.tolist())
ar, ae = gpt_log_probs(ids), bert_pseudo_log_probs(ids)
print(f"{sentence!r}\n{'token':>12} {'GPT log p(x_t | x_<t)':>22} {'BERT log p(x_t | rest)':>23}")
for t in range(1, len(ids)):
    bert_term = f"{float(ae[t - 1]):>23.3f}" if t < len(ids) - 1 else f"{'([SEP]: not scored)':>23}"
    print(f"{words[t]:>12} {float(ar[t - 1]):>22.3f} {bert_term}")
print(f"GPT  log p(x) = {float(ar.sum()):.2f} nats (a probability of the whole sentence)")
print(f"BERT PLL(x)   = {float(ae.sum()):.2f} nats (a score, not the log of any probability)")
model_loss = gpt(ids[None], labels=ids[None]).loss  # L_LM: the mean over the T - 1 predicted positions
assert torch.allclose(ar.sum(), -model_loss * (len(ids) - 1), rtol=1e-4), "log p(x) must be -N L_LM"

# %% [markdown]
# 哪一列更大取决于每个模型训练了多少：每一步 GPT 从每个位置学习，BERT 只从它掩码的约 15% 学习，所以在步数
# 相同时，BERT 见到的标签大约只有七分之一（快速运行就能看出来）。无论数字如何，它们都不可比较：`log p(x)` 是
# 句子概率的对数，`PLL(x)` 是一些对数条件概率之和，每一项都看得到该词两侧的内容。
#
# ## 先预测，再运行：GPT 看不到什么
#
# 两个句子直到 "Tom was a" 都相同，之后不同。**在预测 "a" 之后那个词的位置上，GPT 对两个句子给出的概率
# 不同吗？BERT 在掩码该词时给出的概率呢？** 先猜，再运行。

# %%
left = "tom was a"
pair = [f"{left} baker who lived near the market.", f"{left} farmer who lived near the fields."]
rows = [torch.tensor(tokenizer.encode(s)) for s in pair]
blank = len(tokenizer.encode(left, add_special_tokens=False)) + 1  # index of the word after "a" ([CLS] is 0)
gpt_next = [torch.softmax(gpt(r[None]).logits[0, blank - 1], -1) for r in rows]  # p(x_blank | x_<blank)
masked_rows = [r.clone() for r in rows]
for r in masked_rows:
    r[blank] = tokenizer.mask_token_id
bert_fill = [torch.softmax(bert(r[None]).logits[0, blank], -1) for r in masked_rows]  # p(x_blank | x~)
gpt_change = float((gpt_next[0] - gpt_next[1]).abs().max())
bert_change = float((bert_fill[0] - bert_fill[1]).abs().max())
for name, dists in (("GPT", gpt_next), ("BERT", bert_fill)):
    print(f"{name:>4}: p(baker), p(farmer) in sentence 1: {float(dists[0][tokenizer.convert_tokens_to_ids('baker')]):.4f}, "
          f"{float(dists[0][tokenizer.convert_tokens_to_ids('farmer')]):.4f}; in sentence 2: "
          f"{float(dists[1][tokenizer.convert_tokens_to_ids('baker')]):.4f}, "
          f"{float(dists[1][tokenizer.convert_tokens_to_ids('farmer')]):.4f}")
print(f"largest change of the distribution at the blank: GPT {gpt_change:.2e}, BERT {bert_change:.2e}")
assert gpt_change == 0.0, "a causal model's prediction cannot depend on the tokens to its right"
assert bert_change > 1e-4, "a bidirectional model reads the right context"

# %% [markdown]
# GPT 给出的分布分毫不差：在 "a" 处它还没有读到 "market" 或 "fields"，而且永远不会读到（教程 08 的因果
# 性质）。BERT 的会变：它读取右侧的词（"near the fields" 暗示这里是 "farmer"；它的概率有没有随之变化，
# 取决于训练了多久，可以对照完整运行的结果）。在需要整个句子的任务上（分类、序列标注、抽取式问答），这就是 BERT 的
# 优势。下面，每个留出的词由 GPT 只凭左侧去猜，由 BERT 在只掩码这一个词时去猜；步数相同时 BERT 拿到的标签
# 少得多（见上文），所以先跑一遍完整版本，再从这个对比中下结论。

# %%
gpt_hits = bert_hits = total = 0
for s in heldout:
    ids = torch.tensor(tokenizer.encode(s))
    words_only = torch.arange(1, len(ids) - 1)
    gpt_guess = gpt(ids[None]).logits[0, words_only - 1].argmax(-1)  # from x_<t
    rows = ids.repeat(len(words_only), 1)
    rows[torch.arange(len(words_only)), words_only] = tokenizer.mask_token_id
    bert_guess = bert(rows).logits[torch.arange(len(words_only)), words_only].argmax(-1)  # from both sides
    gpt_hits += int((gpt_guess == ids[words_only]).sum())
    bert_hits += int((bert_guess == ids[words_only]).sum())
    total += len(words_only)
print(f"held-out words guessed right: GPT (left context) {gpt_hits / total:.1%}, "
      f"BERT (both sides) {bert_hits / total:.1%}, over {total} words")

# %% [markdown]
# ## BERT 做不到的事：生成，以及联合预测两个掩码
#
# GPT 的生成方式是先抽样 `x_1`，再在给定 `x_1` 时抽样 `x_2`，依此类推：每一步都是链式法则中的一个因子。
# BERT 没有这样的顺序。让它同时填多个 `[MASK]` 时，每个空都只根据同一个 `x~` 来填，不管别的空填了什么：
#
#     BERT：         p(x_i, x_j | x~) ≈ p(x_i | x~) p(x_j | x~)        （独立性假设）
#     链式法则：     p(x_i, x_j | x~) = p(x_i | x~) p(x_j | x~, x_i)
#
# **先预测，再运行。** 在每个留出句子中掩码两个相邻的词。用 BERT 以两种方式给真实的词对打分：一次全部预测
# （独立），或者先预测第一个词，再在第一个词已填入时预测第二个（链式法则的一步）。平均而言哪种方式给真实
# 词对更高的对数概率？差距大吗？

# %%
independent, sequential = [], []
for s in heldout:
    ids = torch.tensor(tokenizer.encode(s))
    i, j = 2, 3  # the second and third words
    both = ids.clone()
    both[[i, j]] = tokenizer.mask_token_id
    log_p = torch.log_softmax(bert(both[None]).logits[0], -1)  # (T, V) from x~ with both masked
    independent.append(float(log_p[i, ids[i]] + log_p[j, ids[j]]))
    one = both.clone()
    one[i] = ids[i]  # the first word filled in, the second still masked
    log_p_second = torch.log_softmax(bert(one[None]).logits[0, j], -1)
    sequential.append(float(log_p[i, ids[i]] + log_p_second[ids[j]]))
mean_independent = sum(independent) / len(independent)
mean_sequential = sum(sequential) / len(sequential)
print(f"true pair, mean log p over {len(heldout)} sentences: independent {mean_independent:.3f}, "
      f"one word at a time {mean_sequential:.3f}")
assert mean_sequential > mean_independent, (mean_sequential, mean_independent)

# %% [markdown]
# 看到第一个词，第二个词就更好猜：独立的乘积丢掉了这一点，所以 BERT 会把两个从不连用的词并排填进去。
# 生成需要链式法则，而 GPT 生来就是按链式法则构造的：

# %%
start = torch.tensor([tokenizer.encode("tom was a", add_special_tokens=False)])
start = torch.cat([torch.tensor([[tokenizer.cls_token_id]]), start], dim=1)
written = gpt.generate(start, 12)[0].tolist()
print("GPT, greedy:", " ".join(tokenizer.convert_ids_to_tokens(written)))
fill = torch.cat([start, torch.full((1, 6), tokenizer.mask_token_id), torch.tensor([[tokenizer.sep_token_id]])], dim=1)
filled = fill.clone()
positions = fill[0] == tokenizer.mask_token_id
filled[0, positions] = bert(fill).logits[0, positions].argmax(-1)  # all six masks at once
print("BERT, six [MASK]s filled at once:", " ".join(tokenizer.convert_ids_to_tokens(filled[0].tolist())))

# %% [markdown]
# ## 不匹配，数一数
#
# BERT 训练时的输入中约有 12% 的词是 `[MASK]`（被选中的 15% 中的 80%）；而微调时读到的句子里一个也没有。
# GPT 在训练和使用时读的是同一类文本。

# %%
batch = mlm([{"input_ids": e} for e in encoded[:500]])
words_only = batch["attention_mask"].bool() & (batch["input_ids"] != tokenizer.cls_token_id) & (
    batch["input_ids"] != tokenizer.sep_token_id)
share = float((batch["input_ids"][words_only] == tokenizer.mask_token_id).float().mean())
print(f"[MASK] share of the words BERT trains on: {share:.1%} (expected 0.15 x 0.8 = 12%); "
      f"of fine-tuning or generation text: 0%")
assert 0.10 < share < 0.14, share

# %% [markdown]
# ## 总结
#
# | | GPT（自回归） | BERT（自编码） |
# | --- | --- | --- |
# | 训练目标 | `L_LM`，链式法则 | 在 `x~` 上的 `L_MLM` |
# | 句子的得分 | `log p(x)`，真正的对数概率 | `PLL(x)`，对数条件概率之和 |
# | 右侧上下文 | 从不（上面已断言） | 总是 |
# | 生成 | 一次一个词元 | 没有顺序；各个掩码独立填充 |
# | 训练 / 使用不匹配 | 没有 | `[MASK]` 只在训练中出现 |
#
# XLNet（Yang et al. 2019）和 T5 式的片段遮盖都是想兼得两列长处的尝试。教程 04 测量了对不匹配的补救
# （80/10/10）；教程 08 测量了去掉因果掩码对 GPT 的影响。
#
# ## 轮到你了：练习 `causal_lm_loss` 和 `mlm_loss`
#
# 这里比较的两个目标正是两个计分练习：`causal_lm_loss`（教程 08）和 `mlm_loss`（教程 04），都在
# `common/nn/losses.py` 里。在学生副本中（`make exercises`）它们会抛出 `NotImplementedError`；等它们通过后，
# 在你的副本里运行本教程：上面的每个数字就都出自你自己写的损失函数。
#
#     python -m tutorials.exercises make --out ../student --only causal_lm_loss --only mlm_loss
#     cd ../student && python -m tutorials.exercises grade --only causal_lm_loss --only mlm_loss

# %%
from tutorials.exercises import REGISTRY

for name in ("causal_lm_loss", "mlm_loss"):
    print(REGISTRY[name].pytest_command())
