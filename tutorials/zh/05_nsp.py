# %% [markdown]
# # 05 · 下一句预测与完整的预训练损失
#
# BERT 的第二个预训练任务（Devlin et al. 2019，第 3.1 节）教它理解句子之间的关系。每个训练样本是一对
# 文本片段：
#
#     [CLS] A [SEP] B [SEP]
#
# - **IsNext**（标签 0）：B 是同一文档中真正紧跟在 A 后面的文本；
# - **NotNext**（标签 1）：B 来自另一篇随机的文档。
#
# 两种句对各占一半。池化后的 `[CLS]` 向量 `c = tanh(H_L[0] W_p + b_p)`（教程 03；Devlin 等人写作 `C`）
# 上的一个小分类器预测标签，其损失是两个类别的交叉熵：
#
#     p(y | A, B) = softmax(c W_nsp + b_nsp)_y,        L_NSP = -log p(y | c)
#
# 同样的句对也会被掩码（教程 04），两个损失相加：
#
#     L = w_MLM * L_MLM + w_NSP * L_NSP            （BERT 中 w_MLM = w_NSP = 1）
#
# 其中 `L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~)` 来自教程 04，`L_NSP` 在批次中的句对上取平均：
# 两者都是均值。
#
# 代码：`common/data/language_modeling.py:TextDatasetForNextSentencePrediction`、`common/nn/losses.py`
# （`nsp_loss`、`pretraining_loss`）、`minibert/heads.py:BertForPreTraining`。测试：`tests/test_data.py`
# （`test_nsp_*`）、`tests/test_losses.py`、`tests/test_bert_model.py`。
#
# 运行：`python tutorials/zh/05_nsp.py`。

# %%
import _setup

import math
from collections import Counter

import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling, TextDatasetForNextSentencePrediction
from common.nn.losses import IGNORE_INDEX, log_softmax, mlm_loss, nsp_loss, pretraining_loss
from common.text.auto import BertTokenizer
from minibert import BertConfig, BertForPreTraining

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## 一个由文档组成的语料
#
# 输入格式是纯文本，**每行一个句子，文档之间空一行**。`demo.corpus.write_corpus` 写出这样一个由生成的
# 故事组成的文件；每个故事是一篇文档，讲一个主人公在一个地方的事，所以来自另一个故事的句子通常提到另一个
# 主人公和另一个地方——这正是 NSP 可以学到的线索。

# %%
corpus_path = demo_data.write_corpus(_setup.OUT / "05_nsp_corpus.txt",
                                     num_documents=60 if _setup.QUICK else 600, seed=0)
lines = corpus_path.read_text(encoding="utf-8").splitlines()
print(f"wrote {corpus_path}: {len(lines)} lines")
print(*lines[:14], sep="\n")

tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo_data.word_list())

# %% [markdown]
# ## 构造句对
#
# `TextDatasetForNextSentencePrediction(tokenizer, file, block_size, nsp_probability=0.5,
# short_seq_probability=0.1, seed=0)` 像 BERT 自己的数据脚本那样逐篇遍历文档：
#
# 1. 选一个目标长度 `t = block_size - 3`（为 `[CLS]` 和两个 `[SEP]` 留出位置），或者以概率
#    `short_seq_probability` 选一个随机的更短长度——这样模型也能见到短输入；
# 2. 把整句收集进一个块，直到它含有 `t` 个词元；
# 3. A = 块中的前 `k` 个句子，`k` 随机；
# 4. 以概率 `1 - nsp_probability` 取 B = 块中的其余部分（IsNext）；否则 B = 来自随机的**另一篇**文档的
#    句子（NotNext），块中未用到的句子放回去，留给下一个句对；
# 5. 从 A 和 B 中较长的那个的开头或结尾砍掉词元，直到句对能放进 `block_size`。

# %%
block_size = 48
dataset = TextDatasetForNextSentencePrediction(tokenizer, corpus_path, block_size=block_size,
                                               nsp_probability=0.5, short_seq_probability=0.1, seed=0)
print(f"{len(dataset.documents)} documents -> {len(dataset)} pairs")
print("one item:", {key: (tuple(value.shape), value.dtype) for key, value in dataset[0].items()})


def show(example):
    """[CLS] A [SEP] B [SEP] as text, with the label's name."""
    tokens = tokenizer.convert_ids_to_tokens(example["input_ids"].tolist())
    first_sep = tokens.index("[SEP]")
    label = int(example["next_sentence_label"])
    print(f"  label {label} = {'IsNext' if label == 0 else 'NotNext'}")
    print("  A:", " ".join(tokens[1:first_sep]))
    print("  B:", " ".join(tokens[first_sep + 1:-1]))


