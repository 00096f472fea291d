"""The GPT command-line tools: `python -m minigpt.train` and `python -m minigpt.sample`.

Training runs here are tiny (a 1-layer, 16-wide model, a few steps on a text the test writes):
they check what the tools write and compute, not how well a real recipe learns (that is
measured in docs/results/minigpt.md). float32 throughout (--bf16 false), so numbers are exact.
"""
from __future__ import annotations

import collections

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import run_cli
from common.nn.losses import causal_lm_loss
from common.text.auto import load_tokenizer
from minigpt.model import GPT
from minigpt.sample import main as sample_main
from minigpt.text_data import TokenBlocks, split_train_validation, stratified_start
from common.train.time_budget import BudgetSchedule, budget_multiplier
from minigpt.train import main as train_main
from common.cli.training import parse_config_overrides
from minigpt.config import GPTConfig

REPO = Path(__file__).resolve().parent.parent
TINY = ["--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=16", "--per_device_train_batch_size", "4",
        "--max_steps", "6", "--warmup_steps", "2", "--bf16", "false", "--use_cpu", "--disable_tqdm",
        "--save_strategy", "no", "--sample_tokens", "20", "--seed", "3"]


def write_text(tmp_path, name="text.txt", lines=60) -> Path:
    """A small text with structure to learn: a few sentences in a fixed order, repeated."""
    sentences = ["The cat sat on the mat.", "A dog ran in the park!", "Birds sing at dawn;",
                 "rain falls on the old roof.", "Who goes there? Friend."]
    path = tmp_path / name
    path.write_text("\n".join(f"{i}: {sentences[i % len(sentences)]}" for i in range(lines)) + "\n",
                    encoding="utf-8")
    return path


def train(tmp_path, *extra, text=None) -> Path:
    out = tmp_path / "out"
    text = text or write_text(tmp_path)
    assert train_main(["--train_file", str(text), "--output_dir", str(out), *TINY, *extra]) == 0
    return out


