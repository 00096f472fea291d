"""What minibert.pretrain and minibert.finetune share: TrainingArguments as flags, config overrides, JSON out.

    parser = argparse.ArgumentParser(...)
    ... the tool's own flags ...
    add_training_flags(parser, RECIPE)            # every TrainingArguments field, tool defaults
    opts = parser.parse_args(argv)
    args = training_arguments(opts)               # validated TrainingArguments
    callbacks = time_budget_callbacks(args)       # with --max_time the LR decays over the budget

LoRA flags for every training tool: add_lora_flags(parser, "query,value"), then
apply_lora_flags(model, opts, prog) after the model is built, save_trained_model(...) at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
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


# ---------------------------------------------------------------- LoRA (common/nn/lora.py)
REGEX_CHARACTERS = set("*+?[](){}|\\^$")


def add_lora_flags(parser: argparse.ArgumentParser, default_targets: str, modules_to_save_default: str = "none") -> None:
    """--lora_r --lora_alpha --lora_dropout --lora_target_modules --lora_modules_to_save; LoRA is off
    unless --lora_r is given (then every weight is frozen but the adapters and the saved modules)."""
    group = parser.add_argument_group("LoRA (low-rank adapters; off unless --lora_r is given)")
    add = group.add_argument
    add("--lora_r", "--lora-r", type=int, default=None,
        help="Rank r of each update B A (e.g. 8). Without it every weight is trained (full fine-tuning).")
    add("--lora_alpha", "--lora-alpha", type=float, default=None,
        help="The update is scaled by lora_alpha / r (default: 2 r).")
    add("--lora_dropout", "--lora-dropout", type=float, default=0.0,
        help="Dropout on the input of A in training (default: %(default)s).")
    add("--lora_target_modules", "--lora-target-modules", default=default_targets,
        help="Linear layers to adapt: comma-separated names, each matching a module path that ends with it "
             "(peft's rule), or one regular expression for the whole path, e.g. '.*\\.(query|value)' "
             "(default: %(default)s).")
    add("--lora_modules_to_save", "--lora-modules-to-save", default=None,
        help=f"Modules trained in full and saved with the adapter, comma-separated (default: {modules_to_save_default}).")


def _names_or_regex(text: str):
    text = text.strip()
    if REGEX_CHARACTERS & set(text):
        return text
    return [name.strip() for name in text.split(",") if name.strip()]


def lora_config_from_flags(opts: argparse.Namespace, base_model_name_or_path=None):
    """A LoraConfig from the --lora_* flags, or None when --lora_r is not given."""
    from common.nn.lora import LoraConfig

    if opts.lora_r is None:
        if opts.lora_alpha is not None or opts.lora_dropout:
            raise ConfigError("--lora_alpha / --lora_dropout need --lora_r (the rank); add e.g. --lora_r 8")
        return None
    if opts.lora_r < 1:
        raise ConfigError(f"--lora_r must be a positive integer (e.g. 8), got {opts.lora_r}")
    saved = [n.strip() for n in (opts.lora_modules_to_save or "").split(",") if n.strip()] or None
    return LoraConfig(r=opts.lora_r, lora_alpha=opts.lora_alpha if opts.lora_alpha is not None else 2 * opts.lora_r,
                      lora_dropout=opts.lora_dropout, target_modules=_names_or_regex(opts.lora_target_modules),
                      modules_to_save=saved,
                      base_model_name_or_path=None if base_model_name_or_path is None else str(base_model_name_or_path))


def apply_lora_flags(model, opts: argparse.Namespace, prog: str, base_model_name_or_path=None):
    """Inject LoRA as the flags say (nothing without --lora_r); print the trainable-parameter line
    either way. Returns the LoraConfig or None."""
    from common.nn.lora import inject_lora, trainable_parameters_line

    config = lora_config_from_flags(opts, base_model_name_or_path)
    if config is not None:
        wrapped = inject_lora(model, config)
        print(f"{prog}: LoRA r={config.r} alpha={config.lora_alpha:g} on {len(wrapped)} layers "
              f"({config.target_modules}); trained in full: {config.modules_to_save or 'nothing'}", file=sys.stderr)
    print(f"{prog}: {trainable_parameters_line(model)}", file=sys.stderr)
    return config


def train_and_save(trainer, output_dir, lora_config=None, **extra):
    """What every training tool does once its Trainer is built: train, save the model (or with LoRA
    only its adapter: save_trained_model), and write train_results.json (loss, runtime, steps, why
    it stopped, epoch, and the tool's `extra` numbers). Returns the TrainOutput on the main process,
    None on the others (which then have nothing more to write)."""
    result = trainer.train()
    save_trained_model(trainer, lora_config, output_dir)
    if not trainer.ctx.is_main_process:
        return None
    write_json(Path(output_dir) / "train_results.json", {
        "train_loss": result.training_loss, "train_runtime": result.metrics["train_runtime"],
        "train_steps": result.global_step, "stop_reason": result.metrics["stop_reason"],
        "epoch": trainer.state.epoch, **extra})
    return result


def save_trained_model(trainer, lora_config, output_dir) -> None:
    """The final model: with LoRA only the adapter (peft's files) + config.json + the tokenizer;
    without, the whole model (trainer.save_model)."""
    if lora_config is None:
        trainer.save_model(output_dir)
        return
    from common.hub.adapters import save_adapter

    if trainer.ctx.is_main_process:
        model = trainer.model
        save_adapter(model, lora_config, output_dir)
        model.config.write_json(Path(output_dir) / "config.json")
        if trainer.tokenizer is not None and hasattr(trainer.tokenizer, "save_pretrained"):
            trainer.tokenizer.save_pretrained(output_dir)
