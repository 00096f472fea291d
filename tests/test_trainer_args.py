"""TrainingArguments validate at construction, and every field is a command-line flag."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from common.cli.args import add_dataclass_arguments, parse_dataclasses
from common.errors import ConfigError
from common.train.args import TrainingArguments


def test_defaults_match_transformers_for_shared_names():
    transformers = pytest.importorskip("transformers")
    theirs = {f.name: f.default for f in dataclasses.fields(transformers.TrainingArguments)}
    ours = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    shared = sorted(set(theirs) & set(ours) - {"output_dir", "disable_tqdm",  # theirs: None = "decide later"
                                              "gradient_checkpointing", "fsdp"})  # theirs: None = off; ours: False
    differ = {k: (ours[k], theirs[k]) for k in shared if ours[k] != theirs[k] and str(ours[k]) != str(theirs[k])}
    assert len(shared) >= 25, f"only {len(shared)} field names shared with transformers: {shared}"
    assert not differ, f"defaults differ from transformers (ours, theirs): {differ}"


@pytest.mark.parametrize("kwargs, field", [
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    ({"per_device_eval_batch_size": -1}, "per_device_eval_batch_size"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ({"learning_rate": -1e-3}, "learning_rate"),
    ({"eval_strategy": "steps"}, "eval_steps"),
    ({"save_strategy": "steps", "save_steps": 0}, "save_steps"),
    ({"eval_strategy": "sometimes"}, "eval_strategy"),
    ({"lr_scheduler_type": "exponential"}, "lr_scheduler_type"),
    ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"adam_beta2": 1.0}, "adam_beta2"),
    ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"save_total_limit": 0}, "save_total_limit"),
    ({"max_time": -5}, "max_time"),
    ({"max_steps": 0}, "max_steps"),
    ({"num_train_epochs": 0}, "num_train_epochs"),
    ({"load_best_model_at_end": True}, "load_best_model_at_end"),
    ({"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps"}, "load_best_model_at_end"),
])
def test_invalid_arguments_fail_at_construction_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as error:
        TrainingArguments(**kwargs)
    message = str(error.value)
    assert message.startswith(field + ":"), f"error for {kwargs} should name {field!r} first, got: {message}"
    assert "\n" not in message, f"the error must be one line, got: {message!r}"


def test_greater_is_better_defaults_from_the_metric_name():
    assert TrainingArguments(metric_for_best_model="eval_loss").greater_is_better is False
    assert TrainingArguments(metric_for_best_model="accuracy").greater_is_better is True
    args = TrainingArguments(load_best_model_at_end=True, eval_strategy="steps", eval_steps=5, save_steps=10)
    assert (args.metric_for_best_model, args.best_metric_key, args.greater_is_better) == ("loss", "eval_loss", False)


def test_warmup_steps_take_precedence_over_warmup_ratio():
    assert TrainingArguments(warmup_ratio=0.1).warmup_steps_for(95) == 10, "ceil(0.1 * 95) = 10"
    assert TrainingArguments(warmup_ratio=0.1, warmup_steps=3).warmup_steps_for(95) == 3


def parse(argv, defaults_override=None):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--data", default="corpus.txt")
    add_dataclass_arguments(parser, TrainingArguments, defaults_override)
    return parse_dataclasses(parser, argv, TrainingArguments)


@pytest.mark.parametrize("flag", ["--max_time", "--max-time"])
def test_underscore_and_dash_spellings_of_a_flag_are_the_same(flag):
    args, rest = parse([flag, "60", "--per-device-train-batch-size", "4"])
    assert (args.max_time, args.per_device_train_batch_size) == (60.0, 4)
    assert rest.data == "corpus.txt", f"the tool's own flags come back in the last element, got {rest}"


@pytest.mark.parametrize("argv, expected", [
    ([], False), (["--bf16"], True), (["--bf16", "true"], True), (["--bf16", "false"], False),
    (["--bf16", "no"], False), (["--bf16=1"], True),
])
def test_boolean_flags_accept_a_bare_flag_or_a_value(argv, expected):
    args, _ = parse(argv)
    assert args.bf16 is expected, f"{argv} gave bf16={args.bf16!r}"


def test_optional_fields_accept_none_and_choices_are_enforced(capsys):
    args, _ = parse(["--eval_strategy", "steps", "--eval_steps", "7", "--save_total_limit", "none"])
    assert (args.eval_steps, args.save_total_limit) == (7, None)
    with pytest.raises(SystemExit) as exit_info:
        parse(["--lr_scheduler_type", "exponential"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_invalid_combination_on_the_command_line_is_a_config_error():
    with pytest.raises(ConfigError, match="^eval_steps:"):
        parse(["--eval_strategy", "steps"])


def test_help_shows_every_field_with_its_documentation(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    missing = [f.name for f in dataclasses.fields(TrainingArguments) if f"--{f.name}" not in text]
    assert not missing, f"fields without a flag in --help: {missing}"
    assert "Wall-clock budget in seconds" in text, "the max_time field's help text is not shown"


def test_defaults_override_changes_the_tool_default_only():
    args, _ = parse([], defaults_override={"learning_rate": 1e-3, "output_dir": "runs/x"})
    assert (args.learning_rate, args.output_dir) == (1e-3, "runs/x")
    args, _ = parse(["--learning_rate", "2e-4"], defaults_override={"learning_rate": 1e-3})
    assert args.learning_rate == 2e-4
    with pytest.raises(ConfigError, match="learning_rat"):
        parse([], defaults_override={"learning_rat": 1e-3})


def test_a_field_shared_by_two_dataclasses_is_one_flag():
    @dataclasses.dataclass
    class ModelArguments:
        hidden_size: int = dataclasses.field(default=64, metadata={"help": "width"})
        seed: int = 0

    parser = argparse.ArgumentParser()
    train_args, model_args, _ = parse_dataclasses(parser, ["--seed", "7", "--hidden-size", "32"],
                                                  TrainingArguments, ModelArguments)
    assert (train_args.seed, model_args.seed, model_args.hidden_size) == (7, 7, 32)