is_next = next(dataset[i] for i in range(len(dataset)) if dataset[i]["next_sentence_label"] == 0)
not_next = next(dataset[i] for i in range(len(dataset)) if dataset[i]["next_sentence_label"] == 1)
show(is_next)
show(not_next)

# %% [markdown]
# ## 分段：token_type_ids
#
# 模型会被告知哪些词元属于哪个片段：`token_type_ids` 对 `[CLS] A [SEP]` 为 0，对 `B [SEP]` 为 1。它选出
# 段嵌入表 `E_segment` 中的一行，加到每个词元的嵌入上（教程 03）。

# %%
tokens = tokenizer.convert_ids_to_tokens(is_next["input_ids"].tolist())
print(" ".join(f"{token}/{segment}" for token, segment in zip(tokens, is_next["token_type_ids"].tolist())))
n_a = is_next["input_ids"].tolist().index(tokenizer.sep_token_id) + 1  # [CLS] A [SEP]
expected = [0] * n_a + [1] * (len(tokens) - n_a)
print("token_type_ids == [0] * |[CLS] A [SEP]| + [1] * |B [SEP]|:", is_next["token_type_ids"].tolist() == expected)

# %% [markdown]
# ## 用数字看数据集
#
# 大约一半的句对是 NotNext，每个句对都能放进 `block_size`，而且大多数把它填满（较短的句对来自
# `short_seq_probability` 或文档的结尾）。

# %%
labels = Counter(int(dataset[i]["next_sentence_label"]) for i in range(len(dataset)))
lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
print(f"IsNext {labels[0]}, NotNext {labels[1]}: NotNext fraction {labels[1] / len(dataset):.3f} (asked: 0.5)")
print(f"lengths: max {max(lengths)} <= block_size {block_size}; "
      f"{sum(n >= block_size - 4 for n in lengths)} of {len(lengths)} within 4 tokens of it")
assert max(lengths) <= block_size

# %% [markdown]
# 较紧的 `block_size` 能显示截断：取 16 时，大多数句对会从较长片段的开头或结尾丢掉词元，所以一个片段可能
# 从句子中间开始或结束。模型因此不能指望片段总是干净地开始。

# %%
tight = TextDatasetForNextSentencePrediction(tokenizer, corpus_path, block_size=16, seed=0)
print(f"block_size 16: {len(tight)} pairs, longest {max(len(tight[i]['input_ids']) for i in range(len(tight)))} tokens")
for i in range(3):
    show(tight[i])

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_label = {0: [], 1: []}
    for i, n in enumerate(lengths):
        by_label[int(dataset[i]["next_sentence_label"])].append(n)
    ax.hist([by_label[0], by_label[1]], bins=range(0, block_size + 2, 2), label=["IsNext", "NotNext"],
            stacked=True)
    ax.axvline(block_size, color="grey", linestyle=":", label="block_size")
    ax.set_xlabel("tokens per pair")
    ax.set_ylabel("pairs")
    ax.legend()
    _setup.save_plot(fig, "05_nsp_pair_lengths.png")

# %% [markdown]
# ## 一个预训练批次
#
# `DataCollatorForLanguageModeling` 对句对做填充，把 `token_type_ids` 和 `next_sentence_label` 原样
# 传下去，并加上教程 04 的掩码语言模型加噪和 `labels`。这就是 `BertForPreTraining` 需要的全部。

# %%
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
batch = collator([dataset[i] for i in range(8)])
for key, value in batch.items():
    print(f"{key:<20} {tuple(value.shape)}")
print("next_sentence_label:", batch["next_sentence_label"].tolist())

# %% [markdown]
# ## 手算 L_NSP 和 L = w_MLM L_MLM + w_NSP L_NSP
#
# `BertForPreTraining` 返回用于 MLM 的 `prediction_logits` `(B, T, V)`、用于 NSP 的
# `seq_relationship_logits` `(B, 2)`，以及两者的加权和 `loss`。权重是配置字段 `mlm_alpha` 和
# `nsp_beta`。我们取 `w_MLM = 1`、`w_NSP = 0.5`，以便区分这两项：

# %%
config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=64, mlm_alpha=1.0, nsp_beta=0.5)
model = BertForPreTraining(config).eval()
out = model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
            labels=batch["labels"], next_sentence_label=batch["next_sentence_label"])
