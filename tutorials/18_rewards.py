# %% [markdown]
# # 18 · Rewards: reinforcement learning when the answer can be checked (GRPO, pass@k)
#
# After SFT (tutorial 16) a model imitates answers. For some tasks we can do better than imitate:
# we can *check* an answer (arithmetic, a unit test, a proof checker) and reward the model for being
# right. GRPO (Shao et al. 2024, used by DeepSeek-R1 and nanochat's RL stage) is the simplest
# policy-gradient method for that: for each prompt it samples G answers, rewards each one, and
# compares every answer with the others in its group:
#
#     A_i = (r_i - mean_j r_j) / (std_j r_j + eps)                     group_advantages
#     L   = -(1/G) sum_i (1/|o_i|) sum_t min(rho A_i, clip(rho, 1 - e, 1 + e) A_i)
#
# with rho = pi(o_t | ...) / pi_old(o_t | ...), the probability of the token now over its probability
# when it was sampled. No value network, no reward model: the group is the baseline.
#
# How good is a model that may try k times? pass@k, the probability that at least one of k samples
# is right, estimated without bias from n >= k samples of which c are right (Chen et al. 2021):
#
#     pass@k = 1 - C(n - c, k) / C(n, k)                                 pass_at_k
#
# Code: `common/nn/grpo.py:group_advantages`, `common/nn/grpo.py:grpo_loss`,
# `common/nn/evaluation.py:pass_at_k`, `minigpt/grpo.py:grpo_step`, `minigpt/evaluate.py:evaluate_tasks`,
# `common/data/arithmetic.py`. Tests: `tests/test_grpo.py`, `tests/test_evaluation.py`,
# `tests/test_grpo_cli.py`. `TUTORIAL_QUICK=1`: seconds, and a model that has learnt little.

# %%
import _setup

import json
import math
import random
import tempfile
from pathlib import Path

import torch

from common.data.arithmetic import make_splits, render, write_jsonl
from common.data.instructions import ChatTokenizer
from common.nn.evaluation import pass_at_k
from common.nn.grpo import group_advantages
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.evaluate import complete, evaluate_tasks, prompt_ids
from minigpt.grpo import exact_match_reward, main as grpo_main, score
from minigpt.sft import main as sft_main

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## Predict, then run: pass@k
#
# A model answers a problem right in 2 of 10 samples. Is its pass@5 closer to 0.2, 0.5 or 0.8?
# And the naive estimate 1 - (1 - c/n)^k, which draws the k samples *with* replacement: higher or lower?

# %%
n, c = 10, 2
for k in (1, 5, 10):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    print(f"pass@{k:<2} = {pass_at_k(n, c, k):.3f}   (1 - C(8,{k})/C(10,{k}) = {exact:.3f};  "
          f"naive 1 - (1 - c/n)^k = {1 - (1 - c / n) ** k:.3f})")
assert abs(pass_at_k(n, c, 5) - 1 + 56 / 252) < 1e-12

# %% [markdown]
# pass@5 = 0.778: five tries find one of the two right answers most of the time. The naive formula
# says 0.672: drawing with replacement can pick the same wrong sample twice, which the real k
# tries never do. pass@1 is just c / n.
#
# ## Advantages within a group
#
# Two prompts, four answers each, reward 1 for a right answer. In the first group one answer of four
# is right: it gets a large advantage, the wrong ones a small negative one. In the second every
# answer is right: nothing to learn, all advantages 0.

# %%
rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
A = group_advantages(rewards)
print(A)
print("mean per group:", [round(m, 6) for m in A.mean(dim=1).tolist()])

# %% [markdown]
# ## A task with checkable answers
#
# Addition and subtraction (one-digit numbers here, so a tiny model learns it in minutes; the
# command-line generator makes 2-3 digit problems by default). The held-out problems never occur in
# training, in any wording.

# %%
train_problems, test_problems = make_splits(120, 40, seed=0, digits=(1, 1))
rng = random.Random(1)
train = [render(p, rng) for p in train_problems]
test = [render(p, rng) for p in test_problems]
print(train[:3], test[:2], sep="\n")

work = Path(tempfile.mkdtemp())
write_jsonl(work / "train.jsonl", train)
write_jsonl(work / "test.jsonl", test)
write_jsonl(work / "sft.jsonl", [{"messages": [{"role": "user", "content": r["prompt"]},
                                               {"role": "assistant", "content": r["answer"]}]} for r in train])
characters = sorted(set("".join(r["prompt"] + r["answer"] for r in train + test)))
base = ChatTokenizer(CharTokenizer(characters)).base
GPT(GPTConfig(n_layer=2, n_head=4, n_embd=48, block_size=48, vocab_size=len(base))).save_pretrained(work / "base")
base.save_pretrained(work / "base")

