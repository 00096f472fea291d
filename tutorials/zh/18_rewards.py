# %% [markdown]
# # 18 · 奖励：答案可以检验时的强化学习（GRPO、pass@k）
#
# SFT（教程 16）之后，模型会模仿答案。对某些任务我们可以做得比模仿更好：我们能*检验*答案（算术、单元测试、
# 证明检查器），并在模型答对时给它奖励。GRPO（Shao et al. 2024，DeepSeek-R1 和 nanochat 的 RL 阶段都用它）
# 是做这件事最简单的策略梯度方法：对每个提示采样 G 个回答，给每个回答打分，再把每个回答与同组的其他回答比较：
#
#     A_i = (r_i - mean_j r_j) / (std_j r_j + eps)                     group_advantages
#     L   = -(1/G) sum_i (1/|o_i|) sum_t min(rho A_i, clip(rho, 1 - e, 1 + e) A_i)
#
# 其中 rho = pi(o_t | ...) / pi_old(o_t | ...)，即该词元现在的概率除以它被采样时的概率。没有价值网络，
# 也没有奖励模型：同组的回答就是基线。
#
# 一个可以尝试 k 次的模型有多好？pass@k：k 个样本中至少有一个正确的概率。从 n >= k 个样本（其中 c 个正确）
# 可以无偏地估计它（Chen et al. 2021）：
#
#     pass@k = 1 - C(n - c, k) / C(n, k)                                 pass_at_k
#
# 代码：`common/nn/grpo.py:group_advantages`、`common/nn/grpo.py:grpo_loss`、
# `common/nn/evaluation.py:pass_at_k`、`minigpt/grpo.py:grpo_step`、`minigpt/evaluate.py:evaluate_tasks`、
# `common/data/arithmetic.py`。测试：`tests/test_grpo.py`、`tests/test_evaluation.py`、
# `tests/test_grpo_cli.py`。`TUTORIAL_QUICK=1`：几秒钟，模型几乎什么都没学到。

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
# ## 先预测，再运行：pass@k
#
# 一个模型在 10 个样本里答对 2 个。它的 pass@5 更接近 0.2、0.5 还是 0.8？
# 朴素估计 1 - (1 - c/n)^k 是*有放回*地抽 k 个样本：它会更高还是更低？

# %%
n, c = 10, 2
for k in (1, 5, 10):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    print(f"pass@{k:<2} = {pass_at_k(n, c, k):.3f}   (1 - C(8,{k})/C(10,{k}) = {exact:.3f};  "
          f"naive 1 - (1 - c/n)^k = {1 - (1 - c / n) ** k:.3f})")
assert abs(pass_at_k(n, c, 5) - 1 + 56 / 252) < 1e-12

# %% [markdown]
# pass@5 = 0.778：五次尝试多半能找到两个正确答案之一。朴素公式给出 0.672：有放回抽样可能两次抽到同一个
# 错误样本，而真正的 k 次尝试不会。pass@1 就是 c / n。
#
# ## 组内优势
#
# 两个提示，每个四个回答，答对奖励 1。第一组四个回答中只有一个正确：它得到很大的优势，错误的回答得到较小的
# 负优势。第二组全部正确：没有可学的，所有优势都是 0。

# %%
rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
A = group_advantages(rewards)
print(A)
print("mean per group:", [round(m, 6) for m in A.mean(dim=1).tolist()])

# %% [markdown]
# ## 一个答案可以检验的任务
#
# 加法和减法（这里用一位数，这样小模型几分钟就能学会；命令行生成器默认生成 2-3 位数的题目）。
# 留出集的题目不会以任何措辞出现在训练集中。

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
# ## 先做 SFT
#
# GRPO 改进的是有时能答对的模型：从不答对的模型在每一组里奖励都是 0，于是所有优势都是 0，什么也学不到。
# 在训练题上做 SFT 让我们到达那一步。

# %%
common = ["--use_cpu", "--disable_tqdm", "--seed", "0"]
sft_main(["--model_name_or_path", str(work / "base"), "--train_file", str(work / "sft.jsonl"),
          "--output_dir", str(work / "sft"), "--max_steps", "20" if QUICK else "400", "--learning_rate", "3e-3",
          "--per_device_train_batch_size", "32", "--validation_split_percentage", "0", *common])

# %% [markdown]
# ## 手算一步 GRPO
#
# 对两个提示各采样 G = 8 个回答，给它们打分，并计算优势。在大多数回答都错的组里答对的回答，就是这一步
# 要推高的回答。

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
# ## 在训练题上做 GRPO，在留出题上看 pass@k
#
# `python -m minigpt.grpo` 循环执行这一步，并每隔几步给留出题打分：贪心回答的精确匹配，以及 8 个样本的
# pass@1 和 pass@8。步长比 SFT 小得多：大多数组要么全错要么全对（A = 0），其余的组给出带噪声的梯度，而 AdamW
# 会把哪怕是噪声梯度也变成完整大小的一步（docs/results/post_training.md 中，学习率 3e-4 时模型遗忘，3e-5 时保持）。

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
# 要看什么：pass@1 向 pass@8 靠近。GRPO 主要让模型在第一次尝试时就选中它本来几次尝试能找到的答案；它很少
# 教会任何样本都没答对过的东西（pass@8 增长得少得多）。命令行上的同样流程，规模见 docs/results/post_training.md：
#
#     python -m common.data.arithmetic --output_dir data/arithmetic
#     python -m minigpt.grpo --model_name_or_path out/sft --train_file data/arithmetic/train.jsonl \
#         --validation_file data/arithmetic/test.jsonl --output_dir out/grpo
#     python -m minigpt.evaluate --model_name_or_path out/grpo --task_file data/arithmetic/test.jsonl \
#         --num_samples 8 --k 1,8

# %% [markdown]
# ## 轮到你了：练习 `grpo_advantages` 和 `pass_at_k`
#
# 在学生副本中，`grpo_advantages`（`common/nn/grpo.py`）和 `pass_at_k`（`common/nn/evaluation.py`）会抛出
# `NotImplementedError`。按上面的公式写出它们（组内均值与样本标准差；把 `1 - C(n - c, k) / C(n, k)` 写成连乘），然后评分：
#
#     python -m tutorials.exercises make --out ../student --only grpo_advantages --only pass_at_k
#     cd ../student && python -m tutorials.exercises grade --only grpo_advantages --only pass_at_k

# %%
from tutorials.exercises import REGISTRY

for name in ("grpo_advantages", "pass_at_k"):
    print(REGISTRY[name].pytest_command())
    print("hint:", REGISTRY[name].hint)
