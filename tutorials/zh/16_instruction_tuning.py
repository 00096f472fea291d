# %% [markdown]
# # 16 · 指令微调：从续写文本到助手
#
# 在文本上训练的 GPT（教程 08）会续写文本。为了让它*回答*，我们在按固定模板写成的对话上微调它，并且只对
# 回答部分打分：
#
#     <|user|> reverse: abc <|end|> <|assistant|> cba <|end|>
#
#     L = -(1/n_A) sum over the n_A assistant tokens of log p(x_t | x_<t)
#
# 提示是现成给出的，模型不必预测它：它的标签是 -100。模型要学的是 `<|assistant|>` 之后该写什么，以及回答
# 写完时输出 `<|end|>`——对话就在那里停止生成。这就是监督微调（SFT），几乎每个对话模型在预训练之后都从
# 这一步开始（InstructGPT，Ouyang et al. 2022）。
#
# 代码：`common/data/instructions.py:encode_conversation`、`common/data/instructions.py:assistant_labels`、
# `common/data/instructions.py:DataCollatorForChat`、`minigpt/sft.py:main`、`minigpt/chat.py:main`。
# 测试：`tests/test_instructions.py`、`tests/test_sft_chat.py`。`TUTORIAL_QUICK=1`：几秒钟，回答仍然是错的。

# %%
import _setup

import random
import tempfile

import torch

from common.data.instructions import (ChatTokenizer, DataCollatorForChat, IGNORE_INDEX, InstructionDataset,
                                      assistant_labels, encode_conversation)
from common.text.char import CharTokenizer
from common.train.args import TrainingArguments
from common.train.trainer import Trainer
from minigpt import GPT, GPTConfig
from minigpt.sft import answer

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## 模板与标签掩码
#
# 这四个标记是排在分词器词表之后的新词元，所以任何文本都冒充不了它们。下面列出一段对话的每个词元及其标签：
# 标签为 -100 处显示为 `.`。

# %%
LETTERS = "abcdefgh"
tokenizer = ChatTokenizer(CharTokenizer(sorted(set(LETTERS + " :reversortcpy"))))
messages = [{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}]
ids = encode_conversation(tokenizer, messages)
labels = assistant_labels(ids, tokenizer.assistant_id, tokenizer.end_id)
for token, label in zip(ids, labels):
    print(f"{tokenizer.decode([token])!r:16} label {'.' if label == IGNORE_INDEX else tokenizer.decode([label])!r}")

# %% [markdown]
# **先预测，再运行。** 一段两轮的对话：“reverse: abc” -> “cba”，然后 “copy: de” -> “de”。它有多少个词元
# 带标签（也就是要学的）？标记词元也要数上。

# %%
two_turns = messages + [{"role": "user", "content": "copy: de"}, {"role": "assistant", "content": "de"}]
ids2 = encode_conversation(tokenizer, two_turns)
labelled = [tokenizer.decode([t]) for t, y in zip(ids2, assistant_labels(ids2, tokenizer.assistant_id,
                                                                            tokenizer.end_id)) if y != IGNORE_INDEX]
print(f"{len(labelled)} of {len(ids2)} tokens learned:", labelled)
assert len(labelled) == len("cba") + 1 + len("de") + 1, "each answer and the <|end|> that closes it"

# %% [markdown]
# 每个回答的字符，加上结束这一轮的 `<|end|>`：3 + 1 + 2 + 1 = 7。`<|assistant|>` 标记不学（提示里总会给出它），
# 用户那一轮的 `<|end|>` 也不学。
#
# ## 一个任务：关于字符串的三种指令
#
# 对一个 3-6 个字母的词做 `reverse`、`sort` 和 `copy`。留出的词从不出现在训练中。`DataCollatorForChat` 是
# 组批器（collator）：Trainer 调用它把一组样本拼成一个批次（这里：`input_ids` 用填充 id 补齐，`labels` 用 -100 补齐）。

# %%
def make_record(rng):
    word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
    task = rng.choice(["reverse", "sort", "copy"])
    out = word[::-1] if task == "reverse" else "".join(sorted(word)) if task == "sort" else word
    return [{"role": "user", "content": f"{task}: {word}"}, {"role": "assistant", "content": out}]


rng = random.Random(0)
records = [make_record(rng) for _ in range(400 if QUICK else 4000)]
test = [make_record(random.Random(100 + i)) for i in range(12 if QUICK else 100)]
seen = {r[0]["content"] for r in records}
test = [r for r in test if r[0]["content"] not in seen]
train_set = InstructionDataset(tokenizer, [(r, f"record {i}") for i, r in enumerate(records)], max_length=32)
batch = DataCollatorForChat(tokenizer.pad_token_id)([train_set[0], train_set[1]])
print({k: tuple(v.shape) for k, v in batch.items()}, "assistant tokens in the batch:",
      int((batch["labels"] != IGNORE_INDEX).sum()))

# %% [markdown]
# ## 之前与之后
#
# 一个从随机权重开始的小 GPT，然后做 SFT。完全匹配 = 到 `<|end|>` 为止的回答与期望的字符串完全相同。

# %%
def exact_match(model, examples):
    return sum(answer(model, tokenizer, r[:1], max_new_tokens=8) == r[1]["content"] for r in examples) / len(examples)


_setup.seed(0)
model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=len(tokenizer)))
print("before:", [answer(model, tokenizer, r[:1], max_new_tokens=8) for r in test[:3]],
      f"exact match {exact_match(model, test):.2f}")
with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(output_dir=out, max_steps=10 if QUICK else 1200, learning_rate=3e-3,
                             per_device_train_batch_size=32, warmup_steps=20, logging_steps=200,
                             save_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
    Trainer(model, args, train_dataset=train_set, data_collator=DataCollatorForChat(tokenizer.pad_token_id)).train()
for r in test[:5]:
    print(f"  {r[0]['content']:16} -> {answer(model, tokenizer, r[:1], max_new_tokens=8)!r:10} "
          f"(expected {r[1]['content']!r})")
print(f"after SFT: exact match {exact_match(model, test):.2f} on {len(test)} held-out prompts")

# %% [markdown]
# 在命令行上做同样的事，可以用任何 GPT 目录和 Alpaca 格式的记录，然后对话：
#
#     python -m minigpt.sft --model_name_or_path out/base --train_file ../shared/data/instructions/instruction-data.json \
#         --output_dir out/sft --max_time 300
#     python -m minigpt.chat --model_name_or_path out/sft
#
# docs/results/lora_sft.md 测量了预训练给这一步带来了什么。
#
# ## 轮到你了：练习 `assistant_labels`
#
# 在学生副本中（`make exercises`），`assistant_labels`（`common/data/instructions.py`）会抛出
# `NotImplementedError`。按上面的标签规则写出它（学每个助手词元以及结束这一轮的 `<|end|>`，其余全部为 -100），
# 然后评分：
#
#     python -m tutorials.exercises make --out ../student --only assistant_labels
#     cd ../student && python -m tutorials.exercises grade --only assistant_labels

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["assistant_labels"].pytest_command())
print("hint:", REGISTRY["assistant_labels"].hint)
