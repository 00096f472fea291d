"""The --lora_* flags of minigpt.train and minibert.finetune (common/cli/training.py).

A LoRA run trains the adapters only, prints the trainable-parameter line when training starts,
and writes the adapter alone (adapter_config.json + adapter_model.safetensors, peft's format)
beside config.json and the tokenizer; from_pretrained of that folder loads the base model and
the adapter. Runs are tiny (a 1-layer model, a few steps on a text the test writes).
"""
from __future__ import annotations

import json
import random

import pytest
import torch

from common.errors import run_cli
from common.hub.pretrained import load_state_dict
from common.text.auto import load_tokenizer
from minibert import BertForSequenceClassification, BertTokenizer
from minibert.config import BertConfig
from minibert.finetune import main as finetune_main
from minigpt.model import GPT
from minigpt.sample import main as sample_main
from minigpt.train import main as train_main

GPT_TINY = ["--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=16", "--per_device_train_batch_size", "4",
            "--bf16", "false", "--use_cpu", "--disable_tqdm", "--save_strategy", "no", "--seed", "3"]


def write_text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("".join(f"{i}: the cat sat on the mat. a dog ran.\n" for i in range(40)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_cli")
    text = write_text(folder)
    out = folder / "base"
    assert train_main(["--train_file", str(text), "--output_dir", str(out), *GPT_TINY, "--max_steps", "4",
                       "--sample_tokens", "0"]) == 0
    return out, text


def test_gpt_lora_run_saves_only_the_adapter_and_reloads(gpt_base, tmp_path, capsys):
    base, text = gpt_base
    capsys.readouterr()
    out = tmp_path / "lora"
    argv = ["--train_file", str(text), "--output_dir", str(out), "--model_name_or_path", str(base),
            "--per_device_train_batch_size", "4", "--bf16", "false", "--use_cpu", "--disable_tqdm",
            "--save_strategy", "no", "--max_steps", "5", "--learning_rate", "1e-2", "--sample_tokens", "5",
            "--lora_r", "2", "--lora_target_modules", "query,value,c_fc"]
    assert train_main(argv) == 0
    err = capsys.readouterr().err
    line = next((l for l in err.splitlines() if "trainable params:" in l), None)
    assert line is not None, f"no trainable-parameter line in: {err[-500:]}"
    lora_params = 1 * (2 * (16 * 2 + 2 * 16) + (16 * 2 + 2 * 64))  # (query, value) + c_fc, A + B each
    assert f"trainable params: {lora_params:,} ||" in line, line
    names = sorted(p.name for p in out.iterdir())
    assert "adapter_config.json" in names and "adapter_model.safetensors" in names, names
    assert "model.safetensors" not in names, f"a LoRA run writes the adapter, not the whole model: {names}"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    tuned, plain = GPT.from_pretrained(out), GPT.from_pretrained(base)
    ids = torch.tensor([load_tokenizer(base).encode("the cat sat")])
    with torch.no_grad():
        changed = (tuned(ids).logits - plain(ids).logits).abs().max().item()
    assert changed > 0, "the trained adapter did not change the model"
    frozen = tuned.transformer.h[0].attn.query.base_layer.weight
    assert torch.equal(frozen, plain.transformer.h[0].attn.query.weight), "the frozen W moved"
    assert sample_main(["--model_name_or_path", str(out), "--prompt", "the", "--max_new_tokens", "5",
                        "--seed", "1", "--use_cpu"]) == 0


def test_lora_alpha_without_rank_is_one_error_line(gpt_base, tmp_path, capsys):
    base, text = gpt_base
    with pytest.raises(SystemExit) as info:
        run_cli(train_main, ["--train_file", str(text), "--output_dir", str(tmp_path / "x"), "--model_name_or_path",
                             str(base), "--lora_alpha", "16", "--use_cpu"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert info.value.code == 2 and len(err) == 1 and "--lora_r" in err[0], err


def test_bert_lora_finetune_trains_adapters_and_the_head_only(tmp_path, capsys):
    words = "a fine film truly great acting good story dull awful bad boring noise".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    base = tmp_path / "bert"
    BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=32)).bert.save_pretrained(base)
    tokenizer.save_pretrained(base)
    rng = random.Random(0)
    rows = ["sentence\tlabel"] + [f"{rng.choice(['a fine film', 'great acting'] if y else ['a dull film', 'bad noise'])}"
                                  f"\t{y}" for y in (rng.randint(0, 1) for _ in range(32))]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    capsys.readouterr()
    assert finetune_main(["--task", "classification", "--model_name_or_path", str(base), "--train_file",
                          str(tmp_path / "train.tsv"), "--validation_file", str(tmp_path / "train.tsv"),
                          "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "8",
                          "--use_cpu", "--disable_tqdm", "--lora_r", "4"]) == 0
    err = capsys.readouterr().err
    expected = 2 * (32 * 4 + 4 * 32) + (32 * 2 + 2)  # query + value adapters, classifier (modules_to_save)
    assert f"trainable params: {expected:,} ||" in err, err[-800:]
    saved = load_state_dict(base)
    tuned = BertForSequenceClassification.from_pretrained(out)
    assert tuned.config.num_labels == 2
    frozen = tuned.bert.encoder.layer[0].attention.self.query.base_layer.weight
    assert torch.equal(frozen, saved["encoder.layer.0.attention.self.query.weight"]), "the frozen W moved"
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 32
