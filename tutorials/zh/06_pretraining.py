# %% [markdown]
# # 06 · 预训练一个很小的 BERT
#
# 教程 04 和 05 构建了两个预训练任务及其损失。这里我们把它们合在一起来训练：一个小 BERT 读取几千个
# 无标签的句对 `[CLS] A [SEP] B [SEP]`，其中一些词元被掩码，并最小化
#
#     L = w_MLM L_MLM + w_NSP L_NSP                  （w_MLM = w_NSP = 1，与 BERT 相同）
#     L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)     （I = 被掩码的位置，x~ 为加噪后的输入）
#     L_NSP = -log p(y | c)                             （y = IsNext / NotNext，c 为池化后的 [CLS] 向量）
#
# 优化器是 AdamW，学习率在最初若干步线性预热，然后线性衰减到 0（Devlin et al. 2019 附录 A.2 用的是
# 同样的调度）：
#
#     eta_s = eta_max * s / S_w                       当 s < S_w
#     eta_s = eta_max * (S - s) / (S - S_w)           之后（S = 总步数）
#
# 有两个数字告诉我们它在学习，都在它从不用于训练的留出故事上测量：
#
# - MLM 损失从大约 `ln V`（在词表的 V 个词中均匀地猜）开始，随着模型学会哪些词适合放在哪里而下降；
# - NSP 准确率从 0.5（抛硬币）开始，随着它学会 B 为什么会接在 A 后面而上升。
#
# 代码：`common/train/trainer.py:Trainer`（唯一的训练循环）、`common/train/args.py:TrainingArguments`、
# `common/train/optim.py`（AdamW 参数组、调度）、`minibert/heads.py:BertForPreTraining`、
# `demo/stages.py:evaluate_pretraining`（留出集上的得分）。`make demo` 用同样的做法训练更久
# （`demo/stages.py:pretrain_bert`）。测试：`tests/test_trainer.py`、`tests/test_bert_model.py`、
# `tests/test_demo.py`。
#
# 运行：`python tutorials/zh/06_pretraining.py`（6000 步：在一个空闲的核上约两分钟，2 核机器上实测 107 秒，
# 见 docs/results/tutorials.md；机器繁忙时会慢得多）；
# `TUTORIAL_QUICK=1` 只训练几秒钟，它的数字没多大意义。

# %%
import _setup

import math
import warnings

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling, TextDatasetForNextSentencePrediction
from common.data.switches import WithSwitches
from demo.inputs import BERT_SPECIALS, builtin_corpus
from demo.stages import HeldoutEvaluation
from minibert.metrics import evaluate_pretraining
from common.text.auto import BertTokenizer
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minibert import BertConfig, BertForPreTraining

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 数据：生成的故事，一个词一个词元
#
# `demo.corpus` 写出一些短故事（教程 05 展示过几个）：4000 个用于训练，200 个留出。分词器认识生成器
# 可能写出的每一个词，所以没有 `[UNK]`，一个词元就是一个词。

# %%
corpus = builtin_corpus(_setup.OUT / "06_data", num_documents=200 if QUICK else 4000,
                        heldout_documents=20 if QUICK else 200, seed=0)
print(corpus.notes[0])
tokenizer = BertTokenizer(vocab=BERT_SPECIALS + demo_data.word_list())
V = len(tokenizer)
print(f"vocabulary V = {V} tokens, ln V = {math.log(V):.3f}")

block_size = 32
train_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.train_file, block_size, seed=0)
heldout_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.heldout_file, block_size, seed=1)
print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs, at most {block_size} tokens each")

# %% [markdown]
# ## 模型：d = 64、L = 2、h = 2 的 BERT
#
# BERT-base 有 d = 768 个隐藏单元、L = 12 层、h = 12 个头（Devlin 等人记作 H、L、A）和 1.1 亿个参数；
# 我们的大约小 750 倍。对于在这么少数据上训练这么小的模型，有两个选择有帮助：
#
# - 不用 dropout（`hidden_dropout_prob = attention_probs_dropout_prob = 0`）：用 0.1 的 dropout 时，
#   同样的步数只让教程 07 从预训练中得到几个百分点的提升（`demo/corpus.py`）；
# - `mlm_logits_at_masked_only=True`，这是 forward 的参数，由下面的组批器加进每个批次
#   （`common/data/switches.py`；从不写进 config.json）：`V` 路的输出层只在 15% 被掩码的位置上运行，而损失也只读取这些
#   位置。损失相同、梯度相同，工作量更少（`minibert/masked_only.py`，由 `tests/test_bert_parity.py`
#   与完整计算对照）。

