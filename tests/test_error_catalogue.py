"""The catalogue of bad inputs: every command-line tool fails with ONE line that names the file
(and the line or field) and the fix, exit status 2, and no traceback (--debug shows it).

Each entry of CATALOGUE is (id, tool, argv, files to create, regex the error line must match).
`{tmp}` in argv is the test's folder; files are created there first (text, bytes, or built by a
function: tiny model folders and checkpoints). The tools are the real ones:

    fast part (every run)  every entry: run_cli(tool.main, argv) in this process, the way `python -m tool`
                           calls it: exit status and stderr checked, nothing imported twice
    slow part              SUBPROCESS_IDS (32 entries, every tool and every kind of mistake):
                           `python -m tool argv` in a subprocess (2-3 s of imports each);
                           CATALOGUE_ALL_SUBPROCESSES=1 runs all of them that way

Every error must fire before any training starts; an entry that trains is a bug in the tool.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HINT = "(run again with --debug to see the traceback)"
FileSpec = Union[str, bytes, Callable[[Path], None]]


@dataclass
class Case:
    id: str
    tool: str  # module with main(argv), run as `python -m tool`
    argv: list[str]
    expect: str  # regex searched in the single `error:` line
    files: dict[str, FileSpec] = field(default_factory=dict)
    exit_code: int = 2


# -------------------------------------------------------------- builders of model folders
def tiny_gpt(vocab: str = "abcdefgh \n", n_embd: int = 8, vocab_size: int = 0) -> Callable[[Path], None]:
    """A saved character GPT (config.json + model.safetensors + char tokenizer files)."""
    def build(folder: Path) -> None:
        from common.text.auto import CharTokenizer
        from minigpt import GPT, GPTConfig

        tokenizer = CharTokenizer(sorted(set(vocab)))
        torch.manual_seed(0)
        GPT(GPTConfig(n_layer=1, n_head=2, n_embd=n_embd, block_size=16,
                      vocab_size=vocab_size or len(tokenizer))).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return build


BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat ran on mat good bad movie was".split()


def tiny_bert(vocab_size: int = 0, **config) -> Callable[[Path], None]:
    """A saved BERT pretraining checkpoint (config.json + model.safetensors + vocab.txt), 32 positions."""
    def build(folder: Path) -> None:
        from common.text.auto import BertTokenizer
        from minibert import BertConfig, BertForPreTraining

        torch.manual_seed(0)
        sizes = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=32, **config)
        BertForPreTraining(BertConfig(vocab_size=vocab_size or len(BERT_VOCAB), **sizes)).save_pretrained(folder)
        BertTokenizer(vocab=BERT_VOCAB).save_pretrained(folder)
    return build


def then(build: Callable[[Path], None], change: Callable[[Path], None]) -> Callable[[Path], None]:
    def both(folder: Path) -> None:
        build(folder)
        change(folder)
    return both


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


def remove_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def edit_config(**changes) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return edit


class RunsCodeWhenUnpickled:
    """Unpickling calls open(marker, "w"): the marker file existing means the payload ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_pickle_instead_of_weights(folder: Path) -> None:
    state = {k: v for k, v in __import__("common.hub.pretrained", fromlist=["x"]).load_state_dict(folder).items()}
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": RunsCodeWhenUnpickled(str(folder.parent / "PAYLOAD_RAN"))},
               folder / "pytorch_model.bin")


def previous_run(folder: Path) -> None:
    """An output_dir holding a training run: one complete checkpoint folder."""
    (folder / "checkpoint-1").mkdir(parents=True)
    (folder / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1}')


def checkpoint_of_another_model(folder: Path) -> None:
    """A Trainer checkpoint folder whose weights come from a GPT of another width."""
    tiny_gpt(n_embd=12)(folder)
    (folder / "trainer_state.json").write_text('{"global_step": 1}')


TEXT = "abc defg\nhead bag\n" * 40  # 720 characters of the tiny GPT's alphabet
NOT_UTF8 = "abc defg\n".encode() * 3 + b"caf\xe9\n" + "abc\n".encode()  # byte 30 is latin-1
CORPUS = "\n\n".join("\n".join(f"the cat {d} sat on mat {i}." for i in range(5)) for d in range(6)) + "\n"
DEMO_LABELED = ["--quick", "--data", "{tmp}/corpus.txt", "--train_file", "{tmp}/t.tsv", "--validation_file", "{tmp}/v.tsv",
                "--out", "{tmp}/d"]
TSV_TRAIN = "sentence\tlabel\nthe cat sat\t1\nthe dog ran\t0\n"
TSV_DEV = "sentence\tlabel\nthe movie was good\t1\n"
CONLL_TRAIN = "the O\ncat B-X\n\nthe O\ndog B-X\n"
SQUAD = json.dumps({"data": [{"paragraphs": [{"context": "the cat sat", "qas": [
    {"id": "q1", "question": "who sat", "answers": [{"text": "cat", "answer_start": 4}]}]}]}]})
BERT_SMALL = "hidden_size=8,num_attention_heads=2,num_hidden_layers=1,intermediate_size=16,max_position_embeddings=32"


def finetune(task: str = "classification", train: str = "{tmp}/train.tsv", dev: str = "{tmp}/dev.tsv",
             model: str = "{tmp}/bert", *argv: str) -> list[str]:
    return ["--task", task, "--model_name_or_path", model, "--train_file", train, "--validation_file", dev,
            "--output_dir", "{tmp}/out", "--max_steps", "1", "--disable_tqdm", "--use_cpu", *argv]


