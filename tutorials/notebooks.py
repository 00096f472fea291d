"""The tutorials as executed notebooks, in English and Chinese (`make notebooks`).

    python -m tutorials.notebooks build --out notebooks [--quick] [--only 02_masks]
    python -m tutorials.notebooks status            # which tutorials have a Chinese version
    python -m tutorials.notebooks sync-zh [NAME]    # copy the English code cells into tutorials/zh/

Every tutorial is a jupytext "percent" script: `# %% [markdown]` cells of prose (comment lines)
and `# %%` cells of code. Its Chinese version, tutorials/zh/NN_name.py, has the same cells in the
same order: the prose translated, the code cells IDENTICAL, character for character
(tests/test_tutorials_zh.py checks it), so running the English tutorial in quick mode tests both.

`build` converts each English tutorial with jupytext, executes it in a Jupyter kernel started in
tutorials/ (where `import _setup` finds the course), and writes notebooks/en/NN_name.ipynb with
its outputs; the Chinese notebook notebooks/zh/NN_name.ipynb gets the Chinese prose and the
outputs of the same code, cell for cell (identical code gives identical outputs; it is not run
twice). --quick runs in the tests' quick mode (TUTORIAL_QUICK=1: fewer steps, same code).

`sync-zh` is for a changed English tutorial: when both versions still have the same sequence of
prose and code cells, it rewrites the Chinese file's code cells from the English one and keeps its
prose; otherwise it names the first cell that differs, for a translator to fix by hand.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.errors import UserError, run_cli  # noqa: E402

TUTORIALS = ROOT / "tutorials"
ZH = TUTORIALS / "zh"
CELL = re.compile(r"^# %%(.*)$")
NEEDS = ("jupytext", "nbclient", "ipykernel")


class NotebookError(UserError):
    """A missing tool, tutorial or translation; the message names the file and the fix."""


@dataclass
class Cell:
    kind: str  # "markdown" or "code"
    header: str  # the `# %% ...` line
    body: str  # the lines after it, without the blank lines that separate cells


def split_cells(source: str) -> list[Cell]:
    """A percent script -> its cells, in order (text before the first `# %%` is dropped)."""
    cells: list[Cell] = []
    lines: list[str] = []
    header = None
    for line in source.splitlines() + ["# %%"]:  # the sentinel closes the last cell
        if CELL.match(line):
            if header is not None:
                kind = "markdown" if "[markdown]" in header else "code"
                cells.append(Cell(kind, header, "\n".join(lines).strip("\n")))
            header, lines = line, []
        else:
            lines.append(line)
    return cells


def join_cells(cells: Sequence[Cell]) -> str:
    return "\n\n".join(f"{c.header}\n{c.body}" if c.body else c.header for c in cells) + "\n"


def _rel(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def english_tutorials() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def chinese_version(english: Path) -> Path:
    return ZH / english.name


def code_difference(english: Path, chinese: Path) -> Optional[str]:
    """None when the two versions have the same cells in the same order with identical code;
    otherwise what differs first (cell number, kinds or the first differing line)."""
    en, zh = split_cells(english.read_text(encoding="utf-8")), split_cells(
        chinese.read_text(encoding="utf-8"))
    kinds_en, kinds_zh = [c.kind for c in en], [c.kind for c in zh]
    for i, (a, b) in enumerate(zip(en, zh)):
        if a.kind != b.kind:
            return f"cell {i + 1}: {a.kind} in {english.name}, {b.kind} in the Chinese version"
        if a.kind == "code" and (a.header, a.body) != (b.header, b.body):
            la, lb = (a.header + "\n" + a.body).splitlines(), (b.header + "\n" + b.body).splitlines()
            j = next((k for k, (x, y) in enumerate(zip(la, lb)) if x != y), min(len(la), len(lb)))
            return (f"code cell {i + 1}, line {j + 1}: {la[j] if j < len(la) else '<end>'!r} in "
                    f"{english.name}, {lb[j] if j < len(lb) else '<end>'!r} in the Chinese version")
    if len(kinds_en) != len(kinds_zh):
        return f"{len(kinds_en)} cells in {english.name}, {len(kinds_zh)} in the Chinese version"
    return None


def sync_chinese(english: Path) -> bool:
    """Rewrite the Chinese version's code cells from the English tutorial (same cell sequence
    required); True when the file changed."""
    chinese = chinese_version(english)
    en = split_cells(english.read_text(encoding="utf-8"))
    zh = split_cells(chinese.read_text(encoding="utf-8"))
    if [c.kind for c in en] != [c.kind for c in zh]:
        raise NotebookError(
            f"{_rel(chinese)}: its cells ({len(zh)}) no longer follow "
            f"{_rel(english)} ({len(en)}): {code_difference(english, chinese)}; "
            "add or remove the Chinese prose cells by hand, then run sync-zh again")
    merged = [a if a.kind == "code" else b for a, b in zip(en, zh)]
    text = join_cells(merged)
    if text != chinese.read_text(encoding="utf-8"):
        chinese.write_text(text, encoding="utf-8")
        return True
    return False


def _require_tools() -> None:
    missing = [name for name in NEEDS if _missing(name)]
    if missing:
        raise NotebookError(f"{', '.join(missing)} not installed in {sys.prefix}; run `make "
                            f"notebooks` (it installs them) or: {sys.executable} -m pip install "
                            "jupytext nbclient ipykernel")


def _missing(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is None


def execute(english: Path, quick: bool, timeout: int):
    """The English tutorial as a notebook, executed in a fresh kernel started in tutorials/."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(english)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env_before = {k: os.environ.get(k) for k in ("TUTORIAL_QUICK", "MPLBACKEND")}
    os.environ["MPLBACKEND"] = "Agg"
    if quick:
        os.environ["TUTORIAL_QUICK"] = "1"
    try:  # the kernel inherits this process's environment
        # startup_timeout: nbclient's default (60 s) fails on a busy machine, where a kernel's imports
        # alone can take longer; a kernel gets as long to start as a cell gets to run.
        NotebookClient(nb, timeout=timeout, startup_timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(english.parent)}}).execute()
    except RuntimeError as e:
        if "didn't respond" not in str(e):
            raise
        raise NotebookError(f"{_rel(english)}: the Jupyter kernel did not start within {timeout} s ({e}); "
                            "on a busy machine, give it longer with --timeout SECONDS") from None
    except CellExecutionError as e:
        if e.ename != "SystemExit" or str(e.evalue).strip() not in ("", "0"):
            raise NotebookError(f"{_rel(english)}: a cell raised {e.ename}: {e.evalue}; run "
                                f"`python {_rel(english)}` to see the whole traceback") from None
        # A tutorial that stops early on purpose (11_real_bert: no pretrained weights installed) keeps the
        # outputs it has, its explanation included.
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def chinese_notebook(english_nb, chinese: Path):
    """The Chinese script as a notebook carrying the English notebook's outputs, code cell for
    code cell (the code is identical, so are the outputs)."""
    import jupytext

    nb = jupytext.read(chinese)
    nb.metadata = copy.deepcopy(english_nb.metadata)
    en_code = [c for c in english_nb.cells if c.cell_type == "code"]
    zh_code = [c for c in nb.cells if c.cell_type == "code"]
    if len(en_code) != len(zh_code) or any(a.source != b.source for a, b in zip(en_code, zh_code)):
        raise NotebookError(f"{_rel(chinese)}: its code cells differ from the English "
                            "tutorial's; run `python -m tutorials.notebooks sync-zh`")
    for a, b in zip(en_code, zh_code):
        b.outputs = copy.deepcopy(a.outputs)
        b.execution_count = a.execution_count
    return nb