# %%
config = BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=block_size, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
model = BertForPreTraining(config)
embedding_share = V * config.hidden_size / model.num_parameters()
print(f"{model.num_parameters():,} parameters, {embedding_share:.0%} of them in the token embeddings ({V} x 64)")

# %% [markdown]
# ## 学习率调度
#
# BERT 用的是 `linear`。如今语言模型的做法常常衰减到一个下限而不是 0，或者保持学习率不变、只在最后衰减
# （`common/train/optim.py`，S_w 为预热步数，S 为总步数，r 为下限占 eta_max 的比例；名字与 transformers
# 相同，命令行上用 `--lr_scheduler_kwargs`）：
#
#     cosine              eta_s = eta_max * (1 + cos(pi p)) / 2                  p = (s - S_w) / (S - S_w)
#     cosine_with_min_lr  eta_s = eta_max * (r + (1 - r) (1 + cos(pi p)) / 2)    {"min_lr_rate": r}
#     warmup_stable_decay eta_s = eta_max * (r + (1 - r) a(s / S_w))  当 s < S_w，然后为 eta_max，在最后
#                         D 步为 eta_max * (r + (1 - r) d(q))，q = (s - (S - D)) / D   {"num_decay_steps": D}
#                         （a、d：线性、余弦或 1-sqrt 斜坡；默认为余弦衰减）
#
# 每个阶段都从前一阶段结束的地方开始，预热之后没有一个低于 r * eta_max。

# %%
from common.train.optim import get_scheduler

curves = {"linear": None, "cosine": None, "cosine_with_min_lr": {"min_lr_rate": 0.1},
          "warmup_stable_decay": {"num_decay_steps": 30, "min_lr_ratio": 0.1}}
for name, kwargs in curves.items():
    schedule = get_scheduler(name, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, 100, kwargs)
    rates = [schedule.lr_lambdas[0](s) for s in range(101)]
    bars = "".join(" .:-=+*#%@"[min(9, int(rates[s] * 9.999))] for s in range(0, 101, 4))
    print(f"{name:>20}  |{bars}|  s=50: {rates[50]:.3f}  end: {rates[100]:.3f}")
    if kwargs:
        assert min(rates[10:]) >= 0.1 - 1e-12, f"{name} went below its floor: {min(rates[10:])}"

# %% [markdown]
# ## 训练机制，每项一个检查
#
# 下面的 Trainer 除了 `loss.backward()` 之外，对每一步还做四件事。每件事都是一行算术；这里每一项都在
# 小到可以跟着算的数字上检查（`common/train/trainer.py` 的文档字符串写明了一步的内容；
# `docs/notation.md` 写明了符号）。
#
# **预热。** 在最初的 `S_w` 步中学习率线性上升，`eta_s = eta_max s / S_w`：在第 0 步，Adam 的矩估计只由一个
# 梯度构成，全尺寸的一步会走在噪声上。
#
# **解耦的权重衰减**（AdamW，Loshchilov and Hutter 2019）。带 L2 惩罚的 Adam 把 `lambda theta` 加到
# 梯度上，然后 Adam 的归一化 `m^ / sqrt(v^)` 像对待任何梯度一样重新缩放它：一个没有数据梯度的权重会以
# 完整的速率 `eta` 被拉向 0，无论 `lambda` 是多少。AdamW 把衰减从梯度中拿出来：
# `theta <- theta - eta (m^ / (sqrt(v^) + eps) + lambda theta)`，所以拉力恰好是 `eta lambda theta`。
# Trainer 只对权重矩阵做衰减，不对偏置或 LayerNorm 做。
#
# **裁剪。** `g <- g min(1, g_max / ||g||)`，`||g||` 是所有梯度合在一起的范数：一个坏批次不能迈出
# 巨大的一步，正常的批次则不受影响。
#
# **先预测，再运行。** 一个权重 `theta = 1`，其数据梯度为 0，`eta = 0.1`，`lambda = 0.01`，走一步。
# 用 AdamW 它落在哪里？用 Adam 加 L2 惩罚呢？

# %%
from common.nn.losses import IGNORE_INDEX, cross_entropy

