"""The evaluation harness: pass@k against brute force, multiple choice against a forward pass by hand,
minigpt.evaluate on tiny tasks whose answers are known, and the arithmetic task's held-out split."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from common.data.arithmetic import main as arithmetic_main
from common.data.arithmetic import make_splits, solve
from common.data.instructions import ChatTokenizer
from common.errors import run_cli
from common.nn.dpo import label_log_probs
from common.nn.evaluation import choose, pass_at_k
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.evaluate import choice_log_likelihoods, complete, evaluate_tasks, prompt_ids
from minigpt.evaluate import main as evaluate_main


@given(st.integers(1, 9).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_right_answer(nck):
    n, c, k = nck
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    got = pass_at_k(n, c, k)
    assert abs(got - brute) < 1e-9, f"pass@{k} with n={n}, c={c}: {got}, enumeration gives {brute}"
    assert abs(got - (1 - math.comb(n - c, k) / math.comb(n, k))) < 1e-9


def test_pass_at_k_differs_from_the_biased_with_replacement_formula():
    n, c, k = 10, 3, 5
    biased = 1 - (1 - c / n) ** k
    assert abs(pass_at_k(n, c, k) - biased) > 0.05, "pass@k must count subsets without replacement"


def test_length_normalisation_can_change_the_choice():
    by_sum, by_norm = choose([-3.0, -5.0], ["ab", "abcdefgh"])
    assert (by_sum, by_norm) == (0, 1), "sum prefers the short choice, per-character the long one"


TOKENS = ChatTokenizer(CharTokenizer(sorted(set("0123456789 +-=?abcdefghijklmnopqrstuvwxyz"))))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=len(TOKENS))).eval()


def test_choice_log_likelihoods_equal_a_forward_pass_of_each_choice_alone(model):
    context, choices = TOKENS.encode("the sky is"), [TOKENS.encode(" blue"), TOKENS.encode(" a long green")]
    got = choice_log_likelihoods(model, context, choices)
    for value, choice in zip(got, choices):
        ids = torch.tensor([context + choice])
        labels = torch.tensor([[-100] * len(context) + choice])
        with torch.no_grad():
            expected = label_log_probs(model(ids).logits, labels).sum().item()
        assert abs(value - expected) < 1e-5, f"padded batch gives {value}, the choice alone {expected}"


def test_evaluate_scores_known_answers(model):
    prompts = ["1 + 2 =", "what is 4 - 3?", "7 + 0 ="]
    greedy = complete(model, TOKENS, [prompt_ids(TOKENS, p, True) for p in prompts], 1, 6).texts
    right = [({"prompt": p, "answer": g}, f"t:{i}") for i, (p, g) in enumerate(zip(prompts, greedy))]
    wrong = [({"prompt": p, "answer": g + "x"}, f"t:{i}") for i, (p, g) in enumerate(zip(prompts, greedy))]
    got = evaluate_tasks(model, TOKENS, right + wrong, chat=True, max_new_tokens=6, num_samples=4, ks=(1, 4),
                         temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert got["exact_match"] == 0.5, f"the greedy replies are the answers of half the records: {got}"
    assert got["pass@1"] == 0.5 and got["pass@4"] == 0.5, f"at temperature 1e-4 samples are greedy: {got}"
    # multiple choice whose right answer is, by construction, the likelier (summed) choice
    context = TOKENS.encode("a b c")
    scores = choice_log_likelihoods(model, context, [TOKENS.encode(" d"), TOKENS.encode(" zz")])
    best = max(range(2), key=lambda j: scores[j])
    mc = [({"prompt": "a b c", "choices": [" d", " zz"], "answer": best}, "mc:1")]
    got = evaluate_tasks(model, TOKENS, mc, chat=False)
    assert got["acc"] == 1.0, got


def test_bad_task_record_is_one_error_line(tmp_path, capsys):
    torch.manual_seed(0)
    base = CharTokenizer(sorted(set("abcdef 123")))
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=len(base))).save_pretrained(tmp_path / "m")
    base.save_pretrained(tmp_path / "m")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"prompt": "abc", "choices": [" d", " e"], "answer": 1}) + "\n"
                     + json.dumps({"prompt": "abc", "choices": [" d", " e"], "answer": 5}) + "\n", encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(evaluate_main, ["--model_name_or_path", str(tmp_path / "m"), "--task_file", str(tasks), "--use_cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and f"{tasks}:2" in errors[0] and "index" in errors[0], errors
    tasks.write_text(json.dumps({"prompt": "abc", "choices": [" d", " ee"], "answer": 0}) + "\n", encoding="utf-8")
    assert evaluate_main(["--model_name_or_path", str(tmp_path / "m"), "--task_file", str(tasks), "--use_cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chat"] is False and out["num_choice_records"] == 1 and out["acc"] in (0.0, 1.0), out


def test_arithmetic_split_is_held_out_and_answers_are_right(tmp_path):
    train, test = make_splits(2000, 300, seed=5)
    assert not set(train) & set(test), "a held-out problem also appears in the training split"
    assert len(set(train)) == 2000 and all(10 <= a <= 999 and 10 <= b <= 999 for a, _, b in train + test)
    assert make_splits(2000, 300, seed=5) == (train, test), "the same seed must give the same problems"
    assert arithmetic_main(["--output_dir", str(tmp_path), "--num_train", "50", "--num_test", "10"]) == 0
    for name in ("train.jsonl", "test.jsonl"):
        for line in (tmp_path / name).read_text().splitlines():
            record = json.loads(line)
            numbers = [int(t) for t in record["prompt"].replace("+", " ").replace("-", " ").replace("?", " ")
                       .replace(".", " ").replace("=", " ").split() if t.isdigit()]
            a, b = (numbers[1], numbers[0]) if record["prompt"].startswith("Subtract") else numbers
            op = "-" if ("-" in record["prompt"] or "minus" in record["prompt"] or "Subtract" in record["prompt"]) else "+"
            assert record["answer"] == str(solve(a, op, b)), f"{record}: expected {solve(a, op, b)}"
