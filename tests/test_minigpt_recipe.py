"""minigpt.train's default recipe: the measured bf16 choice (choose_bf16) and the defaults it trains with.

The recipe's figures (validation loss against nanoGPT's at the same wall time) are in
docs/results/minigpt.md; here: the choice follows the measurement, and measuring leaves the model
and the random numbers untouched (so a run with the automatic choice trains like one without it).
"""
from __future__ import annotations

import json

import pytest
import torch

import minigpt.train as train
from minigpt.config import GPTConfig
from minigpt.model import GPT


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=16, block_size=8, dropout=0.1))


def test_timing_the_two_precisions_leaves_weights_gradients_and_rng_untouched():
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    seconds = train.step_seconds(model, 2, 8, torch.device("cpu"), repeats=1)
    after_rng = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3)), "step_seconds moved the global random number generator"
    assert set(seconds) == {"float32", "bf16"} and min(seconds.values()) > 0, seconds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "step_seconds changed a weight"
    assert all(p.grad is None for p in model.parameters()), "step_seconds left gradients behind"


@pytest.mark.parametrize("float32, bf16, expected", [(0.10, 0.05, True), (0.10, 0.095, False), (0.05, 0.10, False)],
                         ids=["bf16_2x_faster", "near_tie_stays_float32", "bf16_slower"])
def test_the_cpu_choice_follows_the_measured_speedup(monkeypatch, float32, bf16, expected):
    monkeypatch.setattr(train, "native_bf16", lambda device: True)
    monkeypatch.setattr(train, "step_seconds", lambda *a, **k: {"float32": float32, "bf16": bf16})
    chosen, reason = train.choose_bf16(tiny_gpt(), 2, 8, torch.device("cpu"))
    assert chosen is expected, f"{float32 / bf16:.2f}x faster under bf16 -> chosen {chosen} ({reason})"
    assert "measured" in reason and "--bf16" in reason, reason


def test_no_native_bf16_means_off_without_measuring(monkeypatch):
    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    monkeypatch.setattr(train, "step_seconds", lambda *a, **k: pytest.fail("measured without native bf16"))
    assert train.choose_bf16(tiny_gpt(), 2, 8, torch.device("cpu"))[0] is False


class Captured(Exception):
    pass


@pytest.mark.parametrize("extra, expected", [([], "muon"), (["--lora_r", "2"], "adamw_torch_fused"),
                                             (["--optim", "adamw_torch"], "adamw_torch")],
                         ids=["new_model_muon", "lora_adamw", "explicit_flag"])
def test_default_optimizer_is_muon_for_a_new_model_and_adamw_for_adapters(tmp_path, monkeypatch, extra, expected):
    def capture(model, args, **kwargs):
        raise Captured(args.optim)

    monkeypatch.setattr(train, "Trainer", capture)
    text = tmp_path / "t.txt"
    text.write_text("abc def ghi\n" * 50, encoding="utf-8")
    with pytest.raises(Captured) as chosen:
        train.main(["--train_file", str(text), "--output_dir", str(tmp_path / "o"), "--bf16", "false", "--use_cpu",
                    "--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=8", *extra])
    assert str(chosen.value) == expected, f"flags {extra}: optimizer {chosen.value}, expected {expected}"


@pytest.mark.parametrize("flags, measured, expected_bf16, reason_says", [
    ([], {"float32": 0.10, "bf16": 0.095}, False, "measured 100 ms per step in float32, 95 ms under bf16 (1.05x"),
    ([], {"float32": 0.10, "bf16": 0.05}, True, "measured 100 ms per step in float32, 50 ms under bf16 (2.00x"),
    (["--bf16", "false"], None, False, "--bf16 given"),
], ids=["measured_off", "measured_on", "flag_given"])
def test_train_results_record_the_precision_and_why(tmp_path, monkeypatch, flags, measured, expected_bf16,
                                                    reason_says):
    """A run whose bf16 was chosen by timing cannot be read (or redone) without the choice: train_results.json
    keeps bf16 and its reason, the same words the run printed."""
    monkeypatch.setattr(train, "native_bf16", lambda device: True)
    monkeypatch.setattr(train, "step_seconds", lambda *a, **k: measured or pytest.fail("measured with --bf16 given"))
    text, out = tmp_path / "t.txt", tmp_path / "o"
    text.write_text("abc def ghi\n" * 50, encoding="utf-8")
    assert train.main(["--train_file", str(text), "--output_dir", str(out), "--use_cpu", "--max_steps", "1",
                       "--save_strategy", "no", "--sample_tokens", "0", "--disable_tqdm", *flags,
                       "--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=8"]) == 0
    results = json.loads((out / "train_results.json").read_text())
    assert results.get("bf16") is expected_bf16, f"train_results.json bf16 = {results.get('bf16')!r}, " \
                                                 f"expected {expected_bf16}: {results}"
    assert reason_says in results.get("bf16_reason", ""), \
        f"train_results.json bf16_reason = {results.get('bf16_reason')!r}, expected it to say {reason_says!r}"
