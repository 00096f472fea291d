"""The import rule of docs/architecture.md, checked on every module of the packages.

A module may import from its own sub-package and from layers with a lower number; model packages
never import each other; nothing imports the top (demo, tutorials, bench, tests, tools). The layer
table is read from docs/architecture.md itself, so the document and the check cannot drift apart.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*?)\|")
TOP_LEVEL = ("common", "minibert", "minigpt", "minit5", "demo", "interpret", "tutorials", "bench", "tests", "tools")


def read_layers(doc: Path = DOC) -> dict[str, int]:
    """'| 2 | `common/text/`, `common/hub/` | ...' -> {'common.text': 2, 'common.hub': 2}."""
    layers = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            for path in re.findall(r"`([^`]+)`", m.group(2)):
                layers[path.rstrip("/").removesuffix(".py").replace("/", ".")] = int(m.group(1))
    return layers


def unit_of(module: str, layers: dict[str, int]) -> str | None:
    """The longest entry of the table that `module` lies in ('common.nn.attention' -> 'common.nn')."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in layers:
            return ".".join(parts[:n])
    return None


class Violation(NamedTuple):
    file: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported}: {self.rule}"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of the project's packages in a file, top-level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # `from common import nn` imports the sub-package common.nn
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in TOP_LEVEL]


def check_tree(root: Path, layers: dict[str, int]) -> list[Violation]:
    violations = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] not in TOP_LEVEL or any(p.startswith(".") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts)
        here = unit_of(module, layers)
        if here is None:
            continue
        seen = set()
        for line, name in imports_of(path):
            there = unit_of(name, layers)
            if there is None or there == here or (line, there) in seen:
                continue
            seen.add((line, there))
            if layers[there] < layers[here]:
                continue
            if layers[there] == layers[here]:
                rule = (f"{here.replace('.', '/')} and {there.replace('.', '/')} are siblings (layer "
                        f"{layers[here]}): neither may import the other; move what both need to a lower layer")
            else:
                rule = (f"{here.replace('.', '/')} (layer {layers[here]}) may not import "
                        f"{there.replace('.', '/')} (layer {layers[there]}): imports run downward only")
            violations.append(Violation(rel.as_posix(), line, name, rule + " (docs/architecture.md)"))
    return violations


def test_the_layer_table_names_every_package():
    layers = read_layers()
    for unit in ("common.errors", "common.nn", "common.text", "common.hub", "common.data", "common.train",
                 "common.cli", "minibert", "minigpt", "minit5", "demo", "interpret", "tutorials", "bench", "tests"):
        assert unit in layers, f"docs/architecture.md's layer table does not list {unit}: {sorted(layers)}"
    for folder in sorted((REPO / "common").iterdir()):
        if folder.is_dir() and (folder / "__init__.py").exists():
            assert f"common.{folder.name}" in layers, (
                f"common/{folder.name}/ is a sub-package but docs/architecture.md gives it no layer")
    assert layers["common.nn"] == 1 and layers["common.errors"] == 0, "the math sits at the bottom"


def test_every_import_runs_down_the_layers():
    violations = check_tree(REPO, read_layers())
    assert not violations, "imports that break the layer rule:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize("file, planted, expected", [
    ("common/nn/masks.py", "from common.train.trainer import Trainer", "common/nn (layer 1) may not import common/train"),
    ("common/train/optim.py", "import minibert.model", "common/train (layer 4) may not import minibert"),
    ("minibert/heads.py", "from minigpt import GPT", "minibert and minigpt are siblings"),
    ("common/text/base.py", "    from common.hub.config import PretrainedConfig",
     "common/text and common/hub are siblings"),
    ("minigpt/model.py", "from demo.stages import QUICK", "minigpt (layer 6) may not import demo"),
])
def test_a_planted_wrong_import_is_named_with_file_line_and_rule(tmp_path, file, planted, expected):
    for package in ("common", "minibert", "minigpt", "demo"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / file
    lines = target.read_text(encoding="utf-8").splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith(("import ", "from ")))
    body = planted if not planted.startswith(" ") else f"def _planted():\n{planted}"
    lines[at:at] = body.splitlines()
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    violations = check_tree(tmp_path, read_layers())
    assert len(violations) == 1, f"planting {planted!r} in {file} gave {len(violations)} violations: {violations}"
    message = str(violations[0])
    line = at + 1 + (1 if planted.startswith(" ") else 0)
    assert message.startswith(f"{file}:{line}: "), f"the message does not name {file}:{line}: {message}"
    assert expected in message, f"the message does not say {expected!r}: {message}"
