"""python -m minigpt.evaluate: score a GPT on tasks with known answers (and the library behind it).

    python -m minigpt.evaluate --model_name_or_path out/sft --task_file data/arithmetic/test.jsonl \\
        --num_samples 8 --k 1,8 --output_file out/sft/eval_arithmetic.json

Tasks are JSONL, one record per line, of two kinds (a file may mix them):

    {"prompt": "The sky is", "choices": [" blue", " green"], "answer": 0}    multiple choice (answer: index)
    {"prompt": "What is 12 + 30?", "answer": "42"}                           generation

Multiple choice is scored by log-likelihood, as lm-evaluation-harness does (common/nn/evaluation.py):
each choice's tokens after the context, summed (acc) and divided by the choice's length in characters
(acc_norm). Generation is scored by exact match: the greedy reply, stripped, equals the answer,
stripped (exact_match); with --num_samples n, n replies are also sampled per prompt and pass@k
(Chen et al. 2021's unbiased estimator) is reported for each k of --k.

A model folder with chat_template.json (from minigpt.sft) is asked in the chat template: the prompt
is a user turn and a choice or the reply is the assistant's turn (its tokens after <|assistant|>);
otherwise the prompt is plain text continued by the choice (--chat false forces this for an SFT
model). Results: one JSON object on stdout, and in --output_file when given.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.cli.args import parse_bool
from common.data.instructions import ChatTokenizer, encode_conversation, has_chat_template, read_records
from common.errors import ConfigError, DataError, run_cli
from common.hub.pretrained import resolve_model_folder
from common.nn.dpo import label_log_probs
from common.nn.evaluation import choose, mean_pass_at_k
from common.train.device import pick_device, set_seed
from minigpt.generate import generate
from minigpt.sample import load_model_and_tokenizer


# ---------------------------------------------------------------- prompts and replies
def prompt_ids(tokenizer, prompt, chat: bool) -> list[int]:
    """The ids the model continues: the chat template's user turn + <|assistant|>, or the plain text."""
    if chat:
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return encode_conversation(tokenizer, turns, for_generation=True)
    return tokenizer.encode(prompt)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, T), attention_mask (B, T)) with every row LEFT padded to the longest."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), T), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        if row:
            ids[b, T - len(row):] = torch.tensor(row, device=device)
            mask[b, T - len(row):] = 1
    return ids, mask


@dataclass
class Completions:
    """B = P n rows (each prompt's n replies next to each other): tokens (B, T0 + N) prompt + reply,
    attention_mask (B, T0 + N), reply_mask (B, T0 + N) 1 on the reply's tokens up to and including
    the end token, texts (B,) the replies' text (without the end token)."""
    tokens: torch.Tensor
    attention_mask: torch.Tensor
    reply_mask: torch.Tensor
    texts: list[str]


def complete(model, tokenizer, prompts: Sequence[Sequence[int]], num_return_sequences: int = 1,
             max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0, top_k=None, top_p=None,
             generator: Optional[torch.Generator] = None, eos_token_id: Optional[int] = None) -> Completions:
    """n replies to each prompt (ids) through minigpt.generate, in one left-padded batch."""
    device = next(model.parameters()).device
    eos = eos_token_id if eos_token_id is not None else getattr(tokenizer, "end_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (eos if eos is not None else 0)
    rows = [list(p) for p in prompts for _ in range(num_return_sequences)]
    room = model.config.block_size - max_new_tokens
    if room < 1:
        raise ConfigError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the context of "
                          f"{model.config.block_size} tokens")
    rows = [r[-room:] for r in rows]  # the prompt's last tokens, so prompt + reply fit the context
    ids, mask = left_pad(rows, pad, device)
    tokens = generate(model, ids, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                      top_p=top_p, eos_token_id=eos, pad_token_id=pad, attention_mask=mask, generator=generator)
    T0, reply = ids.size(1), tokens[:, ids.size(1):]
    if eos is not None:  # 1 up to and including the first end token, 0 after it
        ended_before = torch.cumsum((reply == eos).long(), dim=1) - (reply == eos).long()
        reply_mask = (ended_before == 0).long()
    else:
        reply_mask = torch.ones_like(reply)
    full_mask = torch.cat([mask, reply_mask], dim=1)
    texts = []
    for row, keep in zip(reply.tolist(), reply_mask.tolist()):
        row = [t for t, k in zip(row, keep) if k and t != eos]
        texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return Completions(tokens, full_mask, torch.cat([torch.zeros_like(mask), reply_mask], dim=1), texts)