def pretrain(*argv: str, train_file: str = "{tmp}/text.txt") -> list[str]:
    return ["--train_file", train_file, "--output_dir", "{tmp}/out", "--max_steps", "1", "--disable_tqdm", "--use_cpu",
            "--validation_split_percentage", "0", "--tokenizer_name", "{tmp}/bert", "--config_overrides", BERT_SMALL,
            "--max_seq_length", "16", *argv]


CLASSIFY = {"train.tsv": TSV_TRAIN, "dev.tsv": TSV_DEV}
SENTENCES = "the cat sat on the mat\nthe dog ran\n\nthe movie was good\na cat was bad\n"

GPT_TRAIN = ["--output_dir", "{tmp}/out", "--max_steps", "1", "--disable_tqdm", "--use_cpu",
             "--per_device_train_batch_size", "2", "--config_overrides", "n_layer=1,n_head=2,n_embd=8,block_size=16"]


def gpt_train(*argv: str, train_file: str = "{tmp}/train.txt", overrides: str = "") -> list[str]:
    flags = list(GPT_TRAIN)
    if overrides:
        flags[-1] += "," + overrides
    return ["--train_file", train_file, *flags, *argv]


CATALOGUE: list[Case] = [
    # ---------------------------------------------------------- minigpt.train: the text file
    Case("gpt-train-missing-file", "minigpt.train", gpt_train(train_file="{tmp}/nope.txt"),
         r"not found: .*nope\.txt .*check the path"),
    Case("gpt-train-folder-not-file", "minigpt.train", gpt_train(train_file="{tmp}/data"),
         r"data is a folder; expected a file", {"data/readme.txt": "x"}),
    Case("gpt-train-empty-file", "minigpt.train", gpt_train(), r"train\.txt.* empty", {"train.txt": ""}),
    Case("gpt-train-whitespace-file", "minigpt.train", gpt_train(), r"train\.txt.* empty .*whitespace",
         {"train.txt": " \n\t\n  \n"}),
    Case("gpt-train-not-utf8", "minigpt.train", gpt_train(), r"train\.txt: byte 30 \(line 4\) is not valid utf-8.*--encoding",
         {"train.txt": NOT_UTF8}),
    Case("gpt-train-unknown-encoding", "minigpt.train", gpt_train("--encoding", "utf-9"),
         r"--encoding 'utf-9' is not a known text encoding", {"train.txt": TEXT}),
    Case("gpt-train-utf16-file", "minigpt.train", gpt_train(), r"byte 0 .*UTF-16 byte-order mark: pass --encoding utf-16",
         {"train.txt": TEXT.encode("utf-16")}),
    Case("gpt-train-text-shorter-than-a-window", "minigpt.train", gpt_train(),
         r"fewer than one window of block_size=16", {"train.txt": "abc\n"}),
    # ---------------------------------------------------------- minigpt.train: the command line itself
    Case("gpt-train-flag-value-not-a-number", "minigpt.train", gpt_train("--learning_rate", "abc"),
         r"argument --learning_rate.*: invalid float value: 'abc' \(see: python -m minigpt\.train --help\)"),
    Case("gpt-train-unknown-flag", "minigpt.train", gpt_train("--learnrate", "1e-3"),
         r"unrecognized arguments: --learnrate 1e-3"),
    Case("gpt-train-abbreviated-flag", "minigpt.train", gpt_train("--learning_r", "1e-3"),
         r"unrecognized arguments: --learning_r 1e-3", {"train.txt": TEXT}),  # never a silent --learning_rate
    Case("gpt-train-required-flag-missing", "minigpt.train", ["--output_dir", "{tmp}/out"],
         r"the following arguments are required: --train_file"),
    # ---------------------------------------------------------- minigpt.train: the model config
    Case("gpt-config-heads-do-not-divide", "minigpt.train", gpt_train(overrides="n_embd=10,n_head=3"),
         r"n_embd: must be divisible by n_head", {"train.txt": TEXT}),
    Case("gpt-config-negative-size", "minigpt.train", gpt_train(overrides="n_layer=-1"),
         r"n_layer: must be a positive integer, got -1", {"train.txt": TEXT}),
    Case("gpt-config-negative-rate", "minigpt.train", gpt_train(overrides="dropout=-0.1"),
         r"dropout: .*\[0, 1\), got -0\.1", {"train.txt": TEXT}),
    Case("gpt-config-unknown-activation", "minigpt.train", gpt_train(overrides="activation_function=swishy"),
         r"activation_function: unknown 'swishy'; choose one of", {"train.txt": TEXT}),
    Case("gpt-config-unknown-field", "minigpt.train", gpt_train(overrides="n_layers=2"),
         r"--config_overrides: unknown field 'n_layers'", {"train.txt": TEXT}),
    # ---------------------------------------------------------- minigpt.train: training arguments
    Case("gpt-batch-size-zero", "minigpt.train", gpt_train("--per_device_train_batch_size", "0"),
         r"per_device_train_batch_size: must be an integer >= 1, got 0", {"train.txt": TEXT}),
    Case("gpt-negative-learning-rate", "minigpt.train", gpt_train("--learning_rate", "-1"),
         r"learning_rate: must be >= 0, got -1", {"train.txt": TEXT}),
    Case("gpt-lr-scheduler-kwargs-not-json", "minigpt.train",
         gpt_train("--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs", "min_lr=0.1"),
         r"lr_scheduler_kwargs: not valid JSON \(Expecting value\): 'min_lr=0\.1'; write an object, e\.g\. "
         r"--lr_scheduler_kwargs '\{\"min_lr_rate\": 0\.1\}'", {"train.txt": TEXT}),
    Case("gpt-cosine-with-min-lr-without-a-floor", "minigpt.train", gpt_train("--lr_scheduler_type", "cosine_with_min_lr"),
         r"lr_scheduler_kwargs: cosine_with_min_lr needs exactly one of min_lr \(the floor\) or min_lr_rate",
         {"train.txt": TEXT}),
    Case("gpt-lr-scheduler-kwargs-of-another-schedule", "minigpt.train",
         gpt_train("--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"min_lr": 1e-5}'),
         r"lr_scheduler_kwargs: \['min_lr'\] are not arguments of the 'cosine' schedule \(it takes none\)",
         {"train.txt": TEXT}),
    Case("gpt-eval-steps-missing", "minigpt.train", gpt_train("--eval_strategy", "steps"),
         r"eval_steps: .*pass --eval_steps N", {"train.txt": TEXT}),
    Case("gpt-output-dir-holds-a-run", "minigpt.train", gpt_train(),
         r"output_dir: .*out already holds a training run .*--overwrite_output_dir",
         {"train.txt": TEXT, "out": previous_run}),
    Case("gpt-output-dir-holds-a-saved-model", "minigpt.train", gpt_train(),
         r"output_dir: .*out already holds a saved model \(config\.json, model\.safetensors\) that this run would "
         r"overwrite; pass --overwrite_output_dir to replace it when training ends, another --output_dir to keep it, "
         r"or --model_name_or_path .*out with another --output_dir to start from it",
         {"train.txt": TEXT, "out": tiny_gpt()}),
    Case("gpt-resume-missing-checkpoint", "minigpt.train", gpt_train("--resume_from_checkpoint", "{tmp}/out/checkpoint-9"),
         r"--resume_from_checkpoint .*checkpoint-9: the folder does not exist", {"train.txt": TEXT}),
    Case("gpt-resume-another-model", "minigpt.train",
         gpt_train("--resume_from_checkpoint", "{tmp}/other/checkpoint-1"),
         r"checkpoint-1 is a checkpoint of a different model: .*shape .*same model configuration",
         {"train.txt": TEXT, "other/checkpoint-1": checkpoint_of_another_model}),
    # ---------------------------------------------------------- minigpt.train / sample: model folders
    Case("gpt-model-folder-missing", "minigpt.train",
         ["--train_file", "{tmp}/train.txt", "--model_name_or_path", "{tmp}/nomodel", "--output_dir", "{tmp}/out"],
         r"model folder not found: .*nomodel.*Nothing is downloaded", {"train.txt": TEXT}),
    Case("gpt-model-folder-without-weights", "minigpt.sample", ["--model_name_or_path", "{tmp}/m"],
         r"no weights in .*m: expected model\.safetensors", {"m": then(tiny_gpt(), remove_weights)}),
    Case("gpt-truncated-safetensors", "minigpt.sample", ["--model_name_or_path", "{tmp}/m"],
         r"model\.safetensors: truncated or corrupted safetensors file", {"m": then(tiny_gpt(), truncate_weights)}),
    Case("gpt-pickle-with-code", "minigpt.sample", ["--model_name_or_path", "{tmp}/m"],
         r"pytorch_model\.bin: refused to load: unpickling it would call .*open.*never execute pickled code",
         {"m": then(tiny_gpt(), code_pickle_instead_of_weights)}),
    Case("gpt-config-json-not-json", "minigpt.sample", ["--model_name_or_path", "{tmp}/m"],
         r"config\.json: not valid JSON \(line 1\)", {"m": then(tiny_gpt(), lambda f: (f / "config.json").write_text("{n_embd: 8"))}),
    Case("gpt-config-json-bad-field", "minigpt.sample", ["--model_name_or_path", "{tmp}/m"],
         r"n_embd: must be divisible by n_head .*field of .*config\.json", {"m": then(tiny_gpt(), edit_config(n_head=3))}),
    Case("gpt-tokenizer-larger-than-embedding", "minigpt.train",
         ["--train_file", "{tmp}/train.txt", "--model_name_or_path", "{tmp}/m", "--output_dir", "{tmp}/out"],
         r"the tokenizer has 10 tokens but the model in .*m has vocab_size 6 embeddings",
         {"train.txt": TEXT, "m": tiny_gpt(vocab_size=6)}),
    Case("gpt-block-size-beyond-the-model", "minigpt.train",
         ["--train_file", "{tmp}/train.txt", "--model_name_or_path", "{tmp}/m", "--output_dir", "{tmp}/out",
          "--block_size", "64"],
         r"--block_size 64 exceeds the context of the saved model \(16\)", {"train.txt": TEXT, "m": tiny_gpt()}),
    Case("gpt-sample-negative-new-tokens", "minigpt.sample",
         ["--model_name_or_path", "{tmp}/m", "--max_new_tokens", "-1"], r"--max_new_tokens must be >= 0",
         {"m": tiny_gpt()}),
    Case("gpt-sample-prompt-unknown-character", "minigpt.sample", ["--model_name_or_path", "{tmp}/m", "--prompt", "xyz"],
         r"character 'x' \(U\+0078\) at position 0 is not among the 10 characters", {"m": tiny_gpt()}),
    Case("gpt-sample-abbreviated-flag", "minigpt.sample", ["--model_name_or_path", "{tmp}/m", "--max_new", "5"],
         r"unrecognized arguments: --max_new 5", {"m": tiny_gpt()}),
    Case("gpt-sample-temperature-zero", "minigpt.sample", ["--model_name_or_path", "{tmp}/m", "--temperature", "0"],
         r"temperature must be > 0 when sampling.*greedy", {"m": tiny_gpt()}),
    Case("gpt-sample-top-p-above-one", "minigpt.sample", ["--model_name_or_path", "{tmp}/m", "--top_p", "1.5"],
         r"top_p must be in \(0, 1\]", {"m": tiny_gpt()}),
    Case("gpt-train-output-dir-is-a-file", "minigpt.train", gpt_train()[:2] + ["--output_dir", "{tmp}/afile"] + gpt_train()[4:],
         r"afile: File exists; .*a file where a folder is needed", {"train.txt": TEXT, "afile": "not a folder"}),
    # ---------------------------------------------------------- minibert.finetune: labeled files
    Case("ft-train-file-missing", "minibert.finetune", finetune(train="{tmp}/nope.tsv"),
         r"classification file not found: .*nope\.tsv", {"dev.tsv": TSV_DEV, "bert": tiny_bert()}),
    Case("ft-tsv-without-the-label-column", "minibert.finetune", finetune("classification", "{tmp}/train.tsv",
         "{tmp}/dev.tsv", "{tmp}/bert", "--label_column_name", "y"),
         r"train\.tsv: no column 'y' \(columns: sentence, label\).*--label_column_name", {**CLASSIFY, "bert": tiny_bert()}),
    Case("ft-tsv-not-utf8", "minibert.finetune", finetune(),
         r"train\.tsv: byte 22 \(line 2\) is not valid utf-8.*--encoding",
         {"train.tsv": b"sentence\tlabel\nthe caf\xe9 sat\t1\n", "dev.tsv": TSV_DEV, "bert": tiny_bert()}),
    Case("ft-label-unseen-in-training", "minibert.finetune", finetune(),
         r"dev\.tsv line 2: label 3 does not occur in the training data \(known: 0, 1\)",
         {"train.tsv": TSV_TRAIN, "dev.tsv": "sentence\tlabel\nthe cat\t3\n", "bert": tiny_bert()}),
    Case("ft-classification-file-without-extension", "minibert.finetune", finetune(train="{tmp}/train"),
         r"train: cannot tell the format from the extension ''; name the file \*\.tsv, \*\.csv or \*\.jsonl",
         {"train": TSV_TRAIN, "dev.tsv": TSV_DEV, "bert": tiny_bert()}),
    Case("ft-csv-header-only", "minibert.finetune", finetune(train="{tmp}/train.csv"),
         r"train\.csv has a header but no examples", {"train.csv": "sentence,label\n", "dev.tsv": TSV_DEV, "bert": tiny_bert()}),
    Case("ft-csv-that-still-does-not-parse", "minibert.finetune", finetune(train="{tmp}/train.csv"),
         r"train\.csv line 2: 3 fields, but the header has 2 \(sentence, label\); read as comma-separated \(detected "
         r"from the header line; pass --delimiter tab, comma, semicolon or the character to override it\)",
         {"train.csv": "sentence,label\nthe cat, sat,1\n", "dev.tsv": TSV_DEV, "bert": tiny_bert()}),
    Case("ft-delimiter-not-one-character", "minibert.finetune", finetune("classification", "{tmp}/train.tsv",
         "{tmp}/dev.tsv", "{tmp}/bert", "--delimiter", "::"),
         r"delimiter: '::' is not one character; pass tab, comma, semicolon or the character itself \(--delimiter ';'\)",
         {**CLASSIFY, "bert": tiny_bert()}),
    Case("ft-delimiter-for-a-conll-file", "minibert.finetune", finetune("ner", "{tmp}/train.txt", "{tmp}/train.txt",
         "{tmp}/bert", "--delimiter", "tab"),
         r"--delimiter is for --task classification files, not --task ner; drop it",
         {"train.txt": CONLL_TRAIN, "bert": tiny_bert()}),
    Case("ft-conll-wrong-field-count", "minibert.finetune", finetune("ner", "{tmp}/train.txt", "{tmp}/train.txt"),
         r"train\.txt line 2: 3 fields, expected 2 .*'cat I-X O'", {"train.txt": "the B-X\ncat I-X O\n", "bert": tiny_bert()}),
    Case("ft-conll-tag-unseen-in-training", "minibert.finetune", finetune("ner", "{tmp}/train.txt", "{tmp}/dev.txt"),
         r"dev\.txt line 2: tag 'B-Y' does not occur in the training data",
         {"train.txt": CONLL_TRAIN, "dev.txt": "the O\ncat B-Y\n", "bert": tiny_bert()}),
    Case("ft-squad-answer-not-at-its-offset", "minibert.finetune", finetune("qa", "{tmp}/train.json", "{tmp}/train.json"),
         r"train\.json: question q1: answer 'cat' is not at answer_start 0",
         {"train.json": SQUAD.replace('"answer_start": 4', '"answer_start": 0'), "bert": tiny_bert()}),
    Case("ft-squad-not-json", "minibert.finetune", finetune("qa", "{tmp}/train.json", "{tmp}/train.json"),
         r"train\.json line 1: not valid JSON", {"train.json": SQUAD[:40], "bert": tiny_bert()}),
    # ---------------------------------------------------------- minibert.finetune: the model folder and flags
    Case("ft-sequence-longer-than-positions", "minibert.finetune", finetune("classification", "{tmp}/train.tsv",
         "{tmp}/dev.tsv", "{tmp}/bert", "--max_seq_length", "64"),
         r"--max_seq_length 64 exceeds the model's max_position_embeddings \(32\); use --max_seq_length 32",
         {**CLASSIFY, "bert": tiny_bert()}),
    Case("ft-tokenizer-larger-than-embedding", "minibert.finetune", finetune(),
         r"the tokenizer has 17 tokens but the model in .*bert has vocab_size 12 embeddings",
         {**CLASSIFY, "bert": tiny_bert(vocab_size=12)}),
    Case("ft-model-folder-without-weights", "minibert.finetune", finetune(),
         r"no weights in .*bert: expected model\.safetensors .*save_pretrained", {**CLASSIFY, "bert": then(tiny_bert(), remove_weights)}),
    Case("ft-truncated-safetensors", "minibert.finetune", finetune(),
         r"bert/model\.safetensors: truncated or corrupted safetensors file", {**CLASSIFY, "bert": then(tiny_bert(), truncate_weights)}),
    Case("ft-pickle-with-code", "minibert.finetune", finetune(),
         r"pytorch_model\.bin: refused to load: unpickling it would call .*open",
         {**CLASSIFY, "bert": then(tiny_bert(), code_pickle_instead_of_weights)}),
    Case("ft-config-json-heads-do-not-divide", "minibert.finetune", finetune(),
         r"hidden_size: 8 is not divisible by num_attention_heads \(3\).*field of .*config\.json",
         {**CLASSIFY, "bert": then(tiny_bert(), edit_config(num_attention_heads=3))}),
    Case("ft-config-json-negative-rate", "minibert.finetune", finetune(),
         r"hidden_dropout_prob: .*\[0, 1\), got -0\.1 \(field of .*config\.json",
         {**CLASSIFY, "bert": then(tiny_bert(), edit_config(hidden_dropout_prob=-0.1))}),
    Case("ft-config-json-of-a-gpt", "minibert.finetune", finetune(),
         r"model_type: this config\.json describes a 'minigpt' model, not 'bert'", {**CLASSIFY, "bert": tiny_gpt()}),
    Case("ft-unknown-task", "minibert.finetune", finetune("tagging"), r"--task: invalid choice: 'tagging'"),
    Case("ft-zero-train-samples", "minibert.finetune", finetune("classification", "{tmp}/train.tsv", "{tmp}/dev.tsv",
         "{tmp}/bert", "--max_train_samples", "0"), r"--max_train_samples must be >= 1, got 0", {**CLASSIFY, "bert": tiny_bert()}),
    # ---------------------------------------------------------- minibert.pretrain
    Case("pt-train-file-empty", "minibert.pretrain", pretrain(), r"text\.txt is empty \(or only whitespace\)",
         {"text.txt": "", "bert": tiny_bert()}),
    Case("pt-nsp-needs-two-documents", "minibert.pretrain", pretrain("--nsp"),
         r"text\.txt holds 1 document; next-sentence prediction needs >= 2 .*--nsp_probability 0",
         {"text.txt": "the cat sat\nthe dog ran\n", "bert": tiny_bert()}),
    Case("pt-config-heads-do-not-divide", "minibert.pretrain", pretrain("--config_overrides", "hidden_size=10,num_attention_heads=4"),
         r"hidden_size: 10 is not divisible by num_attention_heads \(4\)", {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-config-unknown-activation", "minibert.pretrain", pretrain("--config_overrides", "hidden_act=swishy"),
         r"hidden_act: unknown activation 'swishy'", {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-config-rate-above-one", "minibert.pretrain", pretrain("--config_overrides", "attention_probs_dropout_prob=1.5"),
         r"attention_probs_dropout_prob: a dropout probability must be in \[0, 1\), got 1\.5",
         {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-sequence-longer-than-positions", "minibert.pretrain",
         ["--train_file", "{tmp}/text.txt", "--output_dir", "{tmp}/out", "--validation_split_percentage", "0",
          "--model_name_or_path", "{tmp}/bert", "--max_seq_length", "64"],
         r"--max_seq_length 64 exceeds the model's max_position_embeddings \(32\)", {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-wsd-without-decay-steps", "minibert.pretrain", pretrain("--lr_scheduler_type", "warmup_stable_decay"),
         r"lr_scheduler_kwargs: warmup_stable_decay needs num_decay_steps \(the steps of the final decay\)",
         {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-mlm-probability-zero", "minibert.pretrain", pretrain("--line_by_line", "--mlm_probability", "0"),
         r"mlm_probability must be in \(0, 1\], got 0\.0", {"text.txt": SENTENCES, "bert": tiny_bert()}),
    Case("pt-tokenizer-folder-missing", "minibert.pretrain", pretrain("--tokenizer_name", "{tmp}/nowhere"),
         r"tokenizer folder not found: .*nowhere", {"text.txt": SENTENCES}),
    # ---------------------------------------------------------- demo.main: --data and the labeled files
    Case("demo-data-missing", "demo.main", ["--quick", "--data", "nope.txt", "--out", "{tmp}/d"],
         r"--data file not found: nope\.txt \(check the path; it is relative to"),
    Case("demo-data-is-a-folder", "demo.main", ["--quick", "--data", "{tmp}/texts", "--out", "{tmp}/d"],
         r"texts is a folder; expected a file", {"texts/a.txt": "x"}),
    Case("demo-data-whitespace-only", "demo.main", ["--quick", "--data", "{tmp}/c.txt", "--out", "{tmp}/d"],
         r"c\.txt is empty \(or only whitespace\)", {"c.txt": "\n  \n\t\n"}),
    Case("demo-data-not-utf8", "demo.main", ["--quick", "--data", "{tmp}/c.txt", "--out", "{tmp}/d"],
         r"c\.txt: byte 30 \(line 4\) is not valid utf-8.*--encoding", {"c.txt": NOT_UTF8}),
    Case("demo-data-binary-nul-bytes", "demo.main", ["--quick", "--data", "{tmp}/c.bin", "--out", "{tmp}/d"],
         r"c\.bin holds NUL bytes, so it is not text", {"c.bin": b"hello\x00world\n" * 10}),
    Case("demo-data-too-little-text", "demo.main", ["--quick", "--data", "{tmp}/c.txt", "--out", "{tmp}/d"],
         r"c\.txt: 2 documents .*needs at least 4 documents", {"c.txt": "one line\n\nanother line\n"}),
    Case("demo-labels-without-validation-file", "demo.main", ["--quick", "--train_file", "{tmp}/t.tsv", "--out", "{tmp}/d"],
         r"--train_file and --validation_file go together", {"t.tsv": "sentence\tlabel\nhi\t1\n"}),
    Case("demo-tsv-without-the-column", "demo.main", DEMO_LABELED,
         r"t\.tsv: no column 'sentence' \(columns: text, label\); rename that column",
         {"corpus.txt": CORPUS, "t.tsv": "text\tlabel\nhi\t1\n", "v.tsv": "sentence\tlabel\nho\t1\n"}),
    Case("demo-label-unseen-in-training", "demo.main", DEMO_LABELED,
         r"v\.tsv line 3: label 7 does not occur in the training data \(known: 0, 1\)",
         {"corpus.txt": CORPUS, "t.tsv": "sentence\tlabel\nhi\t1\nho\t0\n", "v.tsv": "sentence\tlabel\nhi\t1\nho\t7\n"}),
    Case("demo-jsonl-line-not-json", "demo.main",
         ["--quick", "--data", "{tmp}/corpus.txt", "--train_file", "{tmp}/t.jsonl", "--validation_file", "{tmp}/v.jsonl",
          "--out", "{tmp}/d"],
         r"t\.jsonl line 2: not valid JSON",
         {"corpus.txt": CORPUS, "t.jsonl": '{"sentence": "hi", "label": 1}\n{"sentence": "ho", label: 0}\n',
          "v.jsonl": '{"sentence": "hi", "label": 1}\n'}),
    Case("demo-tsv-stray-tab", "demo.main", DEMO_LABELED,
         r"t\.tsv line 3: 3 fields, but the header has 2",
         {"corpus.txt": CORPUS, "t.tsv": "sentence\tlabel\nhi\t1\nho\tthere\t0\n", "v.tsv": "sentence\tlabel\nhi\t1\n"}),
    # ---------------------------------------------------------- demo.corpus, tutorials.exercises
    Case("demo-data-out-is-a-file", "demo.corpus", ["--out", "{tmp}/afile"],
         r"afile: File exists; .*pick another path", {"afile": "x"}),
    Case("demo-data-zero-documents", "demo.corpus", ["--out", "{tmp}/d", "--num_documents", "0"],
         r"num_documents must be an integer >= 1, got 0"),
    Case("exercises-make-into-a-folder-with-work", "tutorials.exercises", ["make", "--out", "{tmp}/mine"],
         r"mine already exists and is not empty .*--force", {"mine/my_work.py": "precious = True\n"}),
    Case("exercises-abbreviated-flag", "tutorials.exercises", ["make", "--out", "{tmp}/e", "--forc"],
         r"unrecognized arguments: --forc"),
    Case("exercises-unknown-command", "tutorials.exercises", ["mak"], r"invalid choice: 'mak' \(choose from"),
    Case("exercises-unknown-exercise", "tutorials.exercises", ["make", "--only", "nosuch", "--out", "{tmp}/e"],
         r"unknown exercise\(s\) nosuch; known: masks"),
    # ---------------------------------------------------------- common.cli.plot_logs
    Case("plot-logs-missing-log", "common.cli.plot_logs", ["{tmp}/run"], r"log file not found: .*log\.jsonl",
         {"run/readme.txt": "no log here"}),
    Case("plot-logs-cut-off-line", "common.cli.plot_logs", ["{tmp}/run"], r"log\.jsonl:2:",
         {"run/log.jsonl": '{"step": 1, "loss": 2.0}\n{"step": 2, "lo'}),
    Case("plot-logs-not-utf8", "common.cli.plot_logs", ["{tmp}/run"],
         r"log\.jsonl: byte 49 \(line 2\) is not valid utf-8.*--encoding",
         {"run/log.jsonl": b'{"step": 1, "loss": 2.0}\n{"step": 2, "note": "caf\xe9"}\n'}),
]


# The entries also run as real subprocesses (2-3 s of imports each): one per item of the issue's list
# and at least one per tool. CATALOGUE_ALL_SUBPROCESSES=1 runs every entry that way (about 4 min on 2 cores).
SUBPROCESS_IDS = {
    "gpt-train-missing-file", "gpt-train-folder-not-file", "gpt-train-whitespace-file", "gpt-train-not-utf8",
    "gpt-train-flag-value-not-a-number", "gpt-config-heads-do-not-divide", "gpt-config-negative-size",
    "gpt-config-negative-rate", "gpt-config-unknown-activation", "gpt-batch-size-zero", "gpt-output-dir-holds-a-run",
    "gpt-resume-another-model", "gpt-model-folder-without-weights", "gpt-truncated-safetensors", "gpt-pickle-with-code",
    "gpt-tokenizer-larger-than-embedding", "gpt-sample-prompt-unknown-character",
    "ft-tsv-without-the-label-column", "ft-tsv-not-utf8", "ft-label-unseen-in-training", "ft-conll-wrong-field-count",
    "ft-squad-answer-not-at-its-offset", "ft-sequence-longer-than-positions", "ft-pickle-with-code",
    "ft-config-json-heads-do-not-divide", "pt-nsp-needs-two-documents", "pt-sequence-longer-than-positions",
    "demo-data-not-utf8", "demo-jsonl-line-not-json", "demo-data-zero-documents",
    "exercises-make-into-a-folder-with-work", "plot-logs-cut-off-line",
}
SUBPROCESS_CASES = [case for case in CATALOGUE
                    if case.id in SUBPROCESS_IDS or os.environ.get("CATALOGUE_ALL_SUBPROCESSES") == "1"]


# -------------------------------------------------------------- running a case
def materialise(case: Case, tmp: Path) -> list[str]:
    for relative, spec in case.files.items():
        path = tmp / relative
        if callable(spec):
            path.mkdir(parents=True, exist_ok=True)
            spec(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(spec if isinstance(spec, bytes) else spec.encode("utf-8"))
    return [arg.replace("{tmp}", str(tmp)) for arg in case.argv]


def check_result(case: Case, code: int, stderr: str, tmp: Path) -> None:
    where = f"[{case.id}] python -m {case.tool}"
    assert "Traceback" not in stderr, f"{where}: a traceback instead of one error line:\n{stderr}"
    assert code == case.exit_code, f"{where}: exit status {code}, expected {case.exit_code}; stderr:\n{stderr}"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{where}: expected exactly one 'error:' line, stderr:\n{stderr}"
    assert re.search(case.expect, errors[0]), f"{where}: the error line does not match {case.expect!r}:\n{errors[0]}"
    assert not (tmp / "PAYLOAD_RAN").exists(), f"{where}: loading ran the code of a pickle"
    trained = [p for p in tmp.rglob("log.jsonl") if "run" not in p.parts]
    assert not trained, f"{where}: training started before the error ({trained})"


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_bad_input_gives_one_error_line_and_exit_2_in_process(case, tmp_path, capsys, monkeypatch):
    from common.errors import run_cli

    argv = materialise(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(case.tool).main
    threads = torch.get_num_threads()  # a tool may set it (demo.main --threads); later tests keep theirs
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv)
    finally:
        torch.set_num_threads(threads)
    check_result(case, exit_info.value.code, capsys.readouterr().err, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda c: c.id)
def test_bad_input_gives_one_error_line_and_exit_2_from_the_command_line(case, tmp_path):
    argv = materialise(case, tmp_path)
    process = subprocess.run([sys.executable, "-m", case.tool, *argv], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}, timeout=300)
    check_result(case, process.returncode, process.stderr, tmp_path)


def test_the_catalogue_has_at_least_30_distinct_entries_over_every_tool():
    ids = [case.id for case in CATALOGUE]
    assert len(set(ids)) == len(ids), f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    assert len(ids) >= 30, f"{len(ids)} entries; the catalogue promises at least 30"
    unknown = SUBPROCESS_IDS - set(ids)
    assert not unknown, f"SUBPROCESS_IDS names entries that do not exist: {sorted(unknown)}"
    assert len(SUBPROCESS_IDS) >= 30, f"only {len(SUBPROCESS_IDS)} entries run as subprocesses; at least 30 must"
    tools = {case.tool for case in CATALOGUE}
    untested = tools - {case.tool for case in CATALOGUE if case.id in SUBPROCESS_IDS}
    assert not untested, f"tools never run as a subprocess: {sorted(untested)}"


def test_debug_shows_the_traceback_and_still_exits_2(tmp_path, capsys):
    from common.errors import run_cli
    from minigpt.train import main

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["--debug", *gpt_train(train_file=str(tmp_path / "nope.txt"))])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" in err and "error: " in err, err
    assert HINT not in err, "with --debug the hint to use --debug is noise"


# -------------------------------------------------------------- the shared layer the tools call
# The loaders and configs behind the tools, for cases a tool reaches only after work has been done
# (a batch with a bad label) or that are warnings rather than errors (truncation).
def test_a_label_outside_num_labels_is_a_data_error_naming_the_label_and_the_fix():
    from common.errors import DataError
    from common.nn.losses import classification_loss, cross_entropy

    with pytest.raises(DataError, match=r"label 5 is outside the 3 classes 0\.\.2 .*check num_labels"):
        classification_loss(torch.zeros(2, 3), torch.tensor([0, 5]), num_labels=3)
    with pytest.raises(DataError, match=r"label -2 is outside"):
        cross_entropy(torch.zeros(2, 3), torch.tensor([-2, -100]))
    assert cross_entropy(torch.zeros(2, 3), torch.tensor([-100, -100])).item() == 0.0, "-100 is never out of range"


def test_an_unknown_problem_type_is_a_config_error():
    from common.errors import ConfigError
    from common.nn.losses import classification_loss

    with pytest.raises(ConfigError, match="unknown problem_type 'ranking'"):
        classification_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 3, problem_type="ranking")


@pytest.mark.parametrize("field_name, value", [("dropout", "0.1"), ("layer_norm_epsilon", None), ("bias", "no"),
                                               ("initializer_range", float("nan"))])
def test_a_config_value_of_the_wrong_type_is_a_config_error_not_a_type_error(field_name, value):
    from common.errors import ConfigError
    from minigpt import GPTConfig

    with pytest.raises(ConfigError, match=f"^{field_name}: "):
        GPTConfig(**{field_name: value})


@pytest.mark.parametrize("field_name, value", [("learning_rate", "1e-3"), ("max_steps", 2.5), ("bf16", "yes")])
def test_a_training_argument_of_the_wrong_type_is_a_config_error(field_name, value):
    from common.errors import ConfigError
    from common.train.args import TrainingArguments

    with pytest.raises(ConfigError, match=f"^{field_name}: must be "):
        TrainingArguments(**{field_name: value})


def test_a_utf8_byte_order_mark_is_dropped_so_the_first_column_keeps_its_name(tmp_path):
    from common.data.labeled import load_classification_file

    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfsentence,label\nhello there,1\n")
    assert load_classification_file(path)[0].text == "hello there"


def bert_tokenizer():
    from common.text.auto import BertTokenizer

    return BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s"])


def test_lines_longer_than_block_size_are_truncated_with_one_warning_naming_the_flag(tmp_path):
    from common.data.language_modeling import LineByLineTextDataset

    path = tmp_path / "lines.txt"
    path.write_text("the cat\n" + "the cat sat " * 5 + "\n" + "cat " * 9 + "\n")
    with pytest.warns(UserWarning) as caught:
        dataset = LineByLineTextDataset(bert_tokenizer(), path, block_size=6)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, f"expected one warning for the file, got {messages}"
    assert re.search(r"2 of 3 examples are longer than block_size 6 tokens .*longest has 17.*raise block_size",
                     messages[0]), messages[0]
    assert max(len(dataset[i]["input_ids"]) for i in range(3)) == 6


def test_classification_and_ner_examples_longer_than_max_seq_length_warn_once():
    from common.data.labeled import (ClassificationDataset, ClassificationExample, TokenClassificationDataset,
                                     TokenClassificationExample)

    tok = bert_tokenizer()
    examples = [ClassificationExample("the cat", None, 0), ClassificationExample("the cat sat the cat sat", None, 1),
                ClassificationExample("the cat sat", None, 1)]  # 5 tokens with [CLS] [SEP]: fits exactly
    with pytest.warns(UserWarning, match=r"1 of 3 examples are longer than --max_seq_length 5 tokens .*longest has 8"):
        ClassificationDataset(tok, examples, {0: 0, 1: 1}, max_seq_length=5)
    sentences = [TokenClassificationExample(["the", "cats", "sat"], ["O", "B-X", "O"]),
                 TokenClassificationExample(["cat"], ["B-X"])]
    with pytest.warns(UserWarning, match=r"1 of 2 sentences .*--max_seq_length 4 .*\(1 word\(s\) and their tags dropped\)"):
        TokenClassificationDataset(tok, sentences, {"O": 0, "B-X": 1}, max_seq_length=4)


ALL_TOOLS = ("demo.main", "demo.corpus", "common.cli.plot_logs", "minibert.pretrain", "minibert.finetune",
             "minigpt.train", "minigpt.sample", "tutorials.exercises", "bench.run_all", "bench.profile",
             "bench.peak_memory")


def test_no_tool_accepts_an_abbreviated_flag(monkeypatch):
    """argparse's default allow_abbrev=True reads --learning_r as --learning_rate, silently: a typo that
    still runs. Every parser (and subparser) of every tool must say allow_abbrev=False."""
    parsers = []

    class Built(Exception):
        pass

    def capture(parser, *args, **kwargs):
        parsers.append(parser)
        raise Built

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    monkeypatch.setattr(sys, "argv", ["tool"])
    for tool in ALL_TOOLS:
        main = importlib.import_module(tool).main
        with pytest.raises(Built):
            main([]) if "argv" in inspect.signature(main).parameters else main()
        assert len(parsers) == ALL_TOOLS.index(tool) + 1, f"{tool}: main did not parse its command line"

    def with_subparsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from with_subparsers(sub)
    abbreviating = [f"{tool}: {p.prog}" for tool, top in zip(ALL_TOOLS, parsers) for p in with_subparsers(top)
                    if p.allow_abbrev]
    assert not abbreviating, f"parsers that accept abbreviated flags (pass allow_abbrev=False): {abbreviating}"
