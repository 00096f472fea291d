"""User-facing errors: one clear line that names the file, line or field and says how to fix it.

Library code raises `UserError` (or a subclass) for anything the user can fix: a missing file,
a wrong column, a config that cannot work. Command-line tools wrap their `main` in `run_cli`,
which prints `error: <message>` on one line and exits with status 2, no traceback, unless
`--debug` is on the command line (then the full traceback is shown). The same line is printed for

    argparse's complaints (unknown flag, bad value)   raised as UsageError inside run_cli
    a path that is missing, a file, a folder          FileNotFoundError, FileExistsError, ... + the fix
    a full disk, a quota, a file size limit           ENOSPC, EDQUOT, EFBIG, EROFS + the fix

Any other exception is a bug of the program, not of the input, and keeps its traceback.
`write_then_rename` is how every save writes: temporary files first, renamed into place only when
all are complete, so a failed or interrupted save never damages what was there before.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
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


class UsageError(UserError):
    """A command line that argparse cannot parse: an unknown flag, a bad value, a missing flag."""


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


def check_encoding(encoding: str) -> str:
    """The codec name, or a DataError for a name Python does not know (a typo in --encoding)."""
    try:
        return codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise DataError(f"--encoding {encoding!r} is not a known text encoding; "
                        "use e.g. utf-8, latin-1, cp1252 or utf-16") from None


def read_text(path, encoding: str = "utf-8", what: str = "text file") -> str:
    """Read a whole text file; non-UTF-8 bytes give an error naming the byte offset.

    A UTF-8 byte-order mark (what some editors put first) is dropped, so it never ends up
    glued to the first word or column name; a UTF-16 one is named in the error, with the fix.
    """
    check_file(path, what)
    codec = check_encoding(encoding)
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and codec != "utf-16"
        hint = ("the file starts with a UTF-16 byte-order mark: pass --encoding utf-16" if utf16 else
                "convert the file to UTF-8 or pass --encoding (e.g. --encoding latin-1)")
        raise DataError(f"{path}: byte {e.start} (line {line}) is not valid {encoding}; {hint}") from None
    return text[1:] if codec == "utf-8" and text.startswith("\ufeff") else text


# OS errors a user fixes outside the program, and the fix.
STORAGE_FIXES = {
    "ENOSPC": "free some disk space (or pick another --output_dir) and run again",
    "EDQUOT": "free some of your disk quota (or pick another --output_dir) and run again",
    "EFBIG": "a file size limit was reached (ulimit -f, or the file system's); raise it or save elsewhere",
    "EROFS": "the disk is read-only; pick another --output_dir",
}
STORAGE_ERRNOS = {getattr(errno, name): fix for name, fix in STORAGE_FIXES.items() if hasattr(errno, name)}


# Path errors: what the system's reason means for the user, and the fix.
PATH_FIXES = {
    "ENOENT": "check the path (relative paths start at {cwd})",
    "EEXIST": "something already exists there (a file where a folder is needed?); pick another path or remove it",
    "ENOTDIR": "a part of the path is a file, not a folder; pick another path",
    "EISDIR": "it is a folder; give a file path",
    "EACCES": "you may not write or read there; check its permissions or pick another path",
}


def describe_os_error(e: OSError) -> str:
    """One line for an OSError: the file, the system's reason, and the fix when we know one."""
    where = f"{e.filename}: " if e.filename else ""
    reason = e.strerror or str(e)
    name = errno.errorcode.get(e.errno, "")
    fix = STORAGE_FIXES.get(name) or PATH_FIXES.get(name, "").replace("{cwd}", os.getcwd())
    return f"{where}{reason}; {fix}" if fix else f"{where}{reason}"


def is_user_fixable(e: BaseException) -> bool:
    """UserError, a missing / misplaced / unreadable path, or a storage error (full disk, ...)."""
    if isinstance(e, UserError):
        return True
    if isinstance(e, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return True
    return isinstance(e, OSError) and e.errno in STORAGE_ERRNOS


def write_then_rename(pairs: Sequence[tuple[str, str]], write: Callable[[], None]) -> None:
    """Call write(), which fills every temporary path of `pairs` [(temporary, final)], then rename
    each temporary to its final name (os.replace is atomic). No final file is touched before every
    write succeeded: a failure or a Ctrl-C removes the temporaries and keeps the previous files; an
    OSError (a full disk, ...) becomes one CheckpointError line naming the file and the fix."""
    try:
        write()
        for tmp, final in pairs:
            os.replace(tmp, final)
    except BaseException as e:
        for tmp, _ in pairs:
            try:
                os.remove(tmp)
            except OSError:  # never written, or the disk refuses even this: the error below matters more
                pass
        if not isinstance(e, OSError) or isinstance(e, UserError):
            raise
        final = next((f for t, f in pairs if e.filename and os.fspath(e.filename) == t), pairs[0][1])
        hint = STORAGE_ERRNOS.get(e.errno, "check the folder and its permissions")
        raise CheckpointError(f"could not write {final}: {e.strerror or e}; the previous files there, if any, "
                              f"are unchanged; {hint}") from None


@contextlib.contextmanager
def argparse_errors_as_one_line():
    """argparse answers a bad command line with its whole usage block (dozens of lines for a tool
    with every TrainingArguments flag) and the error last; inside run_cli it raises UsageError
    instead, which prints as the same single `error:` line as every other mistake."""
    original = argparse.ArgumentParser.error

    def error(parser, message):
        raise UsageError(f"{message} (see: {parser.prog} --help)")
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]],
            argv: Optional[Sequence[str]] = None) -> None:
    """Run a command-line `main(argv)`; turn UserError (and the OS errors of is_user_fixable) into
    one line + exit 2; Ctrl-C that reaches here (a second one, or outside training) exits 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        with argparse_errors_as_one_line():
            code = main(argv)
    except (UserError, OSError) as e:
        if not is_user_fixable(e):
            raise  # a fault of the program, not of the input: keep the traceback
        if debug:
            traceback.print_exc()
        message = str(e) if isinstance(e, UserError) else describe_os_error(e)
        print("error: " + " ".join(message.split("\n")), file=sys.stderr)  # always one line
        if not debug and not isinstance(e, UsageError):
            print("(run again with --debug to see the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