# %% [markdown]
# ## SFT first
#
# GRPO improves a model that is sometimes right: a model that is never right gets reward 0 in every
# group, so every advantage is 0 and nothing is learnt. SFT on the training problems gets us there.

# %%
common = ["--use_cpu", "--disable_tqdm", "--seed", "0"]
sft_main(["--model_name_or_path", str(work / "base"), "--train_file", str(work / "sft.jsonl"),
          "--output_dir", str(work / "sft"), "--max_steps", "20" if QUICK else "400", "--learning_rate", "3e-3",
          "--per_device_train_batch_size", "32", "--validation_split_percentage", "0", *common])

# %% [markdown]
# ## One GRPO step, by hand
#
# Sample G = 8 replies to two prompts, reward them, and compute the advantages. Replies that are
# right where most others are wrong are the ones the step pushes up.

# %%
from minigpt.chat import load_chat_model  # noqa: E402

model, tokenizer, _ = load_chat_model(work / "sft", use_cpu=True)
records = [(r, f"train.jsonl:{i + 1}") for i, r in enumerate(train[:2])]
G = 8
completions = complete(model, tokenizer, [prompt_ids(tokenizer, r["prompt"], chat=True) for r, _ in records], G,
                       max_new_tokens=4, do_sample=True, temperature=1.0, generator=torch.Generator().manual_seed(0))
rewards = score(exact_match_reward, "exact_match", completions.texts, records, G)
advantages = group_advantages(rewards)
for p, (record, _) in enumerate(records):
    print(f"{record['prompt']!r} (answer {record['answer']}):")
    print("   replies   ", [completions.texts[p * G + i] for i in range(G)])
    print("   advantages", [round(a, 2) for a in advantages[p].tolist()])

# %% [markdown]
# ## GRPO on the training problems, pass@k on the held-out ones
#
# `python -m minigpt.grpo` runs that step in a loop and scores the held-out problems every few steps:
# exact match of the greedy reply, pass@1 and pass@8 of 8 samples. The step size is far smaller
# than SFT's: most groups are all wrong or all right (A = 0), the rest give a noisy gradient, and
# AdamW turns even a noisy gradient into a full-size step (docs/results/post_training.md shows a
# model that forgets at 3e-4 and holds at 3e-5).

# %%
steps = 4 if QUICK else 120
grpo_main(["--model_name_or_path", str(work / "sft"), "--train_file", str(work / "train.jsonl"),
           "--validation_file", str(work / "test.jsonl"), "--output_dir", str(work / "grpo"),
           "--max_steps", str(steps), "--eval_steps", str(max(steps // 4, 2)), "--num_generations", "8",
           "--prompts_per_step", "8", "--learning_rate", "1e-4", "--max_new_tokens", "4", "--use_cpu",
           "--seed", "0"])
log = [json.loads(line) for line in (work / "grpo" / "log.jsonl").read_text().splitlines()]
evals = [r for r in log if "eval_pass@1" in r]
for r in evals:
    print(f"step {r['step']:4}: exact match {r['eval_exact_match']:.3f}  pass@1 {r['eval_pass@1']:.3f}  "
          f"pass@8 {r['eval_pass@8']:.3f}")
plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(5, 3))
    for key in ("eval_pass@1", "eval_pass@8", "eval_exact_match"):
        ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=key[5:])
    ax.set_xlabel("GRPO step"), ax.set_ylabel("held-out"), ax.legend()
    _setup.save_plot(fig, "18_rewards_pass_at_k.png")

# %% [markdown]
# What to look for: pass@1 rises towards pass@8. GRPO mostly makes the model pick, on the first try,
# the answer it could already find in a few tries; it seldom teaches what no sample ever got right
# (pass@8 grows much less). The same on the command line, at the size of docs/results/post_training.md:
#
#     python -m common.data.arithmetic --output_dir data/arithmetic
#     python -m minigpt.grpo --model_name_or_path out/sft --train_file data/arithmetic/train.jsonl \
#         --validation_file data/arithmetic/test.jsonl --output_dir out/grpo
#     python -m minigpt.evaluate --model_name_or_path out/grpo --task_file data/arithmetic/test.jsonl \
#         --num_samples 8 --k 1,8

# %% [markdown]
# ## Your turn: exercises `grpo_advantages` and `pass_at_k`
#
# In the student copy, `grpo_advantages` (`common/nn/grpo.py`) and `pass_at_k`
# (`common/nn/evaluation.py`) raise `NotImplementedError`. Write them from the formulas above (the
# group's mean and sample standard deviation; `1 - C(n - c, k) / C(n, k)` as a product), then grade:
#
#     python -m tutorials.exercises make --out ../student --only grpo_advantages --only pass_at_k
#     cd ../student && python -m tutorials.exercises grade --only grpo_advantages --only pass_at_k

# %%
from tutorials.exercises import REGISTRY

for name in ("grpo_advantages", "pass_at_k"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
