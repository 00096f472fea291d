""".gitignore keeps run outputs out of git, and only them: `results/` at the top of the repository
(make demo, make bench, the tutorials' plots) is ignored, while docs/results/ holds the measured
reports that belong in the history and must be added like any file, without `git add -f`."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ignored(*paths: str) -> set[str]:
    """The paths (need not exist) that .gitignore ignores, as git decides it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git work tree (a student copy or an unpacked archive): nothing to check")
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *paths],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), f"git check-ignore failed: {proc.stderr}"
    return set(proc.stdout.split())


def test_run_outputs_at_the_top_are_ignored_and_docs_results_is_not():
    outputs = ["results/demo/summary.md", "results/bench.json", "results/tutorials/masks.png"]
    reports = ["docs/results/bench.md", "docs/results/new_report.md", "docs/results/curve.png"]
    got = ignored(*outputs, *reports)
    assert got >= set(outputs), f"run outputs that git would track: {sorted(set(outputs) - got)}"
    wrongly = sorted(got & set(reports))
    assert not wrongly, f"reports that git ignores (so they need `git add -f`): {wrongly}; anchor the pattern: /results/"
