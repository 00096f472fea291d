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
# `common/data/instructions.py:DataCollatorForChat`, `common/nn/dpo.py:dpo_loss`, `minigpt/train.py:main`,
# `minigpt/sft.py:main`, `minigpt/dpo.py:main`, `minigpt/chat.py:main`. Tests: `tests/test_instructions.py`,
# `tests/test_sft_chat.py`, `tests/test_dpo.py`, `tests/test_dpo_cli.py`. `TUTORIAL_QUICK=1`: under a
# minute, and answers that are still wrong.

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
# ## Stage 1: pretraining on text
#
# The base model reads plain lines of text ("reverse: abc -> cba."), never the template. It learns
# the string operations as *text*: given "reverse: abc" it continues the text, arrow, answer, full
# stop and the next line included. It has no notion of a turn that ends.

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
# ## Stage 2: SFT
#
# The same model, tuned on the template's conversations (`python -m minigpt.sft`): now it answers
# after `<|assistant|>` and stops at `<|end|>`.

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
# ## Stage 3: DPO
#
# Preference pairs: the right answer is chosen; the rejected one is a plausible slip, the word
# copied unchanged (or reversed when it should be copied). First the loss on numbers: at pi = pi_ref
# every margin is 0 and L = log 2; a pair the policy already favours more than the reference costs less.

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
# `eval_rewards/accuracies` is the share of held-out pairs whose chosen answer gained more
# (relative to the reference) than the rejected one; `eval_preference_accuracy` the share the model
# itself now ranks right, before (`init_`) and after. The same on the command line, with any GPT
# folder, Alpaca-style records and rasbt's preference file, then a chat in the terminal or the browser:
#
#     python -m minigpt.sft --model_name_or_path out/base --train_file ../shared/data/instructions/instruction-data.json \
#         --output_dir out/sft --max_time 300
#     python -m minigpt.dpo --model_name_or_path out/sft \
#         --train_file ../shared/data/instructions/instruction-data-with-preference.json --output_dir out/dpo
#     python -m minigpt.chat --model_name_or_path out/dpo --web
#
# docs/results/lora_sft.md measures what pretraining buys SFT; docs/results/post_training.md the DPO
# and GRPO stages.
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
