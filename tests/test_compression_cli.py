"""The compression tools: `python -m minibert.distill`, `python -m minibert.quantize`, `python -m minigpt.quantize`.

Tiny models on files the tests write: the student starts from the teacher layers it copies, trains, and
loads like any fine-tuned model; quantized folders load with from_pretrained; bad input is one error line.
The figures on real data are in docs/results/compression.md.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from common.errors import run_cli
from common.nn.quantization import Int8Linear, is_quantized
from common.text.char import CharTokenizer
from common.text.wordpiece import BertTokenizer
from minibert import BertConfig, BertForSequenceClassification
from minibert.distill import main as distill_main, student_config, student_from_teacher
from minibert.quantize import main as bert_quantize_main
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.quantize import main as gpt_quantize_main

WORDS = "a fine film truly great acting good story dull awful bad boring noise".split()
FAST = ["--per_device_train_batch_size", "8", "--use_cpu", "--disable_tqdm", "--save_strategy", "no", "--seed", "3"]


def write_vocab(folder: Path, words) -> BertTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizer(str(folder / "vocab.txt"))


def write_data(path: Path, n: int, seed: int, labels=("0", "1")) -> Path:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        y = rng.randint(0, 1)
        rows.append(f"{rng.choice(['a fine film', 'great acting', 'good story'] if y else ['a dull film', 'bad noise', 'boring story'])}"
                    f"\t{labels[y]}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("compression")
    teacher = folder / "teacher"
    tokenizer = write_vocab(teacher, WORDS)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, id2label={0: "0", 1: "1"})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    return {"folder": folder, "teacher": teacher, "train": write_data(folder / "train.tsv", 48, 1),
            "dev": write_data(folder / "dev.tsv", 16, 2)}


def base_argv(setup, out, *extra):
    return ["--task", "classification", "--teacher_name_or_path", str(setup["teacher"]),
            "--train_file", str(setup["train"]), "--validation_file", str(setup["dev"]),
            "--output_dir", str(out), "--max_steps", "2", *FAST, *extra]


def test_student_layers_equal_the_teacher_layers_they_copy(setup):
    teacher = BertForSequenceClassification.from_pretrained(setup["teacher"])

    class Opts:
        student_num_hidden_layers, student_init, alpha_cos = 2, "teacher_layers", 0.0
        student_hidden_size = student_num_attention_heads = student_intermediate_size = None

    student = student_from_teacher(teacher, student_config(teacher.config, Opts), "teacher_layers", 0)
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for i, j in enumerate([0, 2]):
        for key in [k for k in t if k.startswith(f"bert.encoder.layer.{j}.")]:
            mine = key.replace(f"layer.{j}.", f"layer.{i}.")
            assert torch.equal(s[mine], t[key]), f"student {mine} is not teacher {key}"
    for key in [k for k in t if ".encoder.layer." not in k]:
        assert torch.equal(s[key], t[key]), f"{key} must be copied from the teacher"


def test_distill_trains_a_student_that_loads_like_any_model(setup, tmp_path, capsys):
    out = tmp_path / "student"
    assert distill_main(base_argv(setup, out, "--student_num_hidden_layers", "2", "--alpha_cos", "0.5")) == 0
    student = BertForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "0", 1: "1"}
    results = json.loads((out / "eval_results.json").read_text())
    assert results["train_steps"] == 2 and 0.0 <= results["eval_accuracy"] <= 1.0
    train = json.loads((out / "train_results.json").read_text())
    assert train["temperature"] == 2.0 and train["student_init"] == "teacher_layers"
    assert (out / "vocab.txt").is_file(), "the student carries the teacher's tokenizer"


@pytest.mark.slow
def test_distillation_moves_the_student_towards_the_teacher(setup, tmp_path):
    """alpha_task = 0: the only signal is the teacher's distribution, so the KL must fall."""
    from common.nn.distillation import distillation_loss
    from common.text.auto import load_tokenizer

    out = tmp_path / "kd"
    argv = base_argv(setup, out, "--student_num_hidden_layers", "1", "--student_init", "scratch",
                     "--alpha_ce", "1", "--alpha_task", "0", "--learning_rate", "3e-3")
    argv[argv.index("--max_steps") + 1] = "20"
    assert distill_main(argv) == 0
    teacher = BertForSequenceClassification.from_pretrained(setup["teacher"])
    tokenizer = load_tokenizer(setup["teacher"])
    lines = setup["train"].read_text().splitlines()[1:]
    rows = [torch.tensor(tokenizer.encode(line.split("\t")[0])) for line in lines]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = (ids != 0).long()
    torch.manual_seed(3)
    fresh = student_from_teacher(teacher, BertConfig.from_dict({**teacher.config.to_dict(), "num_hidden_layers": 1}),
                                 "scratch", 3).eval()
    trained = BertForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        target = teacher(ids, mask).logits
        before = float(distillation_loss(fresh(ids, mask).logits, target))
        after = float(distillation_loss(trained(ids, mask).logits, target))
    assert after < 0.5 * before, f"KL to the teacher went from {before:.4f} to {after:.4f}; distillation must reduce it"


def exit_with_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert info.value.code == 2 and len(errors) == 1, f"exit {info.value.code}, stderr {err}"
    return errors[0]


