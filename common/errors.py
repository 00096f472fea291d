"""User-facing errors: one clear line that names the file, line or field and says how to fix it.

Library code raises `UserError` (or a subclass) for anything the user can fix: a missing file,
a wrong column, a config that cannot work. Command-line tools wrap their `main` in `run_cli`,
which prints `error: <message>` on one line and exits with status 2, no traceback, unless
`--debug` is on the command line (then the full traceback is shown).
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Optional, Sequence

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix; its message says what was wrong, where, and the fix."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value (names the field)."""


class DataError(UserError, ValueError):
    """Bad input data (names the file, and the line or column)."""


class CheckpointError(UserError, OSError):
    """A checkpoint folder or weights file that cannot be used."""


def check_file(path, what: str = "file") -> str:
    """Return `path` as str if it is a readable regular file, else raise a DataError that says why."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{what} not found: {path} (check the path; it is relative to {os.getcwd()})")
    if os.path.isdir(path):
        raise DataError(f"{what} {path} is a folder; expected a file inside it")
    if not os.access(path, os.R_OK):
        raise DataError(f"{what} {path} is not readable (check its permissions)")
    return path


def read_text(path, encoding: str = "utf-8", what: str = "text file") -> str:
    """Read a whole text file; non-UTF-8 bytes give an error naming the byte offset."""
    check_file(path, what)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: byte {e.start} (line {line}) is not valid {encoding}; "
            f"convert the file to UTF-8 or pass --encoding (e.g. --encoding latin-1)"
        ) from None


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]],
            argv: Optional[Sequence[str]] = None) -> None:
    """Run a command-line `main(argv)`; turn UserError (and a few OS errors) into one line + exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        code = main(argv)
    except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        if not debug:
            print("(run again with --debug to see the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
