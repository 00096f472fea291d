"""python -m minigpt.grpo on a tiny chat model (random weights, width 16) and one-digit arithmetic:
what it writes, that the same seed gives the same weights, and its one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from common.data.arithmetic import load_problems, main as arithmetic_main
from common.data.instructions import ChatTokenizer
from common.errors import run_cli
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.chat import load_chat_model
from minigpt.evaluate import complete, prompt_ids
from minigpt.grpo import build_parser, grpo_step, main as grpo_main, token_log_probs

SMALL = ["--num_generations", "2", "--prompts_per_step", "2", "--max_new_tokens", "4", "--eval_samples", "2",
         "--max_eval_samples", "4", "--eval_steps", "2", "--logging_steps", "1", "--use_cpu", "--seed", "7"]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    assert arithmetic_main(["--output_dir", str(root / "data"), "--num_train", "20", "--num_test", "6",
                            "--min_digits", "1", "--max_digits", "1"]) == 0
    text = (root / "data" / "pretrain.txt").read_text() + (root / "data" / "test.jsonl").read_text()
    tokenizer = ChatTokenizer(CharTokenizer(sorted(set(text))))
    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=48, vocab_size=len(tokenizer),
                  eos_token_id=tokenizer.end_id)).save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    return root


def run(root, out, *extra):
    return grpo_main(["--model_name_or_path", str(root / "sft"), "--train_file", str(root / "data" / "train.jsonl"),
                      "--validation_file", str(root / "data" / "test.jsonl"), "--output_dir", str(out),
                      "--max_steps", "3", *SMALL, *extra])


@pytest.mark.slow
def test_grpo_writes_the_model_log_and_held_out_scores_and_the_same_seed_gives_the_same_weights(chat_model, tmp_path,
                                                                                                monkeypatch):
    # a random model never answers right: a reward that varies with the reply gives the run something to learn
    (tmp_path / "toy_reward.py").write_text("def reward(reply, record):\n    return float(sum(map(ord, reply)) % 3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("a", "b"):
        assert run(chat_model, tmp_path / name, "--kl_coef", "0.1", "--num_iterations", "2",
                   "--reward", "toy_reward:reward", "--learning_rate", "1e-2") == 0
    a, b = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a), "two runs with --seed 7 gave different weights"
    start = load_file(chat_model / "sft" / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a), "three steps left every weight unchanged"
    lines = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "reward" in l]
    evals = [l for l in lines if "eval_pass@1" in l]
    assert [l["step"] for l in steps] == [1, 2, 3] and all(l["kl"] >= 0 for l in steps)
    assert any(l["grad_norm"] > 0 for l in steps) and steps[-1]["kl"] > 0, steps
    assert all(0 <= l["informative_groups"] <= 1 for l in steps), steps
    assert [l["step"] for l in evals] == [0, 2, 3] and all("eval_pass@2" in l for l in evals), evals
    results = json.loads((tmp_path / "a" / "eval_results.json").read_text())
    assert {"eval_exact_match", "init_eval_exact_match", "eval_pass@1", "eval_pass@2"} <= set(results), results
    assert (tmp_path / "a" / "chat_template.json").is_file(), "the GRPO model must stay chat-ready"


def run_error(args, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(grpo_main, args)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1, errors
    return errors[0]


def test_group_of_one_is_one_error_line(chat_model, tmp_path, capsys):
    args = ["--model_name_or_path", str(chat_model / "sft"), "--train_file", str(chat_model / "data" / "train.jsonl"),
            "--output_dir", str(tmp_path / "x"), "--num_generations", "1"]
    assert "at least 2" in run_error(args, capsys)


def test_problem_without_answer_is_one_error_line_naming_it(chat_model, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 1 =", "answer": "2"}\n{"prompt": "2 + 2 ="}\n', encoding="utf-8")
    error = run_error(["--model_name_or_path", str(chat_model / "sft"), "--train_file", str(bad),
                       "--output_dir", str(tmp_path / "x")], capsys)
    assert f"{bad}:2" in error and "answer" in error, error


def test_reward_function_that_raises_is_one_error_line_naming_the_record(chat_model, tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_reward.py").write_text("def reward(reply, record):\n    raise KeyError('score')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    error = run_error(["--model_name_or_path", str(chat_model / "sft"), "--train_file",
                       str(chat_model / "data" / "train.jsonl"), "--output_dir", str(tmp_path / "x"),
                       "--reward", "broken_reward:reward", "--max_steps", "1", *SMALL], capsys)
    assert "train.jsonl:" in error and "broken_reward:reward raised KeyError" in error, error


def test_pi_old_is_the_sampling_policy_so_only_later_updates_on_a_batch_are_clipped(chat_model):
    torch.manual_seed(0)
    model, tokenizer, _ = load_chat_model(chat_model / "sft", True)
    records = load_problems(chat_model / "data" / "train.jsonl")[:2]

    def varied(reply, record):  # a reward that differs within a group, so the advantages are not all 0
        return float(sum(map(ord, reply)) % 3)

    def step(iterations):
        opts = build_parser().parse_args(["--model_name_or_path", "x", "--train_file", "x", "--output_dir", "x",
                                          "--num_generations", "4", "--max_new_tokens", "4",
                                          "--num_iterations", str(iterations)])
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        return grpo_step(model, None, optimizer, tokenizer, records, opts, varied, "varied",
                         torch.Generator().manual_seed(1))

    first = step(1)
    assert first["informative_groups"] > 0, f"the toy reward gave no signal: {first}"
    assert first["clip_fraction"] == 0, (f"rho must be 1 on the first update of a batch, yet a fraction "
                                         f"{first['clip_fraction']} of the tokens was clipped")
    third = step(3)
    assert third["clip_fraction"] > 0, ("on the third update of a batch at lr 0.05 rho should leave [0.8, 1.2] "
                                        f"somewhere; clip fraction {third['clip_fraction']}: is pi_old recomputed?")


def test_the_trained_log_probs_are_those_of_the_sampling_temperature(chat_model):
    torch.manual_seed(0)
    model, tokenizer, _ = load_chat_model(chat_model / "sft", True)
    records = load_problems(chat_model / "data" / "train.jsonl")[:2]
    prompts = [prompt_ids(tokenizer, r["prompt"], chat=True) for r, _ in records]
    completions = complete(model, tokenizer, prompts, 3, 4, do_sample=True, temperature=0.5,
                           generator=torch.Generator().manual_seed(0))
    at_half = token_log_probs(model, completions, 0.5)
    with torch.no_grad():
        logits = model(completions.tokens, attention_mask=completions.attention_mask).logits[:, :-1]
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, completions.tokens[:, 1:, None])[..., 0]
    expected = expected * completions.reply_mask[:, 1:]
    gap = (at_half - expected).abs().max()
    assert torch.allclose(at_half, expected, atol=1e-5), (
        f"log pi_tau must be log softmax(z / tau) at the replies' tokens; largest gap {gap}")
    plain = token_log_probs(model, completions)
    assert not torch.allclose(plain, at_half), "tau = 0.5 gave the log-probabilities of tau = 1"
