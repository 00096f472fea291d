"""Dataclass fields as command-line flags (what transformers' HfArgumentParser does, in about 100 lines).

Every field `name: T = default` of a dataclass becomes the flag `--name` (and `--name-with-dashes`)
with argparse type T, the field's default, and `metadata["help"]` as its --help text. Booleans
accept `--bf16` (means true) and `--bf16 true/false/yes/no/1/0`. `Optional[T]` fields also accept
`none`. `metadata["choices"]` restricts the values.

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)              # the tool's own flags
    train_args, rest = parse_dataclasses(parser, argv, TrainingArguments)
    rest.data                                                 # everything that is not a field

The dataclass validates itself at construction, so a bad value ends as one ConfigError line.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Optional, Sequence

from common.errors import ConfigError

_TRUE = ("true", "yes", "1", "on", "y", "t")
_FALSE = ("false", "no", "0", "off", "n", "f")


def parse_bool(text: str) -> bool:
    """'true'/'yes'/'1'/'on' -> True, 'false'/'no'/'0'/'off' -> False (any case)."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _nullable(convert):
    """Wrap a converter so that 'none' / 'null' gives None (for Optional fields)."""
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in its errors
    return parse


def _unwrap_optional(tp) -> tuple[Any, bool]:
    """Optional[T] / T | None -> (T, True); anything else -> (tp, False)."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _argparse_kwargs(f: dataclasses.Field, tp, default) -> dict:
    tp, optional = _unwrap_optional(tp)
    kwargs: dict[str, Any] = {"dest": f.name, "default": default}
    if typing.get_origin(tp) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(tp))
        tp = type(kwargs["choices"][0])
    if typing.get_origin(tp) in (list, tuple):
        kwargs["nargs"] = "*"
        tp = (typing.get_args(tp) or (str,))[0]
    if tp is bool:
        kwargs.update(nargs="?", const=True, type=parse_bool, metavar="{true,false}")
    elif tp in (int, float, str):
        kwargs["type"] = tp
    else:
        raise ConfigError(f"{f.name}: field type {tp!r} cannot be a command-line flag "
                          "(use bool, int, float, str, a Literal or a list of those)")
    if "choices" in f.metadata:
        kwargs["choices"] = list(f.metadata["choices"])
    if optional:
        kwargs["type"] = _nullable(kwargs["type"])
        if "choices" in kwargs:
            kwargs["choices"] = kwargs["choices"] + [None]
    help_text = f.metadata.get("help", "").replace("%", "%%")
    kwargs["help"] = f"{help_text} (default: %(default)s)" if help_text else "(default: %(default)s)"
    return kwargs


def add_dataclass_arguments(parser: argparse.ArgumentParser, dataclass_type,
                            defaults_override: Optional[dict] = None) -> argparse._ArgumentGroup:
    """Add one flag per field of `dataclass_type` to `parser`, in an argument group named after it.

    `defaults_override` changes defaults for this tool (e.g. {"learning_rate": 1e-4}); the
    dataclass itself is unchanged. A field whose flag already exists (two dataclasses sharing a
    `seed` field) is not added twice: both instances receive the same value.
    """
    defaults_override = dict(defaults_override or {})
    names = {f.name for f in dataclasses.fields(dataclass_type)}
    unknown = sorted(set(defaults_override) - names)
    if unknown:
        raise ConfigError(f"defaults_override: {unknown} are not fields of {dataclass_type.__name__}")
    hints = typing.get_type_hints(dataclass_type)
    existing = {action.dest for action in parser._actions}
    group = parser.add_argument_group(dataclass_type.__name__)
    for f in dataclasses.fields(dataclass_type):
        if not f.init or f.name in existing:
            continue
        if f.name in defaults_override:
            default = defaults_override[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        kwargs = _argparse_kwargs(f, hints[f.name], default)
        if default is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING \
                and f.name not in defaults_override:
            kwargs["required"] = True
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(*flags, **kwargs)
    registered = getattr(parser, "_dataclass_types", [])
    parser._dataclass_types = registered + [dataclass_type]
    return group


def parse_dataclasses(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                      *dataclass_types) -> tuple:
    """Parse `argv` and return (one instance per dataclass type..., argparse.Namespace of the rest).

    Types whose flags were not added yet are added here. The last element holds the values of
    the parser's other arguments, so a tool's own flags come back too.
    """
    for dataclass_type in dataclass_types:
        if dataclass_type not in getattr(parser, "_dataclass_types", []):
            add_dataclass_arguments(parser, dataclass_type)
    namespace = parser.parse_args(argv)
    values = vars(namespace)
    instances, claimed = [], set()
    for dataclass_type in dataclass_types:
        names = [f.name for f in dataclasses.fields(dataclass_type) if f.init]
        instances.append(dataclass_type(**{n: values[n] for n in names if n in values}))
        claimed.update(names)
    rest = argparse.Namespace(**{k: v for k, v in values.items() if k not in claimed})
    return (*instances, rest)