def test_bad_distillation_inputs_exit_2_with_one_line(setup, tmp_path, capsys):
    line = exit_with_error(distill_main, base_argv(setup, tmp_path / "a", "--student_num_hidden_layers", "6"), capsys)
    assert "--student_num_hidden_layers 6" in line and "4 layers" in line, line
    line = exit_with_error(distill_main, base_argv(setup, tmp_path / "b", "--student_num_hidden_layers", "2",
                                                   "--student_init", "scratch", "--student_hidden_size", "64"), capsys)
    assert "wider" in line and "hidden_size" in line, line
    other = write_data(tmp_path / "other.tsv", 16, 3, labels=("neg", "pos"))
    argv = base_argv(setup, tmp_path / "c", "--student_num_hidden_layers", "2")
    argv[argv.index("--train_file") + 1] = argv[argv.index("--validation_file") + 1] = str(other)
    line = exit_with_error(distill_main, argv, capsys)
    assert "labels" in line and "neg" in line, line
    write_vocab(tmp_path / "tok", ["other", "words"])
    line = exit_with_error(distill_main, base_argv(setup, tmp_path / "d", "--student_num_hidden_layers", "2",
                                                   "--tokenizer_name", str(tmp_path / "tok")), capsys)
    assert "--tokenizer_name" in line and "same tokens" in line, line
    line = exit_with_error(distill_main, base_argv(setup, tmp_path / "e", "--student_num_hidden_layers", "2",
                                                   "--alpha_ce", "0", "--alpha_task", "0"), capsys)
    assert "nothing to learn" in line, line


def test_bert_quantize_folder_loads_and_refuses_a_second_pass(setup, tmp_path, capsys):
    out = tmp_path / "int8"
    assert bert_quantize_main(["--model_name_or_path", str(setup["teacher"]), "--output_dir", str(out)]) == 0
    assert "smaller" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "absmax_int8"
    model = BertForSequenceClassification.from_pretrained(out)
    teacher = BertForSequenceClassification.from_pretrained(setup["teacher"])
    assert is_quantized(model) and isinstance(model.classifier, torch.nn.Linear), "the head stays in float"
    ids = torch.randint(5, 18, (2, 7))
    assert (model(ids).logits - teacher(ids).logits).abs().max() < 0.05
    line = exit_with_error(bert_quantize_main, ["--model_name_or_path", str(out), "--output_dir",
                                                str(tmp_path / "again")], capsys)
    assert "already quantized" in line, line
    line = exit_with_error(bert_quantize_main, ["--model_name_or_path", str(setup["teacher"]), "--output_dir",
                                                str(out)], capsys)
    assert "--overwrite_output_dir" in line, line
    line = exit_with_error(distill_main, ["--task", "classification", "--teacher_name_or_path", str(out),
                                          "--train_file", str(setup["train"]), "--validation_file",
                                          str(setup["dev"]), "--output_dir", str(tmp_path / "s"),
                                          "--student_num_hidden_layers", "2", *FAST], capsys)
    assert "quantized" in line and "float teacher" in line, line


def test_gpt_quantize_folder_loads_and_keeps_the_tied_table_in_float(tmp_path):
    text = "to be or not to be, that is the question\n" * 4
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tokenizer), block_size=32, n_embd=32, n_layer=2, n_head=4)).eval()
    model.save_pretrained(tmp_path / "gpt")
    tokenizer.save_pretrained(tmp_path / "gpt")
    assert gpt_quantize_main(["--model_name_or_path", str(tmp_path / "gpt"), "--output_dir", str(tmp_path / "q")]) == 0
    loaded = GPT.from_pretrained(tmp_path / "q")
    assert isinstance(loaded.transformer.h[0].mlp.c_fc, Int8Linear)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight, "the tied table stays tied, in float"
    ids = torch.tensor([tokenizer.encode("to be or not")])
    assert (loaded(ids).logits - model(ids).logits).abs().max() < 0.05
    out = loaded.generate(ids, max_new_tokens=20)  # long enough for generate's packed fast path
    assert out.shape == (1, ids.size(1) + 20), "an int8 GPT generates (textbook forward, no float packing)"


def test_a_pruned_teacher_fine_tunes_and_an_int8_one_is_refused(setup, tmp_path, capsys):
    from minibert.finetune import main as finetune_main

    model = BertForSequenceClassification.from_pretrained(setup["teacher"])
    model.prune_heads({0: [0, 1], 3: [2]})
    model.save_pretrained(tmp_path / "pruned")
    (tmp_path / "pruned" / "vocab.txt").write_text((setup["teacher"] / "vocab.txt").read_text())
    argv = ["--task", "classification", "--train_file", str(setup["train"]), "--validation_file", str(setup["dev"]),
            "--max_steps", "1", *FAST]
    assert finetune_main(["--model_name_or_path", str(tmp_path / "pruned"), "--output_dir", str(tmp_path / "ft"),
                          *argv]) == 0
    tuned = BertForSequenceClassification.from_pretrained(tmp_path / "ft")
    assert tuned.bert.encoder.layer[0].attention.self.num_heads == 2, "the pruned shape survives fine-tuning"
    assert bert_quantize_main(["--model_name_or_path", str(setup["teacher"]), "--output_dir", str(tmp_path / "q")]) == 0
    line = exit_with_error(finetune_main, ["--model_name_or_path", str(tmp_path / "q"), "--output_dir",
                                           str(tmp_path / "ft2"), *argv], capsys)
    assert "int8" in line and "float" in line, line
