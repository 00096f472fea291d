"""Each exercise's grader fails every listed mistake; every mutant of the math layer fails a test.

Fast: the lists are well-formed (each exercise of the registry has at least three named mistakes;
each patch still matches its code exactly once and gives valid Python). Slow: each mistake applied
alone to a student copy makes the exercise's mapped tests (the grader's selection) fail, and each
mutant of common/nn (tests/mutants.py, `make mutants`) fails a test of its files.
"""
import ast
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tutorials import exercises as ex
from tutorials import mistakes as mk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests import mutants as mu  # noqa: E402


def skip_if_stubbed(path, old):
    """In a student copy (`make exercises`) the bodies are stubs: their patches have nothing to match."""
    text = (ROOT / path).read_text(encoding="utf-8")
    if old not in text and "raise NotImplementedError(" in text:
        pytest.skip(f"{path} holds stubbed exercises (a student copy)")


def test_every_exercise_of_the_registry_has_at_least_three_named_mistakes():
    counts = Counter(m.exercise for m in mk.MISTAKES)
    few = {name: counts.get(name, 0) for name in ex.REGISTRY if counts.get(name, 0) < mk.MIN_PER_EXERCISE}
    assert not few, (f"exercises with fewer than {mk.MIN_PER_EXERCISE} mistakes in tutorials/mistakes.py "
                     f"(add plausible wrong versions of their formula): {few}")
    unknown = sorted(set(counts) - set(ex.REGISTRY))
    assert not unknown, f"mistakes for exercises that are not in the registry: {unknown}"


def test_mistake_names_are_unique_per_exercise_and_each_changes_the_code():
    seen = Counter((m.exercise, m.name) for m in mk.MISTAKES)
    twice = [key for key, n in seen.items() if n > 1]
    assert not twice, f"mistakes named twice: {twice}"
    same = [(m.exercise, m.name) for m in mk.MISTAKES if m.old == m.new]
    assert not same, f"mistakes that change nothing: {same}"


@pytest.mark.parametrize("mistake", mk.MISTAKES, ids=lambda m: f"{m.exercise}-{m.name}")
def test_each_mistake_matches_its_region_once_and_gives_valid_python(mistake):
    if mistake.exercise not in ex.REGISTRY:
        pytest.skip(f"{mistake.exercise} is not in the registry")
    skip_if_stubbed(ex.REGISTRY[mistake.exercise].source, mistake.old)
    rel, patched = mk.apply_mistake(ROOT, mistake)  # PatchError names the stale patch
    ast.parse(patched)
    assert patched != (ROOT / rel).read_text(encoding="utf-8")


@pytest.mark.parametrize("mutant", mu.MUTANTS, ids=lambda m: m.name)
def test_each_mutant_matches_its_file_once_and_names_existing_test_files(mutant):
    text = (ROOT / mutant.path).read_text(encoding="utf-8")
    skip_if_stubbed(mutant.path, mutant.old)
    ast.parse(mk.apply_patch(text, mutant.old, mutant.new, f"{mutant.path}: mutant {mutant.name!r}"))
    assert mutant.path.startswith("common/"), f"{mutant.name}: mutants are of common/, not {mutant.path}"
    assert all((ROOT / f).is_file() for f in mutant.tests), f"{mutant.name}: missing test files {mutant.tests}"


def test_a_patch_that_no_longer_matches_is_reported_with_its_file():
    with pytest.raises(mk.PatchError, match="occurs 0 times between lines 1 and 2"):
        mk.apply_patch("a = 1\nb = 2\n", "c = 3", "c = 4", "x.py", (1, 2))
    with pytest.raises(mk.PatchError, match="occurs 2 times"):
        mk.apply_patch("a = 1\na = 1\n", "a = 1", "a = 2", "x.py")
    with pytest.raises(mk.PatchError, match="not valid Python"):
        mk.apply_patch("a = 1\n", "a = 1", "a = (", "x.py")


def run_module(module, tmp_path):
    """`python -m <module> --json FILE` in a fresh process (one that has run no torch op yet, so
    its forked children start clean); returns the verdicts."""
    out = tmp_path / "verdicts.json"
    proc = subprocess.run([sys.executable, "-m", module, "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert out.is_file(), f"{module} wrote no verdicts (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout


@pytest.mark.slow
def test_every_mistake_fails_its_exercises_mapped_tests(tmp_path):
    verdicts, log = run_module("tutorials.mistakes", tmp_path)
    survivors = [f"{v['label']} ({v['message']})" for v in verdicts if not v["caught_by"]]
    assert not survivors, (f"{len(survivors)} of {len(verdicts)} mistakes pass their exercise's grader; "
                           "strengthen the exercise's tests:\n  " + "\n  ".join(survivors))


@pytest.mark.slow
def test_every_mutant_of_the_math_layer_fails_a_test(tmp_path):
    verdicts, log = run_module("tests.mutants", tmp_path)
    survivors = [v["label"] for v in verdicts if not v["caught_by"]]
    assert not survivors, f"{len(survivors)} of {len(verdicts)} mutants of common/nn survive: {survivors}"