warm = get_scheduler("linear", torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 10, 100)
warm_rates = [warm.lr_lambdas[0](s) for s in range(11)]
print("warm-up, eta_s / eta_max for s = 0..10:", [round(r, 2) for r in warm_rates])
assert all(abs(warm_rates[s] - s / 10) < 1e-12 for s in range(11))

landed = {}
for name, make in (("AdamW", lambda p: torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)),
                   ("Adam + L2", lambda p: torch.optim.Adam([p], lr=0.1, weight_decay=0.01))):
    theta = torch.nn.Parameter(torch.ones(1))
    optimizer = make(theta)
    theta.grad = torch.zeros(1)  # no data gradient at all
    optimizer.step()
    landed[name] = float(theta.detach())
    print(f"{name:>10}: theta 1 -> {landed[name]:.4f}")
assert abs(landed["AdamW"] - (1 - 0.1 * 0.01)) < 1e-6  # exactly eta * lambda * theta
assert abs(landed["Adam + L2"] - (1 - 0.1)) < 1e-4  # the penalty normalised into a full-size step

grads = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]  # norms 5 and 0.5
params = [torch.nn.Parameter(torch.zeros(2)) for _ in grads]
for p, g in zip(params, grads):
    p.grad = g.clone()
norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)  # what the Trainer calls
expected = [g * min(1.0, 1.0 / float(torch.cat(grads).norm())) for g in grads]
print(f"clipping: ||g|| = {float(norm):.3f} -> {float(torch.cat([p.grad for p in params]).norm()):.3f}")
assert all(torch.allclose(p.grad, e) for p, e in zip(params, expected))

# %% [markdown]
# AdamW 把权重移动了 `eta lambda = 0.001`；Adam + L2 移动了整个 `eta = 0.1`：它的衰减取决于梯度的尺度，
# 而不取决于 `lambda`。（裁剪把*两个*张量都缩放了 `1 / 5.02`：范数是在所有参数上合起来算的。）
#
# **梯度累积**在一次优化器步骤之前运行 `k` 个微批次，用于放不进内存的批次。只有当每个微批次的平均损失
# 按它在标签单元中所占的份额 `n_i / sum_j n_j` 加权时，它才等于一个大批次：对 MLM 而言，不同微批次中
# 被掩码的词元数不同，朴素的 `L_i / k` 会给出错误的梯度。Trainer 使用这些份额
# （`trainer.py`：`(L_i * n_i / sum_j n_j).backward()`）：

# %%
_setup.seed(0)
probe = torch.nn.Linear(8, 5)
inputs = torch.randn(16, 8)
targets = torch.randint(5, (16,))
targets[torch.rand(16) < 0.5] = IGNORE_INDEX  # like MLM: many rows carry no label
halves = [slice(0, 8), slice(8, 16)]
units = [int((targets[h] != IGNORE_INDEX).sum()) for h in halves]


def gradient(weights):
    probe.zero_grad()
    for h, w in zip(halves, weights):
        (cross_entropy(probe(inputs[h]), targets[h]) * w).backward()
    return probe.weight.grad.clone()


probe.zero_grad()
cross_entropy(probe(inputs), targets).backward()  # one big batch, mean over its labelled rows
big = probe.weight.grad.clone()
shares = gradient([n / sum(units) for n in units])
naive = gradient([0.5, 0.5])
print(f"labelled rows per micro-batch: {units}")
print(f"max |big batch - accumulated with shares n_i / sum n_j|: {float((big - shares).abs().max()):.2e}")
print(f"max |big batch - accumulated with L_i / k|            : {float((big - naive).abs().max()):.2e}")
assert torch.allclose(big, shares, atol=1e-6)

# %% [markdown]
# ## 用 Trainer 训练
#
# `TrainingArguments` 用 transformers 的参数名描述训练方案；`Trainer` 运行循环：从数据集取批次，
# 组批器（collator，把若干样本拼成一个批次的函数）为每个批次生成新的 80/10/10 掩码（所以模型从不会两次见到同样的空），`loss.backward()`，按范数 1
# 裁剪梯度，一步 AdamW，一步调度，每 `logging_steps` 步记一条日志。权重衰减（0.01）只作用于权重矩阵，
# 不作用于偏置和 LayerNorm（`common/train/optim.py`）。
#
# 一个回调（`demo/stages.py:HeldoutEvaluation`）在第一步之前以及每 `eval_every` 步给留出句对打分，每次
# 用相同的掩码，并分别记录 MLM 损失、MLM 准确率和 NSP 准确率：训练损失只是它们的和。

