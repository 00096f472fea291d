"""A saved model in --output_dir (a save_pretrained folder, no checkpoints) is never overwritten
without --overwrite_output_dir; the message names what is there and the three ways forward."""
from __future__ import annotations

import hashlib

import pytest
import torch

from _trainer_toys import ClassificationDataset, ToyClassifier
from common.errors import ConfigError, run_cli
from common.train.args import TrainingArguments
from common.train.trainer import Trainer
from minigpt import GPT, GPTConfig
from minigpt.train import main as train_main

TEXT = "abc defg\nhead bag\n" * 40


def digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def exit_status(argv) -> int:
    """What `python -m minigpt.train argv` exits with, run in this process."""
    try:
        return run_cli(train_main, argv) or 0
    except SystemExit as e:
        return e.code


def saved_gpt(folder) -> None:
    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=16, vocab_size=9)).save_pretrained(folder)


def gpt_flags(tmp_path, *extra) -> list[str]:
    (tmp_path / "train.txt").write_text(TEXT)
    return ["--train_file", str(tmp_path / "train.txt"), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
            "--disable_tqdm", "--use_cpu", "--per_device_train_batch_size", "2", "--bf16", "false", "--sample_tokens", "0",
            "--config_overrides", "n_layer=1,n_head=2,n_embd=8,block_size=16", *extra]


def test_the_cli_refuses_and_leaves_every_file_as_it_was(tmp_path, capsys):
    saved_gpt(tmp_path / "out")
    before = digest(tmp_path / "out")
    assert exit_status(gpt_flags(tmp_path)) == 2
    error = capsys.readouterr().err
    assert "already holds a saved model (config.json, model.safetensors)" in error, error
    assert digest(tmp_path / "out") == before, "the saved model was touched"


def test_with_overwrite_output_dir_the_run_replaces_it(tmp_path):
    saved_gpt(tmp_path / "out")
    before = digest(tmp_path / "out")
    assert exit_status(gpt_flags(tmp_path, "--overwrite_output_dir")) == 0
    after = digest(tmp_path / "out")
    assert after["model.safetensors"] != before["model.safetensors"], "the new model was not written"


def test_the_trainer_refuses_from_python_too_and_names_the_three_ways_forward(tmp_path):
    saved_gpt(tmp_path)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, use_cpu=True, disable_tqdm=True)
    with pytest.raises(ConfigError) as raised:
        Trainer(ToyClassifier(), args, train_dataset=ClassificationDataset()).train()
    assert str(raised.value) == (
        f"output_dir: {tmp_path} already holds a saved model (config.json, model.safetensors) that this run would "
        "overwrite; pass --overwrite_output_dir to replace it when training ends, another --output_dir to keep it, "
        f"or --model_name_or_path {tmp_path} with another --output_dir to start from it")


def test_a_folder_with_only_a_tokenizer_or_results_is_not_a_saved_model(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    (tmp_path / "notes.md").write_text("mine")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, use_cpu=True, disable_tqdm=True,
                             save_strategy="no")
    Trainer(ToyClassifier(), args, train_dataset=ClassificationDataset()).train()
    assert (tmp_path / "notes.md").read_text() == "mine"
