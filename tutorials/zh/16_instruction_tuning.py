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
# 然后是偏好微调。给定提示 x、被选中的回答 y_w 和被拒绝的回答 y_l，DPO（Rafailov et al. 2023）相对于一个冻结的
# 参考模型 pi_ref（SFT 模型）提高被选中回答的概率、降低被拒绝回答的概率：
#
#     L_DPO = -log sigmoid(beta ((log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))))
#
# （`dpo_loss`；log pi(y|x) 只对回答的词元对数概率求和。）下面是每个对话模型都走的流程，只是规模很小：
# 在文本上预训练、SFT、DPO，每个阶段之后问同样的提示。
#
# 代码：`common/data/instructions.py:encode_conversation`、`common/data/instructions.py:assistant_labels`、
# `common/data/instructions.py:DataCollatorForChat`、`common/nn/dpo.py:dpo_loss`、`minigpt/train.py:main`、
# `minigpt/sft.py:main`、`minigpt/dpo.py:main`、`minigpt/chat.py:main`。测试：`tests/test_instructions.py`、
# `tests/test_sft_chat.py`、`tests/test_dpo.py`、`tests/test_dpo_cli.py`。`TUTORIAL_QUICK=1`：不到一分钟，
# 回答仍然是错的。

# %%
import _setup

import json
import random
import tempfile
from pathlib import Path

import torch

from common.data.instructions import (ChatTokenizer, DataCollatorForChat, IGNORE_INDEX, InstructionDataset,
                                      assistant_labels, encode_conversation)
from common.nn.dpo import dpo_loss
from common.text.auto import load_tokenizer
from common.text.char import CharTokenizer
from minigpt import GPT
from minigpt.dpo import main as dpo_main
from minigpt.sft import answer
from minigpt.sft import main as sft_main
from minigpt.train import main as train_main

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
# ## 阶段 1：在文本上预训练
#
# 基础模型读的是纯文本行（"reverse: abc -> cba."），从未见过模板。它把字符串操作当作*文本*学会：给它
# "reverse: abc"，它就续写文本，箭头、答案、句号和下一行都写出来。它不知道一个轮次会结束。

# %%
def text_line(rng):
    (user, assistant) = make_record(rng)
    return f"{user['content']} -> {assistant['content']}."


work = Path(tempfile.mkdtemp())
text_rng = random.Random(1)
(work / "text.txt").write_text("\n".join(text_line(text_rng) for _ in range(3000 if QUICK else 20000)) + "\n",
                               encoding="utf-8")
write = lambda name, rows: (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
write("sft.jsonl", [{"messages": r} for r in records])
common = ["--use_cpu", "--disable_tqdm", "--seed", "0"]
train_main(["--train_file", str(work / "text.txt"), "--output_dir", str(work / "base"), "--config_overrides",
            "n_layer=2,n_head=4,n_embd=64,block_size=48", "--max_steps", "20" if QUICK else "1500",
            "--sample_tokens", "0", "--save_strategy", "no", "--bf16", "false", "--per_device_train_batch_size", "32",
            *common])
prompts = [r[:1] for r in test[:4]]
base = GPT.from_pretrained(work / "base")
base_tokenizer = load_tokenizer(work / "base")
for messages in prompts:
    ids = torch.tensor([base_tokenizer.encode(messages[0]["content"])])
    print(f"  base  {messages[0]['content']!r:16} -> {base_tokenizer.decode(base.generate(ids, 16)[0, ids.size(1):].tolist())!r}")

# %% [markdown]
# ## 阶段 2：SFT
#
# 同一个模型，在模板格式的对话上微调（`python -m minigpt.sft`）：现在它在 `<|assistant|>` 之后回答，
# 并在 `<|end|>` 处停止。

# %%
def show(stage, folder):
    model = GPT.from_pretrained(folder).eval()
    chat = ChatTokenizer.from_folder(folder, load_tokenizer(folder))
    for messages in prompts:
        print(f"  {stage:5} {messages[0]['content']:16} -> {answer(model, chat, messages, max_new_tokens=8)!r}")
    right = sum(answer(model, chat, r[:1], max_new_tokens=8) == r[1]["content"] for r in test)
    print(f"  {stage}: exact match {right / len(test):.2f} on {len(test)} held-out prompts")


sft_main(["--model_name_or_path", str(work / "base"), "--train_file", str(work / "sft.jsonl"), "--output_dir",
          str(work / "sft"), "--max_steps", "10" if QUICK else "300", "--learning_rate", "3e-3",
          "--per_device_train_batch_size", "32", "--validation_split_percentage", "0", *common])
show("sft", work / "sft")

# %% [markdown]
# ## 阶段 3：DPO
#
# 偏好对：正确答案被选中；被拒绝的是一个看似合理的失误——把单词原样照抄（或者在应该照抄时把它反转）。
# 先在数字上看损失：pi = pi_ref 时每个差值都是 0，L = log 2；策略比参考模型更偏向被选中回答的一对，损失更小。

# %%
beta = 0.1
zero = torch.zeros(2)
print(f"pi = pi_ref: L = {dpo_loss(zero, zero, zero, zero, beta):.4f} (log 2 = {torch.log(torch.tensor(2.0)):.4f})")
print(f"chosen +5 nats, rejected -5 nats vs the reference: L = "
      f"{dpo_loss(torch.tensor([5.0]), torch.tensor([-5.0]), torch.zeros(1), torch.zeros(1), beta):.4f}")


def slip(messages):
    task, word = messages[0]["content"].split(": ")
    return word[::-1] if task == "copy" else word


pairs = [{"prompt": r[0]["content"], "chosen": r[1]["content"], "rejected": slip(r)} for r in records
         if r[1]["content"] != slip(r)]
write("pairs.jsonl", pairs)
dpo_main(["--model_name_or_path", str(work / "sft"), "--train_file", str(work / "pairs.jsonl"), "--output_dir",
          str(work / "dpo"), "--beta", str(beta), "--max_steps", "5" if QUICK else "150", "--learning_rate", "1e-3",
          "--per_device_train_batch_size", "16", *common])
print({k: round(v, 3) for k, v in json.loads((work / "dpo" / "eval_results.json").read_text()).items()
       if k.startswith(("eval_rewards", "init_eval_preference", "eval_preference"))})
show("dpo", work / "dpo")

# %% [markdown]
# `eval_rewards/accuracies` 是留出的偏好对中，被选中回答（相对参考模型）涨得比被拒绝回答多的比例；
# `eval_preference_accuracy` 是模型自己现在排对的比例，训练前（`init_`）和训练后。命令行上的同样流程，
# 可以用任何 GPT 文件夹、Alpaca 格式的记录和 rasbt 的偏好文件，然后在终端或浏览器里对话：
#
#     python -m minigpt.sft --model_name_or_path out/base --train_file ../shared/data/instructions/instruction-data.json \
#         --output_dir out/sft --max_time 300
#     python -m minigpt.dpo --model_name_or_path out/sft \
#         --train_file ../shared/data/instructions/instruction-data-with-preference.json --output_dir out/dpo
#     python -m minigpt.chat --model_name_or_path out/dpo --web
#
# docs/results/lora_sft.md 测量预训练给 SFT 带来了什么；docs/results/post_training.md 测量 DPO 和 GRPO 阶段。
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