# %%
steps = 150 if QUICK else 6000
eval_every = 50 if QUICK else 500
args = TrainingArguments(output_dir=str(_setup.OUT / "06_run"), overwrite_output_dir=True, save_strategy="no",
                         max_steps=steps, per_device_train_batch_size=32, learning_rate=2e-3,
                         warmup_steps=100, lr_scheduler_type="linear", weight_decay=0.01,
                         logging_steps=max(1, steps // 100), seed=0)


def heldout_scores(m):
    """MLM loss / accuracy and NSP accuracy on the held-out pairs, fixed masks (seed 0)."""
    return evaluate_pretraining(m, heldout_pairs, lambda: DataCollatorForLanguageModeling(tokenizer, seed=0))


trainer = Trainer(model, args, train_dataset=train_pairs,
                  data_collator=WithSwitches(DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0),
                                             mlm_logits_at_masked_only=True),
                  callbacks=[HeldoutEvaluation(heldout_scores, eval_every)])
output = trainer.train()
print(f"trained {output.global_step} steps; mean training loss {output.training_loss:.3f}")

# %% [markdown]
# ## 曲线
#
# `trainer.state.log_history` 保存每一条日志记录（同样的行也在 `06_run/log.jsonl` 中）。训练损失是
# `L_MLM + L_NSP`；留出集的记录把它拆成各个部分。

# %%
history = trainer.state.log_history
train_curve = [(r["step"], r["loss"]) for r in history if "loss" in r]
lr_curve = [(r["step"], r["learning_rate"]) for r in history if "learning_rate" in r]
heldout = [r for r in history if "heldout_mlm_loss" in r]
print(" step  held-out L_MLM  MLM accuracy  NSP accuracy")
for r in heldout:
    print(f"{r['step']:>5}  {r['heldout_mlm_loss']:>14.3f}  {r['heldout_mlm_accuracy']:>12.3f}  "
          f"{r['heldout_nsp_accuracy']:>12.3f}")
first, last = heldout[0], heldout[-1]
print(f"before training: L_MLM {first['heldout_mlm_loss']:.3f} (ln V = {math.log(V):.3f}), "
      f"NSP accuracy {first['heldout_nsp_accuracy']:.3f} (a coin: 0.5)")
assert abs(first["heldout_mlm_loss"] - math.log(V)) < 0.5, "an untrained model should guess about uniformly"
assert last["heldout_mlm_loss"] < first["heldout_mlm_loss"] - 0.5, "the held-out MLM loss should fall"

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(*zip(*train_curve), label="training L = L_MLM + L_NSP")
    axes[0].plot([r["step"] for r in heldout], [r["heldout_mlm_loss"] for r in heldout], "o-",
                 label="held-out L_MLM")
    axes[0].axhline(math.log(V), color="grey", linestyle=":", label="ln V (uniform guess)")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot([r["step"] for r in heldout], [r["heldout_mlm_accuracy"] for r in heldout], "o-",
                 label="MLM accuracy (masked words)")
    axes[1].plot([r["step"] for r in heldout], [r["heldout_nsp_accuracy"] for r in heldout], "o-",
                 label="NSP accuracy (pairs)")
    axes[1].axhline(0.5, color="grey", linestyle=":", label="a coin")
    axes[1].set_xlabel("step")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    axes[2].plot(*zip(*lr_curve), ".-")
    axes[2].set_xlabel("step")
    axes[2].set_title(f"learning rate: {args.warmup_steps} warm-up steps, linear decay", fontsize=10)
    fig.suptitle("Pre-training a tiny BERT (held-out scores on stories it never trained on)")
    fig.tight_layout()
    _setup.save_plot(fig, "06_pretraining_curves.png")

# %% [markdown]
# ## 它学到了什么？完形填空
#
# MLM 头在一个 `[MASK]` 处为每个词 `v` 给出 `p(v | x~)`。训练过的模型会把适合这个空位的词排在前面：
# "to bake the" 之后是面包店里的东西，"felt" 之后是表示感受的词。（快速模式的短暂运行之后，猜测大多
# 仍是高频词。）

# %%
model.eval()
probes = ["One day, she went to the bakery to bake the [MASK].",
          "Finally, Tom went home and felt [MASK].",
          "The soup was superb and [MASK]."]
with torch.no_grad():
    for text in probes:
        enc = tokenizer(text, return_tensors="pt")
        logits = model(**enc).prediction_logits[0]  # (T, V): no labels, so every position
        position = enc["input_ids"][0].tolist().index(tokenizer.mask_token_id)
        probs = torch.softmax(logits[position], dim=-1)
        top = probs.topk(5)
        guesses = ", ".join(f"{tokenizer.convert_ids_to_tokens([i])[0]} {p:.2f}"
                            for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{text:<52} -> {guesses}")

# %% [markdown]
# ## 它学到了什么？同一种情绪的词一起移动
#
# 生成器使用 40 个褒义和 40 个贬义的形容词，所在的上下文会透露它们的情绪（"superb and neat"、
# "..., so she frowned"）。为了预测它们，模型必须区分这两组词，这体现在词元嵌入 `E_token` 上：同一
# 情绪的两个形容词之间的平均余弦相似度，会变得比情绪相反的两个之间更大。教程 07 依赖这一点：在*一半*
# 形容词上微调的分类器，之后也能处理另一半。`demo/corpus.py` 的文档字符串记录了这两组词是在这一方案
# 训练 2000-3000 步之后相当突然地形成的，而 `make demo` 会训练 6000 步。

# %%
E = model.bert.embeddings.word_embeddings.weight.detach()  # (V, H)
E = E - E.mean(dim=0)  # remove the direction every word shares, so cosines compare what differs
E = E / E.norm(dim=-1, keepdim=True)
pos = torch.tensor(tokenizer.convert_tokens_to_ids(list(demo_data.POSITIVE_WORDS)))
neg = torch.tensor(tokenizer.convert_tokens_to_ids(list(demo_data.NEGATIVE_WORDS)))


def mean_cosine(a, b):
    """Mean of cos(E_i, E_j) over pairs i in a, j in b, i != j."""
    sims = E[a] @ E[b].T  # (|a|, |b|)
    if a is b:
        return float((sims.sum() - sims.diagonal().sum()) / (len(a) * (len(a) - 1)))
    return float(sims.mean())


same = (mean_cosine(pos, pos) + mean_cosine(neg, neg)) / 2
opposite = mean_cosine(pos, neg)
print(f"mean cosine: same mood {same:.3f}, opposite moods {opposite:.3f}, gap {same - opposite:+.3f}")
word = "superb"
sims = E @ E[tokenizer.convert_tokens_to_ids([word])[0]]  # (V,)
nearest = [tokenizer.convert_ids_to_tokens([i])[0] for i in sims.topk(8).indices.tolist()][1:]
print(f"nearest to {word!r}: {', '.join(nearest)}")

# %% [markdown]
# ## 保存模型
#
# `save_pretrained(folder)` 写出 `config.json` 和 `model.safetensors`（原子地写入：崩溃只会留下旧的
# 一对或新的一对，绝不会混在一起；`common/hub/pretrained.py`）；分词器把它的 `vocab.txt` 写在旁边。
# 教程 07 用 `BertForSequenceClassification.from_pretrained` 加载这个目录。

# %%
folder = _setup.OUT / "06_bert_pretrained"
model.save_pretrained(folder)
tokenizer.save_pretrained(folder)
print(f"saved to {folder}: {sorted(p.name for p in folder.iterdir())}")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    again = BertForPreTraining.from_pretrained(folder).eval()
enc = tokenizer(probes[0], return_tensors="pt")
with torch.no_grad():
    same_logits = torch.equal(again(**enc).prediction_logits, model(**enc).prediction_logits)
print("reloaded model gives the same logits:", same_logits)
assert same_logits

# %% [markdown]
# ## 试一试
#
# - 设 `hidden_dropout_prob=0.1`，比较留出集上的数字、情绪差距以及教程 07 的结果。
# - 训练 6000 步（`make demo` 就是这样做的），看上面的情绪差距变大。
#
# ## 轮到你了：练习 `mlm_masking`、`mlm_loss`、`nsp_pairs`、`nsp_loss`
#
# 本教程背后的练习是教程 04 和 05 的那些：它们在你的副本中通过之后（`make exercises`，然后
# `cd ../student && make grade`），在那里运行本教程：它训练的就是你的代码，得到的数字也出自你的实现。
