"""python -m minigpt.dpo: preference tuning of a tiny SFT model, checked by what it writes and reloads.

A 1-layer GPT (width 16, character tokenizer) is pretrained for 3 steps and instruction-tuned for 20
(the fixture); DPO then runs a few steps on pairs the test writes. The rewards in eval_results.json
are recomputed here from the saved model and the untouched SFT folder: that proves the reference is
the SFT model as loaded (with --lora_r: the base without adapters) and that the numbers are TRL's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.data.instructions import IGNORE_INDEX, ChatTokenizer
from common.data.preferences import DataCollatorForPreference, PreferenceDataset, load_preference_file
from common.errors import run_cli
from common.text.auto import load_tokenizer
from minigpt.dpo import main as dpo_main
from minigpt.dpo import pair_log_probs
from minigpt.model import GPT
from minigpt.sft import main as sft_main
from minigpt.train import main as train_main

FAST = ["--per_device_train_batch_size", "4", "--use_cpu", "--disable_tqdm", "--seed", "3"]
PAIRS = [{"instruction": "say hi", "input": "", "chosen": "hi there", "rejected": "go away"},
         {"instruction": "add one", "input": "two", "chosen": "three", "rejected": "nine"},
         {"prompt": "name a colour", "chosen": "red", "rejected": "dog"},
         {"prompt": [{"role": "user", "content": "spell cat"}], "chosen": [{"role": "assistant", "content": "c a t"}],
          "rejected": "k a t"}] * 4
BETA = 0.5


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    text = root / "text.txt"
    letters = "abcdefghijklmnopqrstuvwxyz"
    text.write_text("".join(f"{letters[i % 26:]} {letters[:i % 26]} hello, world!\n" for i in range(40)),
                    encoding="utf-8")
    assert train_main(["--train_file", str(text), "--output_dir", str(root / "base"), "--config_overrides",
                       "n_layer=1,n_head=2,n_embd=16,block_size=48", "--max_steps", "3", "--sample_tokens", "0",
                       "--bf16", "false", "--save_strategy", "no", *FAST]) == 0
    sft_data = root / "sft.json"
    sft_data.write_text(json.dumps([{"instruction": p.get("instruction", "q"), "input": "", "output": "ok"}
                                    for p in PAIRS]), encoding="utf-8")
    assert sft_main(["--model_name_or_path", str(root / "base"), "--train_file", str(sft_data), "--output_dir",
                     str(root / "sft"), "--max_steps", "5", "--validation_split_percentage", "0", *FAST]) == 0
    pairs = root / "pairs.json"
    pairs.write_text(json.dumps(PAIRS), encoding="utf-8")
    return {"root": root, "sft": root / "sft", "pairs": pairs}


def folder_digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.iterdir())
                                   if p.is_file())).hexdigest()


def run_dpo(sft, out, *extra):
    return dpo_main(["--model_name_or_path", str(sft["sft"]), "--train_file", str(sft["pairs"]), "--output_dir",
                     str(out), "--beta", str(BETA), "--max_steps", "12", "--learning_rate", "1e-2",
                     "--validation_split_percentage", "25", *FAST, *extra])


def recomputed_rewards(policy: GPT, reference: GPT, sft_folder: Path, pairs: Path) -> dict:
    tokenizer = ChatTokenizer(load_tokenizer(sft_folder))
    records = load_preference_file(pairs)
    dataset = PreferenceDataset(tokenizer, records[len(records) - 4:], 48)
    batch = DataCollatorForPreference(tokenizer.pad_token_id)(dataset.examples)
    with torch.no_grad():
        pw, pl = pair_log_probs(policy.eval(), batch)
        rw, rl = pair_log_probs(reference.eval(), batch)
    return {"eval_rewards/chosen": (BETA * (pw - rw)).mean().item(),
            "eval_rewards/rejected": (BETA * (pl - rl)).mean().item(),
            "eval_rewards/accuracies": (pw - rw > pl - rl).float().mean().item(),
            "eval_logps/chosen": pw.mean().item()}


def test_dpo_writes_trl_metrics_that_the_saved_model_and_the_untouched_reference_reproduce(sft, tmp_path):
    before = folder_digest(sft["sft"])
    out = tmp_path / "dpo"
    assert run_dpo(sft, out) == 0
    assert folder_digest(sft["sft"]) == before, "DPO changed the SFT folder it reads its reference from"
    results = json.loads((out / "eval_results.json").read_text())
    for key in ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies",
                "eval_rewards/margins", "eval_logps/chosen", "eval_logps/rejected", "init_eval_preference_accuracy"):
        assert key in results, f"{key} missing from eval_results.json: {sorted(results)}"
    train_lines = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert train_lines and all("rewards/margins" in r for r in train_lines), train_lines
    expected = recomputed_rewards(GPT.from_pretrained(out), GPT.from_pretrained(sft["sft"]), sft["sft"], sft["pairs"])
    for key, value in expected.items():
        assert abs(results[key] - value) < 1e-4, f"{key}: written {results[key]}, recomputed {value}"
    assert results["eval_rewards/margins"] > 0, f"12 steps at lr 1e-2 should prefer the chosen answers: {results}"
    assert train_lines[0]["rewards/margins"] < train_lines[-1]["rewards/margins"], train_lines


def test_dpo_with_lora_uses_the_base_without_adapters_as_reference(sft, tmp_path):
    out = tmp_path / "lora"
    assert run_dpo(sft, out, "--lora_r", "2") == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    results = json.loads((out / "eval_results.json").read_text())
    policy, reference = GPT.from_pretrained(out), GPT.from_pretrained(sft["sft"])
    expected = recomputed_rewards(policy, reference, sft["sft"], sft["pairs"])
    for key, value in expected.items():
        assert abs(results[key] - value) < 1e-4, f"{key}: written {results[key]}, recomputed with the base {value}"
    assert abs(results["eval_rewards/chosen"]) > 1e-4, "the adapters should have moved the policy off the reference"


@pytest.mark.slow
def test_same_seed_gives_the_same_weights(sft, tmp_path):
    for name in ("a", "b"):
        assert run_dpo(sft, tmp_path / name, "--max_steps", "3") == 0
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "two runs with --seed 3 differ"


def test_only_the_answer_tokens_carry_labels(sft):
    tokenizer = ChatTokenizer(load_tokenizer(sft["sft"]))
    dataset = PreferenceDataset(tokenizer, load_preference_file(sft["pairs"])[:4], 48)
    for (prompt, chosen, rejected), example in zip(dataset.prompts, dataset.examples):
        for side, text in (("chosen", chosen), ("rejected", rejected)):
            ids, labels = example[f"{side}_input_ids"], example[f"{side}_labels"]
            answer = tokenizer.encode(text) + [tokenizer.end_id]
            scored = ids[labels != IGNORE_INDEX].tolist()
            assert scored == answer and labels[-len(answer):].tolist() == answer, \
                f"{side} of {prompt}: scored tokens {scored}, the answer is {answer}"
            assert (labels[:-len(answer)] == IGNORE_INDEX).all(), f"a prompt token of {prompt} is scored"


@pytest.mark.parametrize("record, message", [
    ({"instruction": "x", "chosen": "a"}, "record 1: no \"rejected\" answer"),
    ({"prompt": "x", "rejected": "a"}, "record 1: no \"chosen\" answer"),
    ({"prompt": "x", "chosen": "same", "rejected": "same "}, "record 1: \"chosen\" and \"rejected\" are the same"),
])
def test_bad_preference_records_are_one_error_line(sft, tmp_path, capsys, record, message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([PAIRS[0], record]), encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(dpo_main, ["--model_name_or_path", str(sft["sft"]), "--train_file", str(bad), "--output_dir",
                           str(tmp_path / "out"), *FAST])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and message in errors[0] and str(bad) in errors[0], errors


def test_identical_pairs_can_be_skipped_and_counted(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [PAIRS[0], {"prompt": "x", "chosen": "a", "rejected": "a"}]))
    records = load_preference_file(data, drop_identical=True)
    assert len(records) == 1 and records.dropped == 1, (len(records), records.dropped)