def exit_with_error(main, argv, capsys) -> str:
    """Run a CLI main through run_cli; it must exit with status 2 and ONE error line. Returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, f"exit status {exit_info.value.code}, expected 2; stderr: {err}"
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1].startswith("(run again with --debug"), f"expected one error line, got {err}"
    return errors[0]


# ---------------------------------------------------------------- training


def test_char_training_writes_model_tokenizer_logs_and_eval_results(tmp_path, capsys):
    out = train(tmp_path)
    for name in ("config.json", "model.safetensors", "char_vocab.json", "log.jsonl", "train_results.json",
                 "eval_results.json"):
        assert (out / name).is_file(), f"{name} missing from the output folder: {sorted(p.name for p in out.iterdir())}"
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "perplexity"} <= set(results), f"eval_results.json keys: {sorted(results)}"
    assert results["perplexity"] == pytest.approx(math.exp(results["eval_loss"]), rel=1e-9), \
        f"perplexity {results['perplexity']} != exp(eval_loss {results['eval_loss']})"
    train_results = json.loads((out / "train_results.json").read_text())
    assert train_results["train_steps"] == 6 and train_results["stop_reason"] == "finished", train_results
    printed = capsys.readouterr().out
    assert "eval_loss" in printed and len(printed.strip().splitlines()) >= 2, f"no eval line and sample in {printed!r}"


def test_eval_loss_is_the_mean_loss_over_every_window_of_the_last_10_percent(tmp_path):
    text_path = write_text(tmp_path)
    out = train(tmp_path, text=text_path)
    reported = json.loads((out / "eval_results.json").read_text())["eval_loss"]

    text = text_path.read_text(encoding="utf-8")
    validation = text[int(len(text) * 0.9):]
    model, tokenizer = GPT.from_pretrained(out), load_tokenizer(out)
    ids = torch.tensor(tokenizer.encode(validation, add_special_tokens=False))
    T = model.config.block_size
    windows = ids[: len(ids) // T * T].view(-1, T)  # (K, T) consecutive, every token once
    with torch.no_grad():
        expected = causal_lm_loss(model(windows).logits, windows).item()
    assert reported == pytest.approx(expected, abs=1e-5), \
        f"eval_results.json says {reported}, recomputed over {len(windows)} validation windows: {expected}"


def test_sentencepiece_training_saves_a_tokenizer_that_reloads(tmp_path):
    out = train(tmp_path, "--tokenizer", "sentencepiece", "--vocab_size", "50")
    assert (out / "tokenizer.model").is_file()
    tokenizer, model = load_tokenizer(out), GPT.from_pretrained(out)
    assert len(tokenizer) <= model.config.vocab_size, f"{len(tokenizer)} tokens, {model.config.vocab_size} embeddings"
    assert model.config.eos_token_id == tokenizer.eos_token_id is not None
    results = json.loads((out / "eval_results.json").read_text())
    assert math.isfinite(results["eval_loss"]) and results["perplexity"] > 1


def test_validation_file_is_used_instead_of_a_split(tmp_path):
    validation = write_text(tmp_path, "valid.txt", lines=30)
    out = train(tmp_path, "--validation_file", str(validation))
    tokens = json.loads((out / "eval_results.json").read_text())["eval_tokens"]
    n = len(validation.read_text(encoding="utf-8"))
    assert tokens == n // 16 * 16, f"evaluated {tokens} tokens, the validation file has {n} (windows of 16)"


class TickingTime:
    """The `time` module as the Trainer and the budget schedule see it: each monotonic() call
    advances the clock by `tick` seconds, so a budget lasts the same number of steps on any machine."""

    def __init__(self, tick):
        self.now, self.tick = 1000.0, tick

    def monotonic(self):
        self.now += self.tick
        return self.now

    def __getattr__(self, name):
        return getattr(__import__("time"), name)


def test_time_budget_stops_training_and_decays_the_learning_rate_to_near_zero(tmp_path, monkeypatch):
    import common.train.time_budget as time_budget
    import common.train.trainer as trainer_module
    clock = TickingTime(0.01)  # a few monotonic() calls per step: the 2 s budget is some 50 steps
    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(time_budget, "time", clock)
    out = train(tmp_path, "--max_steps", "100000", "--max_time", "2", "--logging_steps", "1",
                "--learning_rate", "1e-2")
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rates = [r["learning_rate"] for r in logs if "learning_rate" in r]
    assert json.loads((out / "train_results.json").read_text())["stop_reason"] == "max_time"
    after_warmup = rates[2:]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:])), "the rate rose after warmup"
    assert rates[-1] < 0.5e-2, f"last learning rate {rates[-1]}: the decay did not follow the 2 s budget"


# ---------------------------------------------------------------- pieces


def test_validation_split_is_the_contiguous_last_percent():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train_text, validation = split_train_validation(text, 10)
    assert (train_text, validation) == (text[:900], text[900:]), (len(train_text), len(validation))
    assert split_train_validation(text, 0) == (text, "")
    assert split_train_validation("x" * 7, 50) == ("xxx", "xxxx")  # floor(7 * 0.5) = 3 for training


def test_training_windows_stay_in_bounds_reach_every_start_and_repeat_with_the_seed():
    ids = torch.arange(100)
    blocks = TokenBlocks(ids, 8, random_offset=True)
    torch.manual_seed(0)
    starts = [blocks.start(i) for _ in range(200) for i in range(len(blocks))]
    assert len(blocks) == 12 and min(starts) == 0 and max(starts) == 100 - 8, (min(starts), max(starts))
    assert set(starts) == set(range(93)), f"starts never drawn: {sorted(set(range(93)) - set(starts))[:10]}"
    torch.manual_seed(5)
    first = [blocks.start(i) for i in range(12)]
    torch.manual_seed(5)
    assert [blocks.start(i) for i in range(12)] == first
    item = blocks[3]
    assert torch.equal(item["input_ids"], item["labels"]) and item["input_ids"].shape == (8,)


@pytest.mark.parametrize("n, block_size", [(100, 8), (97, 8), (64, 8), (50, 7), (9, 8), (30, 2)])
def test_stratified_starts_hit_every_start_exactly_k_times_and_stay_in_their_stretch(n, block_size):
    """Over all K M pairs (window i, draw w) each start 0 .. N-L comes out exactly K times: uniform.
    The old jitter min(i L + u, N - L) fails this: for N = 100, L = 8 the last start came out 4x."""
    k, m = n // block_size, n - block_size + 1
    counts = collections.Counter(stratified_start(i, w, k, m) for i in range(k) for w in range(m))
    wrong = {s: c for s, c in counts.items() if c != k}
    assert set(counts) == set(range(m)) and not wrong, f"N={n} L={block_size}: starts not drawn K={k} times: {wrong}"
    for i in range(k):  # window i's stretch [i M / K, (i+1) M / K): at most L wide, in order (neighbours share
        lo, hi = stratified_start(i, 0, k, m), stratified_start(i, m - 1, k, m)  # at most their boundary start)
        previous_hi = stratified_start(i - 1, m - 1, k, m) if i else 0
        assert hi - lo <= block_size and previous_hi <= lo <= previous_hi + 1, (
            f"N={n} L={block_size}: window {i} starts in {lo}..{hi}, the window before ends its range at {previous_hi}")


def test_training_window_starts_are_uniform_under_the_seeded_generator():
    """N = 100, L = 8: 4,000 epochs of K = 12 windows; each of the M = 93 starts should get 1/93 = 0.0108.
    A chi-square over the 93 counts (92 degrees of freedom: mean 92, sd 13.6) must stay below 150
    (p ≈ 1e-4); the old clamped jitter gave the last start 4/96 = 0.042 (chi-square in the thousands)."""
    blocks = TokenBlocks(torch.arange(100), 8, random_offset=True)
    torch.manual_seed(0)
    counts = collections.Counter(blocks.start(i) for _ in range(4000) for i in range(len(blocks)))
    total, m = sum(counts.values()), 93
    expected = total / m
    chi_square = sum((counts.get(s, 0) - expected) ** 2 / expected for s in range(m))
    top = max(range(m), key=lambda s: counts.get(s, 0))
    assert set(counts) == set(range(m)) and chi_square < 150, (
        f"starts are not uniform over 0..92: chi-square {chi_square:.0f} (expected about 92); the most drawn start "
        f"{top} has frequency {counts[top] / total:.4f} against 1/93 = {1 / m:.4f}")


def test_evaluation_windows_are_consecutive_and_cover_every_whole_window():
    blocks = TokenBlocks(torch.arange(50), 8, random_offset=False)
    assert [int(blocks[i]["input_ids"][0]) for i in range(len(blocks))] == [0, 8, 16, 24, 32, 40]


def test_budget_schedule_warms_up_then_decays_to_zero_at_the_end_of_the_budget():
    assert budget_multiplier(0.0, 0, "cosine", warmup_steps=10, warmup_ratio=0) == 0.0
    assert budget_multiplier(0.0, 5, "cosine", warmup_steps=10, warmup_ratio=0) == pytest.approx(0.5)
    assert budget_multiplier(0.5, 100, "cosine", warmup_steps=10, warmup_ratio=0) == pytest.approx(0.5)
    assert budget_multiplier(0.25, 100, "linear", warmup_steps=10, warmup_ratio=0) == pytest.approx(0.75)
    assert budget_multiplier(0.05, 1, "linear", warmup_steps=0, warmup_ratio=0.1) == pytest.approx(0.5)
    for name in ("linear", "cosine"):
        assert budget_multiplier(1.0, 10**6, name, 10, 0) == pytest.approx(0.0, abs=1e-12), name
    assert budget_multiplier(0.9, 100, "constant_with_warmup", 10, 0) == 1.0


def test_budget_progress_is_the_larger_of_time_and_steps_used(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("common.train.time_budget.time.monotonic", lambda: clock[0])
    schedule = BudgetSchedule("linear", max_time=10.0, max_steps=1000, warmup_steps=0, warmup_ratio=0.0)
    clock[0] = 104.0
    assert schedule.progress(step=10) == pytest.approx(0.4), "4 s of 10 s used: progress by time"
    assert schedule.progress(step=800) == pytest.approx(0.8), "800 of 1000 steps done: progress by steps"
    assert schedule(10) == pytest.approx(0.6)


def test_config_overrides_are_converted_to_the_field_types():
    assert parse_config_overrides("n_layer=2, dropout=0.1,bias=false,n_inner=none", GPTConfig) == \
        {"n_layer": 2, "dropout": 0.1, "bias": False, "n_inner": None}


# ---------------------------------------------------------------- sampling


def run_sample(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "minigpt.sample", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"minigpt.sample failed: {done.stderr}"
    return done.stdout


def test_sample_command_continues_the_prompt_and_repeats_with_a_seed(tmp_path):
    out = train(tmp_path)
    common = ["--model_name_or_path", str(out), "--prompt", "The cat", "--max_new_tokens", "40"]
    first = run_sample(*common, "--seed", "7")
    text = first[:-1]  # print() added one newline
    assert text.startswith("The cat") and len(text) == len("The cat") + 40, repr(first)
    assert run_sample(*common, "--seed", "7") == first, "the same seed gave another text"


def test_sampling_in_process_several_sequences_and_greedy(tmp_path, capsys):
    out = train(tmp_path)
    capsys.readouterr()
    base = ["--model_name_or_path", str(out), "--prompt", "A dog", "--max_new_tokens", "30", "--use_cpu"]
    assert sample_main([*base, "--seed", "1", "--num_return_sequences", "3"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("===== sample") == 3, printed
    assert sample_main([*base, "--greedy"]) == 0
    greedy = capsys.readouterr().out
    assert sample_main([*base, "--do_sample", "false", "--seed", "99"]) == 0
    assert capsys.readouterr().out == greedy, "greedy decoding depended on the seed"


# ---------------------------------------------------------------- bad input: exit 2, one line


def test_bad_training_inputs_exit_with_one_line(tmp_path, capsys):
    text = str(write_text(tmp_path))
    out = str(tmp_path / "out")
    line = exit_with_error(train_main, ["--train_file", str(tmp_path / "missing.txt"), "--output_dir", out], capsys)
    assert "missing.txt" in line and "not found" in line, line
    line = exit_with_error(train_main, ["--train_file", text, "--output_dir", out,
                                        "--config_overrides", "n_layers=2"], capsys)
    assert "n_layers" in line and "n_layer" in line.split("fields:")[1], line
    line = exit_with_error(train_main, ["--train_file", text, "--output_dir", out, "--vocab_size", "100"], capsys)
    assert "--vocab_size" in line and "sentencepiece" in line, line
    line = exit_with_error(train_main, ["--train_file", text, "--output_dir", out,
                                        "--validation_split_percentage", "100"], capsys)
    assert "validation_split_percentage" in line, line
    line = exit_with_error(train_main, ["--train_file", text, "--output_dir", out, "--block_size", "100000"], capsys)
    assert "fewer than one window" in line and "--block_size" in line, line


def test_bad_sampling_inputs_exit_with_one_line(tmp_path, capsys):
    out = train(tmp_path)
    capsys.readouterr()
    line = exit_with_error(sample_main, ["--model_name_or_path", str(out), "--prompt", "Zebra \u00e9"], capsys)
    assert "not among the" in line and "characters" in line, line
    line = exit_with_error(sample_main, ["--model_name_or_path", str(tmp_path / "nowhere"), "--prompt", "a"], capsys)
    assert "nowhere" in line, line
    line = exit_with_error(sample_main, ["--model_name_or_path", str(out), "--prompt_ids", "5", "100000"], capsys)
    assert "100000" in line and "vocabulary" in line, line


def test_help_lists_the_data_flags_and_every_training_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--train_file", "--validation_split_percentage", "--config_overrides", "--tokenizer",
                 "--max_time", "--learning_rate", "--bf16", "--resume_from_checkpoint", "--train-file"):
        assert flag in text, f"{flag} missing from --help"


def test_dashed_flags_are_accepted(tmp_path):
    out = tmp_path / "dashed"
    argv = ["--train-file", str(write_text(tmp_path)), "--output-dir", str(out), *TINY, "--max-steps", "2"]
    assert train_main(argv) == 0
    assert json.loads((out / "train_results.json").read_text())["train_steps"] == 2


# ---------------------------------------------------------------- Hugging Face GPT-2 folders and continued training


@pytest.mark.slow
def test_sample_from_a_hugging_face_gpt2_folder_matches_transformers_greedy(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=99,
                                     eos_token_id=98, bos_token_id=98)
    config._attn_implementation = "eager"
    hf = transformers.GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "merges.txt").write_text("#version: 0.2\n")  # half a GPT-2 tokenizer: no vocab.json
    prompt = [5, 17, 42, 8]
    expected = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 4, dtype=torch.long),
                           max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0].tolist()

    argv = ["--model_name_or_path", str(tmp_path / "gpt2"), "--greedy", "--max_new_tokens", "12", "--use_cpu"]
    assert sample_main([*argv, "--prompt_ids", *map(str, prompt)]) == 0
    printed = [int(t) for t in capsys.readouterr().out.split()]
    assert printed == expected, f"minigpt.sample printed {printed}\ntransformers generated {expected}"
    line = exit_with_error(sample_main, [*argv, "--prompt", "hello"], capsys)
    assert "byte-level BPE" in line and "--prompt_ids" in line, line


def test_training_continues_from_a_saved_model_folder(tmp_path):
    first = train(tmp_path)
    before = json.loads((first / "eval_results.json").read_text())["eval_loss"]
    out = tmp_path / "continued"
    argv = ["--train_file", str(write_text(tmp_path)), "--output_dir", str(out), "--model_name_or_path", str(first),
            *TINY[2:], "--max_steps", "30", "--learning_rate", "3e-3"]
    assert train_main(argv) == 0
    after = json.loads((out / "eval_results.json").read_text())["eval_loss"]
    assert after < before, f"30 more steps from the saved model did not lower the validation loss: {before} -> {after}"
    assert GPT.from_pretrained(out).config == GPT.from_pretrained(first).config