def exact_match(reply: str, answer) -> bool:
    """The reply, stripped, equals the answer (as text), stripped."""
    return reply.strip() == str(answer).strip()


@torch.no_grad()
def choice_log_likelihoods(model, context: Sequence[int], choices: Sequence[Sequence[int]]) -> list[float]:
    """sum_t log p(choice_t | context, choice_<t) for each choice (ids), one batch."""
    device = next(model.parameters()).device
    rows = [list(context) + list(c) for c in choices]
    T = max(len(r) for r in rows)
    if T > model.config.block_size:
        raise DataError(f"a context + choice of {T} tokens is longer than the model's context of "
                        f"{model.config.block_size}")
    ids = torch.zeros((len(rows), T), dtype=torch.long, device=device)
    labels = torch.full((len(rows), T), -100, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), T), dtype=torch.long, device=device)
    for b, (row, choice) in enumerate(zip(rows, choices)):  # right padded: positions start at 0
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, :len(row)] = 1
        labels[b, len(context):len(row)] = torch.tensor(list(choice), dtype=torch.long)
    logits = model(ids, attention_mask=mask).logits
    return label_log_probs(logits, labels).sum(-1).tolist()


# ---------------------------------------------------------------- tasks
def load_tasks(path, encoding: str = "utf-8") -> list[tuple[dict, str]]:
    """[(record, where)] of a task file (see the module docstring); a malformed record is a DataError."""
    out = []
    for record, where in read_records(path, encoding, "task"):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), (str, list)) or not record["prompt"]:
            raise DataError(f"{where}: no \"prompt\"; a task record is {{\"prompt\": ..., \"answer\": ...}} or "
                            "{\"prompt\": ..., \"choices\": [...], \"answer\": index}")
        if "answer" not in record:
            raise DataError(f"{where}: no \"answer\"; every task record needs the right answer")
        if "choices" in record:
            choices, answer = record["choices"], record["answer"]
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise DataError(f"{where}: \"choices\" must be a list of at least 2 non-empty texts")
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
                raise DataError(f"{where}: \"answer\" must be the index of the right choice, 0..{len(choices) - 1}; "
                                f"got {answer!r}")
        out.append((record, where))
    return out


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--k {text!r}: write integers separated by commas, e.g. 1,8") from None
    if not ks or ks[0] < 1:
        raise ConfigError(f"--k {text!r}: each k must be >= 1")
    return ks


