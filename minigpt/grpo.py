"""python -m minigpt.grpo: reinforcement learning with checkable rewards (GRPO) for an instruction-tuned GPT.

    python -m common.data.arithmetic --output_dir data/arithmetic
    python -m minigpt.grpo --model_name_or_path out/sft --train_file data/arithmetic/train.jsonl \\
        --validation_file data/arithmetic/test.jsonl --output_dir out/grpo --max_steps 100

Problems are JSONL records {"prompt": ..., "answer": ...} (common/data/arithmetic.py). One step:

    1. take the next --prompts_per_step prompts (shuffled by --seed each pass over the file)
    2. sample G = --num_generations replies to each from the current policy pi_old (minigpt.generate,
       --temperature tau), in the chat template of minigpt.sft; the policy trained is that sampling
       distribution, softmax(logits / tau) (token_log_probs), whose argmax, the greedy reply, is the
       model's for every tau
    3. reward r_i = reward(reply, record): by default 1 when the reply, stripped, equals the answer
       (minigpt.evaluate.exact_match), else 0; --reward module:function plugs in another
       (function(reply: str, record: dict) -> float)
    4. advantages normalised within each group, the clipped surrogate and the optional KL term to
       the reference (the model as loaded; only kept with --kl_coef > 0): common/nn/grpo.py
    5. --num_iterations AdamW updates on these samples (rho = 1 on the first; the clip acts after)

The model stays in eval mode throughout (no dropout: pi_old and pi must be the same function until
the update). Every --eval_steps steps (and before the first and after the last) the held-out
--validation_file is scored: exact match of the greedy reply, and pass@1 / pass@k of --eval_samples
sampled replies at --temperature (the unbiased estimator, common/nn/evaluation.py). Same flags and
seed, same run: the prompt order, the samples and the updates all follow --seed.

Writes to --output_dir: the model and tokenizer (with chat_template.json, so minigpt.chat and
minigpt.evaluate read it), log.jsonl (per logged step: reward, loss, clip fraction, KL, reply
length, informative_groups = the fraction of groups whose rewards differ, the only ones with A != 0;
per evaluation: eval_exact_match, eval_pass@1, eval_pass@k), eval_results.json (before and after),
train_results.json.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from common.cli.args import parse_bool
from common.cli.training import write_json
from common.data.arithmetic import load_problems
from common.errors import ConfigError, DataError, UserError, run_cli
from common.nn.dpo import label_log_probs
from common.nn.evaluation import is_finite
from common.nn.grpo import check_group_size, group_advantages, grpo_loss, informative_fraction
from common.train.checkpoints import save_model_files
from common.train.device import set_seed
from minigpt.chat import load_chat_model
from minigpt.evaluate import complete, evaluate_tasks, exact_match, prompt_ids

LOG_NAME = "log.jsonl"


def exact_match_reward(reply: str, record: dict) -> float:
    """1.0 when the reply, stripped, equals record["answer"] as text, stripped; else 0.0."""
    return float(exact_match(reply, record["answer"]))


def load_reward(spec: Optional[str]) -> tuple[Callable, str]:
    """(function, name) of --reward 'module:function', or the exact-match reward."""
    if not spec:
        return exact_match_reward, "exact_match"
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"--reward {spec!r}: write module:function, e.g. my_rewards:length_penalty")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"--reward {spec!r}: cannot import it ({e})") from None
    if not callable(function):
        raise ConfigError(f"--reward {spec!r} is not a function")
    return function, spec


def score(reward: Callable, name: str, replies: Sequence[str], records: Sequence[tuple[dict, str]],
          group_size: int) -> torch.Tensor:
    """Rewards (P, G) of P G replies (each record's G replies next to each other); a reward function
    that raises or returns no finite number is a DataError naming the record."""
    values = []
    for i, reply in enumerate(replies):
        record, where = records[i // group_size]
        try:
            value = reward(reply, record)
        except Exception as e:  # the user's function: any failure is reported with the record it met
            raise DataError(f"{where}: the reward function {name} raised {type(e).__name__}: {e} "
                            f"(on the reply {reply[:80]!r})") from None
        if not is_finite(value):
            raise DataError(f"{where}: the reward function {name} returned {value!r}; it must return a finite number")
        values.append(float(value))
    return torch.tensor(values).view(-1, group_size)


def token_log_probs(model, completions, temperature: float = 1.0) -> torch.Tensor:
    """log pi_tau(o_t | x, o_<t) of every token of the replies, (B, T - 1), 0 outside the replies, with
    pi_tau = softmax(z / tau): the distribution the replies were sampled from at temperature tau, so
    the policy gradient and the ratio rho are those of the sampling policy. Greedy decoding (argmax z)
    is the same for every tau."""
    labels = completions.tokens.masked_fill(completions.reply_mask == 0, -100)
    logits = model(completions.tokens, attention_mask=completions.attention_mask).logits
    return label_log_probs(logits / temperature, labels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.grpo", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an instruction-tuned GPT with GRPO on problems whose answers can be checked.",
        epilog="Example:\n  python -m minigpt.grpo --model_name_or_path out/sft --train_file data/arithmetic/train.jsonl "
               "--validation_file data/arithmetic/test.jsonl --output_dir out/grpo --max_steps 100\n"
               "Every flag also accepts dashes. --debug shows the traceback of an error.")
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True, help="A folder written by minigpt.sft.")
    add("--train_file", "--train-file", required=True, help="JSONL problems {\"prompt\", \"answer\"}.")
    add("--validation_file", "--validation-file", default=None, help="Held-out problems scored during training.")
    add("--output_dir", "--output-dir", required=True)
    add("--overwrite_output_dir", "--overwrite-output-dir", action="store_true",
        help="Replace a model already saved in --output_dir.")
    add("--reward", default=None, help="module:function(reply, record) -> float (default: exact match with \"answer\").")
    add("--num_generations", "--num-generations", type=int, default=8, help="G, replies per prompt (default: %(default)s).")
    add("--prompts_per_step", "--prompts-per-step", type=int, default=8, help="Prompts per step (default: %(default)s).")
    add("--max_steps", "--max-steps", type=int, default=100, help="Steps (default: %(default)s).")
    add("--max_time", "--max-time", type=float, default=None, help="Stop after this many seconds of training.")
    add("--learning_rate", "--learning-rate", type=float, default=3e-5,
        help="AdamW step size, far below SFT's: a sparse reward gives a noisy gradient that AdamW turns into "
             "full-size steps (default: %(default)s).")
    add("--weight_decay", "--weight-decay", type=float, default=0.0)
    add("--max_grad_norm", "--max-grad-norm", type=float, default=1.0)
    add("--num_iterations", "--num-iterations", type=int, default=1,
        help="Updates per batch of samples (mu); the clip acts from the second (default: %(default)s).")
    add("--clip_range", "--clip-range", type=float, default=0.2, help="epsilon of the clip (default: %(default)s).")
    add("--kl_coef", "--kl-coef", type=float, default=0.0,
        help="beta of the KL term to the reference model; 0 keeps no reference (default: %(default)s).")
    add("--normalize_by_std", "--normalize-by-std", type=parse_bool, nargs="?", const=True, default=True,
        metavar="{true,false}", help="Divide the advantages by the group's std (default: %(default)s).")
    add("--temperature", type=float, default=1.0, help="Sampling temperature (default: %(default)s).")
    add("--max_new_tokens", "--max-new-tokens", type=int, default=16, help="Longest reply (default: %(default)s).")
    add("--eval_steps", "--eval-steps", type=int, default=25, help="Evaluate every N steps (default: %(default)s).")
    add("--eval_samples", "--eval-samples", type=int, default=8,
        help="Sampled replies per held-out prompt for pass@k, k = 1 and this (default: %(default)s).")
    add("--max_eval_samples", "--max-eval-samples", type=int, default=None, help="Score the first N held-out problems.")
    add("--logging_steps", "--logging-steps", type=int, default=5)
    add("--seed", type=int, default=42)
    add("--use_cpu", "--use-cpu", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}")
    return parser


def check_options(opts) -> None:
    check_group_size(opts.num_generations)
    for name in ("prompts_per_step", "max_steps", "num_iterations", "max_new_tokens", "eval_steps", "logging_steps"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(opts, name)}")
    if not 0 < opts.clip_range < 1:
        raise ConfigError(f"--clip_range must be in (0, 1), got {opts.clip_range}")
    if opts.kl_coef < 0 or opts.temperature <= 0 or opts.learning_rate <= 0:
        raise ConfigError("--kl_coef must be >= 0, --temperature and --learning_rate > 0")
    if opts.eval_samples < 1:
        raise ConfigError(f"--eval_samples must be >= 1, got {opts.eval_samples}")


class PromptStream:
    """The problems in a fresh order every pass (random.Random(seed + pass))."""

    def __init__(self, records, seed: int):
        self.records, self.seed, self.epoch, self.order = records, seed, 0, []

    def take(self, n: int) -> list:
        out = []
        while len(out) < n:
            if not self.order:
                self.order = list(range(len(self.records)))
                random.Random(self.seed + self.epoch).shuffle(self.order)
                self.epoch += 1
            out.append(self.records[self.order.pop()])
        return out


def grpo_step(model, reference, optimizer, tokenizer, records, opts, reward, reward_name, generator) -> dict:
    """One step of the module docstring on `records`; returns the numbers to log."""
    G = opts.num_generations
    prompts = [prompt_ids(tokenizer, record["prompt"], chat=True) for record, _ in records]
    completions = complete(model, tokenizer, prompts, G, opts.max_new_tokens, do_sample=True,
                           temperature=opts.temperature, generator=generator)
    rewards = score(reward, reward_name, completions.texts, records, G)  # (P, G)
    advantages = group_advantages(rewards, opts.normalize_by_std).flatten()  # (P G,)
    mask = completions.reply_mask[:, 1:].float()  # aligned with token_log_probs: (B, T - 1)
    with torch.no_grad():
        ref = token_log_probs(reference, completions, opts.temperature) if reference is not None else None
    old, stats = None, {}
    for _ in range(opts.num_iterations):
        log_probs = token_log_probs(model, completions, opts.temperature)
        if old is None:  # log pi_old: the policy that sampled, before any update (so rho = 1 on the first)
            old = log_probs.detach()
        loss, stats = grpo_loss(log_probs, old, advantages, mask, opts.clip_range, ref, opts.kl_coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
        optimizer.step()
    return {"loss": loss.item(), "reward": rewards.mean().item(), "reward_std": rewards.std(dim=1).mean().item(),
            "informative_groups": informative_fraction(rewards),
            "grad_norm": grad_norm.item(), "reply_length": completions.reply_mask.sum(1).float().mean().item(), **stats}


def evaluate_held_out(model, tokenizer, records, opts, seed: int) -> dict:
    """eval_exact_match (greedy), eval_pass@1 and eval_pass@k (k = --eval_samples) on the held-out problems."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    metrics = evaluate_tasks(model, tokenizer, records, chat=True, max_new_tokens=opts.max_new_tokens,
                             num_samples=opts.eval_samples, ks=sorted({1, opts.eval_samples}),
                             temperature=opts.temperature, generator=generator)
    return {f"eval_{k}": v for k, v in metrics.items() if k == "exact_match" or k.startswith("pass@")}


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    check_options(opts)
    output_dir = Path(opts.output_dir)
    if (output_dir / "model.safetensors").exists() and not opts.overwrite_output_dir:
        raise ConfigError(f"output_dir: {output_dir} already holds a saved model; pass --overwrite_output_dir to "
                          "replace it, or another --output_dir")
    reward, reward_name = load_reward(opts.reward)
    records = load_problems(opts.train_file)
    held_out = load_problems(opts.validation_file)[:opts.max_eval_samples] if opts.validation_file else []
    set_seed(opts.seed)
    model, tokenizer, folder = load_chat_model(opts.model_name_or_path, opts.use_cpu)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if opts.kl_coef > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate, weight_decay=opts.weight_decay)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(opts.seed)
    stream = PromptStream(records, opts.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / LOG_NAME
    log_path.write_text("", encoding="utf-8")

    def log(record: dict) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}), file=sys.stderr)

    print(f"minigpt.grpo: {folder}, {len(records)} problems, {opts.prompts_per_step} prompts x "
          f"{opts.num_generations} replies per step, reward {reward_name}, KL coefficient {opts.kl_coef}",
          file=sys.stderr)
    model.eval()
    before = evaluate_held_out(model, tokenizer, held_out, opts, opts.seed) if held_out else {}
    if before:
        log({"step": 0, **before})
    start, step, window, stop_reason = time.monotonic(), 0, [], "max_steps"
    try:
        while step < opts.max_steps:
            stats = grpo_step(model, reference, optimizer, tokenizer, stream.take(opts.prompts_per_step), opts,
                              reward, reward_name, generator)
            step += 1
            window.append(stats)
            elapsed = time.monotonic() - start
            if step % opts.logging_steps == 0 or step == opts.max_steps:
                log({"step": step, **{k: sum(s[k] for s in window) / len(window) for k in window[0]},
                     "elapsed": elapsed})
                window = []
            if held_out and step % opts.eval_steps == 0 and step < opts.max_steps:
                log({"step": step, **evaluate_held_out(model, tokenizer, held_out, opts, opts.seed)})
            if opts.max_time is not None and elapsed >= opts.max_time:
                stop_reason = "max_time"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    runtime = time.monotonic() - start
    if not all(math.isfinite(p.detach().sum().item()) for p in model.parameters()):
        raise UserError("the weights became NaN/inf; nothing was saved. Try a lower --learning_rate")
    save_model_files(model, output_dir, tokenizer)
    after = evaluate_held_out(model, tokenizer, held_out, opts, opts.seed) if held_out else {}
    if after:
        log({"step": step, **after})
        write_json(output_dir / "eval_results.json", {**after, **{f"init_{k}": v for k, v in before.items()},
                                                      "eval_problems": len(held_out), "train_steps": step})
        print(f"held-out exact match {before['eval_exact_match']:.3f} -> {after['eval_exact_match']:.3f}")
    write_json(output_dir / "train_results.json", {"train_runtime": runtime, "train_steps": step,
                                                   "stop_reason": stop_reason, "seed": opts.seed})
    print(f"model and tokenizer saved to {output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
