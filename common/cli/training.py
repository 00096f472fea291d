"""What minibert.pretrain and minibert.finetune share: TrainingArguments as flags, config overrides, JSON out.

    parser = argparse.ArgumentParser(...)
    ... the tool's own flags ...
    add_training_flags(parser, RECIPE)            # every TrainingArguments field, tool defaults
    opts = parser.parse_args(argv)
    args = training_arguments(opts)               # validated TrainingArguments
    callbacks = time_budget_callbacks(args)       # with --max_time the LR decays over the budget
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from pathlib import Path

from common.cli.args import add_dataclass_arguments, parse_bool
from common.errors import ConfigError
from common.train.args import TrainingArguments
from common.train.time_budget import TimeBudgetSchedule

FLAG_NOTE = "Every flag also accepts dashes (--train-file). --debug shows the traceback of an error."


def add_training_flags(parser: argparse.ArgumentParser, recipe: dict) -> None:
    """Every TrainingArguments field as --flag with this tool's defaults; --output_dir is required."""
    add_dataclass_arguments(parser, TrainingArguments, defaults_override=recipe)
    for action in parser._actions:
        if action.dest == "output_dir":
            action.required, action.default = True, None
    parser.add_argument("--schedule_by_time", "--schedule-by-time", type=parse_bool, nargs="?", const=True,
                        default=True, metavar="{true,false}",
                        help="With --max_time, decay the learning rate over the time budget "
                             "(common/train/time_budget.py) rather than over the steps (default: %(default)s).")


def training_arguments(opts: argparse.Namespace) -> TrainingArguments:
    return TrainingArguments(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(TrainingArguments)
                                if f.init})


def time_budget_callbacks(args: TrainingArguments, opts: argparse.Namespace) -> list:
    return [TimeBudgetSchedule()] if args.max_time is not None and opts.schedule_by_time else []


def parse_config_overrides(text: str, config_class) -> dict:
    """'hidden_size=128,num_hidden_layers=2' -> {'hidden_size': 128, 'num_hidden_layers': 2}, each value
    converted to the type of its config_class field."""
    hints = typing.get_type_hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class) if f.name != "extra" and f.init}
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ConfigError(f"--config_overrides: {item!r} is not key=value; write e.g. "
                              "\"hidden_size=128,num_hidden_layers=2\"")
        if key not in names:
            raise ConfigError(f"--config_overrides: unknown field {key!r}; {config_class.__name__} fields: "
                              f"{', '.join(sorted(names))}")
        kind = hints[key]
        optional = type(None) in typing.get_args(kind)
        if optional:
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        if kind not in (int, float, str, bool):
            raise ConfigError(f"--config_overrides: {key} is not a number or a string; it cannot be overridden here")
        try:
            if optional and value.lower() in ("none", "null"):
                out[key] = None
            elif kind is bool:
                out[key] = parse_bool(value)
            else:
                out[key] = kind(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise ConfigError(f"--config_overrides: {key}={value!r} is not a valid {kind.__name__}") from None
    return out


def write_json(path, values: dict) -> None:
    Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def perplexity(loss: float) -> float:
    """exp(loss), inf where it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")
