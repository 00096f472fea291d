# %% [markdown]
# # 16 · Instruction tuning: from a text continuer to an assistant
#
# A GPT trained on text (tutorial 08) continues text. To make it *answer*, we fine-tune it on
# conversations written in a fixed template, and score only the answers:
#
#     <|user|> reverse: abc <|end|> <|assistant|> cba <|end|>
#
#     L = -(1/n_A) sum over the n_A assistant tokens of log p(x_t | x_<t)
#
# The prompt is given, never predicted: its labels are -100. The model learns what follows
# `<|assistant|>`, and to emit `<|end|>` when the answer is complete, which is where a chat stops
# generating. This is supervised fine-tuning (SFT), the first step after pretraining of every chat
# model (InstructGPT, Ouyang et al. 2022).
#
# Code: `common/data/instructions.py:encode_conversation`, `common/data/instructions.py:assistant_labels`,
# `common/data/instructions.py:DataCollatorForChat`, `minigpt/sft.py:main`, `minigpt/chat.py:main`.
# Tests: `tests/test_instructions.py`, `tests/test_sft_chat.py`. `TUTORIAL_QUICK=1`: a few seconds,
# and answers that are still wrong.

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
# ## The template and the label mask
#
# The four markers are new tokens placed after the tokenizer's vocabulary, so no text can forge
# them. Below, each token of one conversation with its label: `.` where the label is -100.

# %%
LETTERS = "abcdefgh"
tokenizer = ChatTokenizer(CharTokenizer(sorted(set(LETTERS + " :reversortcpy"))))
messages = [{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}]
ids = encode_conversation(tokenizer, messages)
labels = assistant_labels(ids, tokenizer.assistant_id, tokenizer.end_id)
for token, label in zip(ids, labels):
    print(f"{tokenizer.decode([token])!r:16} label {'.' if label == IGNORE_INDEX else tokenizer.decode([label])!r}")

# %% [markdown]
# **Predict, then run.** A conversation of two exchanges, "reverse: abc" -> "cba", then
# "copy: de" -> "de". How many of its tokens get a label (are learned)? Count the markers too.

# %%
two_turns = messages + [{"role": "user", "content": "copy: de"}, {"role": "assistant", "content": "de"}]
ids2 = encode_conversation(tokenizer, two_turns)
labelled = [tokenizer.decode([t]) for t, y in zip(ids2, assistant_labels(ids2, tokenizer.assistant_id,
                                                                            tokenizer.end_id)) if y != IGNORE_INDEX]
print(f"{len(labelled)} of {len(ids2)} tokens learned:", labelled)
assert len(labelled) == len("cba") + 1 + len("de") + 1, "each answer and the <|end|> that closes it"

# %% [markdown]
# Each answer's characters and the `<|end|>` that closes it: 3 + 1 + 2 + 1 = 7. The `<|assistant|>`
# markers are not learned (the prompt always supplies them), and neither is the user's `<|end|>`.
#
# ## A task: three instructions about a string
#
# `reverse`, `sort` and `copy` a word of 3-6 letters. The held-out words never appear in training.
# `DataCollatorForChat` is the *collator*: the function the Trainer calls to turn a list of
# examples into one batch (here: pad `input_ids` with the pad id and `labels` with -100).

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
# ## Before and after
#
# A small GPT from random weights, then SFT. Exact match = the answer up to `<|end|>` is exactly
# the expected string.

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
# The same on the command line, with any GPT folder and Alpaca-style records, then a chat:
#
#     python -m minigpt.sft --model_name_or_path out/base --train_file ../shared/data/instructions/instruction-data.json \
#         --output_dir out/sft --max_time 300
#     python -m minigpt.chat --model_name_or_path out/sft
#
# docs/results/lora_sft.md measures what pretraining buys this step.
#
# ## Your turn: exercise `assistant_labels`
#
# In the student copy (`make exercises`), `assistant_labels` (`common/data/instructions.py`) raises
# `NotImplementedError`. Write it from the label rule above (learn each assistant token and the
# `<|end|>` closing its turn, -100 everywhere else), then grade:
#
#     python -m tutorials.exercises make --out ../student --only assistant_labels
#     cd ../student && python -m tutorials.exercises grade --only assistant_labels

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["assistant_labels"].pytest_command())
print("hint:", REGISTRY["assistant_labels"].hint)