def evaluate_tasks(model, tokenizer, records: Sequence[tuple[dict, str]], chat: bool, max_new_tokens: int = 32,
                   num_samples: int = 0, ks: Sequence[int] = (1,), temperature: float = 1.0, top_k=None, top_p=None,
                   batch_size: int = 64, generator: Optional[torch.Generator] = None) -> dict:
    """The metrics of the module docstring over `records`: acc, acc_norm (multiple choice), exact_match
    (greedy) and pass@k for k in ks (with num_samples >= max(ks) sampled replies per prompt)."""
    if num_samples and num_samples < max(ks):
        raise ConfigError(f"pass@{max(ks)} needs at least {max(ks)} samples per prompt; got --num_samples {num_samples}")
    model.eval()
    results: dict = {}
    choice_records = [(r, w) for r, w in records if "choices" in r]
    generation_records = [(r, w) for r, w in records if "choices" not in r]
    if choice_records:
        right_sum = right_norm = 0
        for record, where in choice_records:
            context = prompt_ids(tokenizer, record["prompt"], chat)
            scores = choice_log_likelihoods(model, context, [tokenizer.encode(c) for c in record["choices"]])
            by_sum, by_norm = choose(scores, record["choices"])
            right_sum += by_sum == record["answer"]
            right_norm += by_norm == record["answer"]
        results.update({"acc": right_sum / len(choice_records), "acc_norm": right_norm / len(choice_records),
                        "num_choice_records": len(choice_records)})
    if generation_records:
        prompts = [prompt_ids(tokenizer, r["prompt"], chat) for r, _ in generation_records]
        answers = [r["answer"] for r, _ in generation_records]
        right, counts, examples = 0, [], []
        for start in range(0, len(prompts), batch_size):
            batch, batch_answers = prompts[start:start + batch_size], answers[start:start + batch_size]
            greedy = complete(model, tokenizer, batch, 1, max_new_tokens).texts
            right += sum(exact_match(g, a) for g, a in zip(greedy, batch_answers))
            examples += list(zip(greedy, batch_answers))
            if num_samples:
                per_call = max(1, batch_size // num_samples)
                for s in range(0, len(batch), per_call):
                    texts = complete(model, tokenizer, batch[s:s + per_call], num_samples, max_new_tokens,
                                     do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                                     generator=generator).texts
                    for i, a in enumerate(batch_answers[s:s + per_call]):
                        group = texts[i * num_samples:(i + 1) * num_samples]
                        counts.append((num_samples, sum(exact_match(t, a) for t in group)))
        results.update({"exact_match": right / len(prompts), "num_generation_records": len(prompts),
                        "examples": [{"reply": g, "answer": str(a)} for g, a in examples[:3]]})
        for k in (ks if num_samples else ()):
            results[f"pass@{k}"] = mean_pass_at_k(counts, k)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.evaluate", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score a GPT on JSONL tasks: log-likelihood multiple choice, exact match, pass@k.",
        epilog="Task records: {\"prompt\", \"choices\", \"answer\": index} or {\"prompt\", \"answer\": text}.")
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True, help="A GPT folder (minigpt.train or .sft).")
    add("--task_file", "--task-file", required=True, help="JSONL task records (see above).")
    add("--chat", choices=("auto", "true", "false"), default="auto",
        help="Ask in the chat template (auto: when the folder has chat_template.json).")
    add("--max_new_tokens", "--max-new-tokens", type=int, default=32, help="Longest reply (default: %(default)s).")
    add("--num_samples", "--num-samples", type=int, default=0,
        help="Sampled replies per generation prompt for pass@k (default: %(default)s = none).")
    add("--k", default="1", help="The k of pass@k, comma-separated (default: %(default)s).")
    add("--temperature", type=float, default=1.0, help="Sampling temperature for pass@k (default: %(default)s).")
    add("--top_k", "--top-k", type=int, default=None)
    add("--top_p", "--top-p", type=float, default=None)
    add("--max_samples", "--max-samples", type=int, default=None, help="Evaluate the first N records only.")
    add("--batch_size", "--batch-size", type=int, default=64)
    add("--seed", type=int, default=0, help="Seed of the sampler (default: %(default)s).")
    add("--output_file", "--output-file", default=None, help="Also write the results here (JSON).")
    add("--use_cpu", "--use-cpu", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}")
    return parser


def load_for_evaluation(folder_name, use_cpu: bool, chat: str):
    """(model in eval mode, tokenizer, chat?) of a folder: the chat tokenizer when the template is used."""
    folder = resolve_model_folder(folder_name)
    model, tokenizer = load_model_and_tokenizer(folder)
    templated = has_chat_template(folder)
    use_chat = templated if chat == "auto" else chat == "true"
    if use_chat and not templated:
        raise ConfigError(f"--chat true: {folder} has no chat_template.json (it is not instruction-tuned)")
    if templated:
        tokenizer = ChatTokenizer.from_folder(folder, tokenizer)
    return model.to(pick_device(use_cpu)).eval(), tokenizer, use_chat


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    ks = parse_ks(opts.k)
    if opts.num_samples < 0 or opts.max_new_tokens < 1:
        raise ConfigError("--num_samples must be >= 0 and --max_new_tokens >= 1")
    set_seed(opts.seed)
    model, tokenizer, chat = load_for_evaluation(opts.model_name_or_path, opts.use_cpu, opts.chat)
    records = load_tasks(opts.task_file)[:opts.max_samples]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(opts.seed)
    results = evaluate_tasks(model, tokenizer, records, chat, opts.max_new_tokens, opts.num_samples, ks,
                             opts.temperature, opts.top_k, opts.top_p, opts.batch_size, generator)
    results = {"task_file": str(opts.task_file), "model": str(opts.model_name_or_path), "chat": chat, **results}
    text = json.dumps(results, indent=2, ensure_ascii=False)
    print(text)
    if opts.output_file:
        Path(opts.output_file).write_text(text + "\n", encoding="utf-8")
        print(f"written to {opts.output_file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