def build(out: Path, quick: bool = False, only: Optional[Sequence[str]] = None,
          timeout: int = 1800) -> list[Path]:
    """Write out/en/NN_name.ipynb (executed) and out/zh/NN_name.ipynb for each tutorial."""
    _require_tools()
    import nbformat

    tutorials = english_tutorials()
    if only:
        tutorials = [p for p in tutorials if p.stem in only or p.stem[:2] in only]
        unknown = set(only) - {p.stem for p in tutorials} - {p.stem[:2] for p in tutorials}
        if unknown:
            raise NotebookError(f"--only {', '.join(sorted(unknown))}: no such tutorial in "
                                f"tutorials/; choose from {', '.join(p.stem for p in english_tutorials())}")
    written = []
    for english in tutorials:
        start = time.perf_counter()
        nb = execute(english, quick, timeout)
        for lang, notebook in [("en", nb)] + ([("zh", chinese_notebook(nb, chinese_version(english)))]
                                              if chinese_version(english).is_file() else []):
            path = Path(out) / lang / f"{english.stem}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, str(path))
            written.append(path)
        langs = "en + zh" if chinese_version(english).is_file() else "en only (no Chinese version yet)"
        print(f"{english.stem}: executed in {time.perf_counter() - start:.0f} s, {langs}", flush=True)
    return written


def _cmd_build(args: argparse.Namespace) -> int:
    written = build(Path(args.out), args.quick, args.only, args.timeout)
    print(f"Wrote {len(written)} notebooks to {args.out}/ (en/, zh/)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    missing, differ = [], []
    for english in english_tutorials():
        chinese = chinese_version(english)
        if not chinese.is_file():
            missing.append(english.name)
            continue
        problem = code_difference(english, chinese)
        print(f"{english.stem}: {'Chinese version, same code' if problem is None else problem}")
        if problem:
            differ.append(english.name)
    for name in missing:
        print(f"{name[:-3]}: no Chinese version (tutorials/zh/{name})")
    return 1 if differ else 0


def _cmd_sync(args: argparse.Namespace) -> int:
    for english in english_tutorials():
        if args.names and english.stem not in args.names and english.stem[:2] not in args.names:
            continue
        if chinese_version(english).is_file():
            changed = sync_chinese(english)
            print(f"{english.stem}: {'code cells updated' if changed else 'already in step'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorials.notebooks", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", allow_abbrev=False, help="write executed notebooks, both languages")
    p.add_argument("--out", default="notebooks", help="folder to write (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="quick mode (TUTORIAL_QUICK=1)")
    p.add_argument("--only", action="append", metavar="NAME", help="e.g. 02_masks or 02 (repeatable)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default: %(default)s)")
    p.set_defaults(func=_cmd_build)
    p = sub.add_parser("status", allow_abbrev=False, help="which tutorials have a Chinese version")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("sync-zh", allow_abbrev=False,
                       help="copy the English code cells into the Chinese versions")
    p.add_argument("names", nargs="*", help="tutorials to sync (default: all)")
    p.set_defaults(func=_cmd_sync)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    run_cli(main)