print("prediction_logits      ", tuple(out.prediction_logits.shape))
print("seq_relationship_logits", tuple(out.seq_relationship_logits.shape))

y = batch["next_sentence_label"]  # (B,)
log_p = log_softmax(out.seq_relationship_logits)  # (B, 2)
L_NSP = -log_p[torch.arange(len(y)), y].mean()  # -log p(y | c), averaged over the batch
I = batch["labels"] != IGNORE_INDEX
L_MLM = -log_softmax(out.prediction_logits)[I, batch["labels"][I]].mean()
L = config.mlm_alpha * L_MLM + config.nsp_beta * L_NSP
print(f"L_NSP by hand {float(L_NSP):.4f}   nsp_loss {float(nsp_loss(out.seq_relationship_logits, y)):.4f}"
      f"   (log 2 = {math.log(2):.4f}: an untrained model guesses 50/50)")
print(f"L_MLM by hand {float(L_MLM):.4f}   mlm_loss {float(mlm_loss(out.prediction_logits, batch['labels'])):.4f}")
L_lib = pretraining_loss(out.prediction_logits, batch["labels"], out.seq_relationship_logits, y,
                         alpha=config.mlm_alpha, beta=config.nsp_beta)
print(f"L = {config.mlm_alpha} * L_MLM + {config.nsp_beta} * L_NSP = {float(L):.4f}"
      f"   pretraining_loss {float(L_lib):.4f}   model's loss {float(out.loss):.4f}")
assert torch.allclose(L, out.loss, rtol=1e-5)

# %% [markdown]
# `tests/test_bert_model.py::test_pretraining_loss_is_alpha_mlm_plus_beta_nsp` 和
# `tests/test_losses.py::test_pretraining_loss_is_linear_in_alpha_and_beta_in_value_and_gradient`
# 对其他权重检查这个关系，梯度也检查。在这些批次上训练是教程 06 的内容。
#
# ## 先预测，再运行：nsp_beta = 0
#
# 后来的模型（RoBERTa，Liu et al. 2019）完全去掉了 NSP。设 `nsp_beta = 0`，对 `L` 做一次反向传播。
# **哪些参数完全得不到梯度？** 只有 NSP 分类器 `cls.seq_relationship` 吗？还有别的吗？先猜，再运行。

# %%
no_nsp = BertForPreTraining(BertConfig.from_dict(config.to_dict(), nsp_beta=0.0)).eval()
no_nsp.load_state_dict(model.state_dict())
with torch.enable_grad():  # this tutorial computes without gradients elsewhere
    no_nsp(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
           labels=batch["labels"], next_sentence_label=batch["next_sentence_label"]).loss.backward()
silent = sorted(name for name, p in no_nsp.named_parameters() if p.grad is None or not p.grad.any())
print("parameters with zero gradient when nsp_beta = 0:", silent)
assert silent == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                  "cls.seq_relationship.bias", "cls.seq_relationship.weight"], silent

# %% [markdown]
# 池化层也得不到：`c = tanh(H_L[0] W_p + b_p)` 只喂给 NSP 分类器，而 MLM 读取的是 `H_L` 中各词元的行，
# 从不读 `c`。所以在 `w_NSP = 0` 时，预训练检查点中的池化层仍是它的随机初始化，在它之上微调的分类器
# （教程 07）是从一个没训练过的层开始的；这就是为什么有些做法换一种池化方式（取 `H_L` 的均值）。
#
# ## 轮到你了：练习 `nsp_pairs` 和 `nsp_loss`
#
# - `nsp_pairs`：`common/data/language_modeling.py` 中 `TextDatasetForNextSentencePrediction` 构造句对的
#   方法（`_random_other_document`、`_create_examples_from_document`、`_truncate_seq_pair`），按照上面的
#   第 1-5 步。测试检查每个句对都放得下，IsNext 的 B 确实紧跟在 A 后面，NotNext 的 B 来自另一篇文档。
# - `common/nn/losses.py` 中的 `nsp_loss`：在 `(B, 2)` 的 logits 上计算两类交叉熵。
#
#     python -m tutorials.exercises make --out ../student --only nsp_pairs --only nsp_loss
#     cd ../student && python -m tutorials.exercises grade --only nsp_pairs --only nsp_loss

# %%
from tutorials.exercises import REGISTRY

for name in ("nsp_pairs", "nsp_loss"):
    print(f"{name:<10} {REGISTRY[name].pytest_command()}")
