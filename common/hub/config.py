"""Configs as dataclasses that round-trip through config.json.

A model config subclasses `PretrainedConfig` (a plain @dataclass) and validates its fields in
`__post_init__`, raising `ConfigError` with the field name. Keys of a config.json that the
dataclass does not know (a transformers config carries many) are kept in `extra` and written
back on save, so nothing is lost and nothing crashes.

A key a config once had and no longer does (RETIRED_FIELDS: a training switch that became a forward
argument, say) is dropped on load with one warning saying where it went, so an old folder loads.
"""
from __future__ import annotations

import math

import dataclasses
import json
import os
import warnings
from typing import Any, ClassVar

from common.errors import CheckpointError, ConfigError, write_then_rename

CONFIG_NAME = "config.json"


@dataclasses.dataclass
class PretrainedConfig:
    model_type: ClassVar[str] = ""
    RETIRED_FIELDS: ClassVar[dict[str, str]] = {}  # key -> what replaced it; dropped on load, one warning

    def __post_init__(self):
        if not hasattr(self, "extra") or self.extra is None:
            self.extra = {}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {**getattr(self, "extra", {}), **d}
        d["model_type"] = self.model_type
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides):
        known = {f.name for f in dataclasses.fields(cls)}
        merged = cls.drop_retired({**d, **overrides})
        kwargs = {k: v for k, v in merged.items() if k in known and k != "extra"}
        extra = {k: v for k, v in merged.items() if k not in known and k != "model_type"}
        config = cls(**kwargs)
        config.extra = extra
        return config

    @classmethod
    def drop_retired(cls, d: dict[str, Any]) -> dict[str, Any]:
        """d without the keys of RETIRED_FIELDS, with one warning naming those it held and where they went."""
        retired = [k for k in d if k in cls.RETIRED_FIELDS]
        if retired:
            warnings.warn(f"{cls.__name__}: ignoring {', '.join(retired)} of an older config.json ("
                          + "; ".join(f"{k}: {cls.RETIRED_FIELDS[k]}" for k in retired) + ")", stacklevel=3)
        return {k: v for k, v in d.items() if k not in cls.RETIRED_FIELDS}

    def write_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    def save_pretrained(self, folder) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CONFIG_NAME)
        tmp = f"{path}.tmp-{os.getpid()}"
        write_then_rename([(tmp, path)], lambda: self.write_json(tmp))
        return path

    @classmethod
    def from_json_file(cls, path, **overrides):
        """Read config.json; every problem is one error naming the file (and the line or field)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise CheckpointError(f"{path} is a folder; expected the {CONFIG_NAME} file")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"no {CONFIG_NAME} at {path}; a model folder needs one "
                                  "(written by save_pretrained)") from None
        try:
            d = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{path}: byte {e.start} is not valid UTF-8; a config.json is UTF-8 "
                                  "JSON (save it again with save_pretrained)") from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
        if not isinstance(d, dict):
            raise CheckpointError(f"{path}: expected a JSON object of config fields")
        try:
            return cls.from_dict(d, **overrides)
        except ConfigError as e:
            field = str(e).split(":")[0]
            if field in overrides:
                raise  # the bad value came from the caller (a flag), not from the file
            raise ConfigError(f"{e} (field of {path}: fix it there)") from None

    @classmethod
    def from_pretrained(cls, folder, **overrides):
        path = folder if str(folder).endswith(".json") else os.path.join(folder, CONFIG_NAME)
        return cls.from_json_file(path, **overrides)


def is_int(value) -> bool:
    """An int that is not a bool (True is an int in Python; a config field of 1 layer is not True)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError('<field>: <message>') unless condition holds."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


_WARNED_TOKEN_IDS: set = set()  # (config class, field, id, vocab_size) already warned about


def check_special_token_ids(config, names) -> None:
    """Each special-token id field is null or an integer >= 0 (else a ConfigError). An id outside
    [0, vocab_size) is kept in the config, as transformers keeps it (GPT2Config(vocab_size=300)
    still says eos_token_id=50256), with one warning; `in_vocab_token_id` then reads it as None,
    so it never stops generation nor marks padding."""
    outside = []
    for name in names:
        value = getattr(config, name)
        require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0), name,
                f"must be null or a token id in [0, vocab_size={config.vocab_size}), got {value!r}")
        if value is not None and value >= config.vocab_size:
            key = (type(config).__name__, name, value, config.vocab_size)
            if key not in _WARNED_TOKEN_IDS:
                _WARNED_TOKEN_IDS.add(key)
                outside.append(f"{name}={value}")
    if outside:
        warnings.warn(f"{type(config).__name__}: {', '.join(outside)} is not a token id of this vocabulary "
                      f"(vocab_size={config.vocab_size}); kept in the config as transformers keeps it, and "
                      "unused: generation does not stop on it and no position is treated as padding",
                      stacklevel=4)


def in_vocab_token_id(config, name: str):
    """config.<name> when it is a token id of the vocabulary, else None (see check_special_token_ids)."""
    value = getattr(config, name, None)
    return value if isinstance(value, int) and 0 <= value < config.vocab_size else None
