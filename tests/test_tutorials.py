"""Every numbered tutorial runs, start to end, and is a valid jupytext "percent" notebook.

Each `tutorials/NN_topic.py` is executed as a learner would run it (`python tutorials/NN_topic.py`
from the repository root) in a fresh interpreter, in quick mode (TUTORIAL_QUICK=1: fewer steps,
same code), with its plots sent to a temporary folder (TUTORIAL_OUT). A tutorial that raises, or
that asserts a number it printed, fails here with the tail of its output.

The quick runs are most of the fast suite's time, and each is one process doing small operations:
QUICK_JOBS of them (2, the cores `make test-fast` is sized for; 1 on a 1-core machine) run at once,
each with one thread (OMP_NUM_THREADS=1 unless set): the first quick-run test queues every selected
tutorial, in test order, and each test then waits for its own. TUTORIAL_JOBS=1 runs them one after
another, as a learner would.

The format check is what `make notebooks` (jupytext) needs: the file opens with a `# %% [markdown]`
cell, has prose and code cells, and every line of a prose cell is a comment.
"""
import importlib.util
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 600  # quick mode aims at seconds; this only stops a hung run on a slow, shared machine
QUICK_JOBS = max(1, int(os.environ.get("TUTORIAL_JOBS", min(2, os.cpu_count() or 1))))  # runs at once (docstring)
CELL = re.compile(r"^# %%(.*)$")
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def cells(source: str) -> list[tuple[str, list[str]]]:
    """[(kind, lines)] with kind "markdown" or "code", split at the `# %%` markers."""
    found: list[tuple[str, list[str]]] = []
    for line in source.splitlines():
        marker = CELL.match(line)
        if marker:
            kind = "markdown" if "[markdown]" in marker.group(1) else "code"
            found.append((kind, []))
        elif found:
            found[-1][1].append(line)
    return found


def test_the_course_has_numbered_tutorials():
    assert TUTORIALS, "no tutorials/NN_topic.py found: the glob tutorials/[0-9][0-9]_*.py matched nothing"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_is_jupytext_percent_with_prose_and_code_cells(path):
    source = path.read_text(encoding="utf-8")
    first = source.splitlines()[0] if source else ""
    assert first == "# %% [markdown]", (
        f"{path.name} must open with a '# %% [markdown]' cell (its title and formulas), "
        f"but line 1 is {first!r}")
    found = cells(source)
    kinds = {kind for kind, _ in found}
    assert kinds == {"markdown", "code"}, (
        f"{path.name} needs both '# %% [markdown]' prose cells and '# %%' code cells; found {sorted(kinds)}")
    for index, (kind, lines) in enumerate(found):
        if kind != "markdown":
            continue
        code = [line for line in lines if line.strip() and not line.startswith("#")]
        assert not code, (f"{path.name}: markdown cell {index} holds non-comment lines, which jupytext "
                          f"would not show as prose: {code[:3]}")
    assert re.search(r"^import _setup$", source, re.M), (
        f"{path.name} must `import _setup` (repository root on sys.path, QUICK mode, plot folder)")
    compile(source, str(path), "exec")


class QuickRuns:
    """The quick runs of this session: each started once, in a pool of QUICK_JOBS threads that each
    wait on one `python tutorials/NN_topic.py` process; its plots go to a fresh folder."""

    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.pool = ThreadPoolExecutor(max_workers=QUICK_JOBS)
        self.runs = {}  # path -> (future of (returncode or None on timeout, stdout, stderr), plot folder)
        self.processes = []
        self.lock, self.closed = threading.Lock(), False

    def start(self, path: Path):
        if path not in self.runs:
            out = self.factory.mktemp(f"quick_{path.stem}")
            self.runs[path] = (self.pool.submit(self.run, path, out), out)
        return self.runs[path]

    def run(self, path: Path, out: Path):
        env = {**os.environ, "TUTORIAL_QUICK": "1", "TUTORIAL_OUT": str(out), "MPLBACKEND": "Agg"}
        if QUICK_JOBS > 1:
            env.setdefault("OMP_NUM_THREADS", "1")  # runs side by side: threads of one must not wait on the other
        with self.lock:  # close() kills every process started before it, and none starts after it
            if self.closed:
                return None, "", "not run: the tests ended first"
            process = subprocess.Popen([sys.executable, str(path.relative_to(ROOT))], cwd=ROOT, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.processes.append(process)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            return None, stdout, stderr
        return process.returncode, stdout, stderr

    def close(self):
        with self.lock:
            self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in self.processes:  # a run started for a test that will not come (-x, Ctrl-C)
            if process.poll() is None:
                process.kill()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    runs = QuickRuns(tmp_path_factory)
    yield runs
    runs.close()


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_in_quick_mode(path, quick_runs, request):
    items = request.session.items
    later = [item.callspec.params["path"] for item in items[items.index(request.node) + 1:]
             if getattr(item, "function", None) is test_tutorial_runs_in_quick_mode]
    future, plots = quick_runs.start(path)
    for upcoming in later:  # selected in this session: queued now, run as a worker frees, checked by its own test
        quick_runs.start(upcoming)
    returncode, stdout, stderr = future.result()
    if returncode is None:
        pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s in quick mode; last output:\n{tail(stdout)}")
    run = subprocess.CompletedProcess(path, returncode, stdout, stderr)
    assert run.returncode == 0, (
        f"`TUTORIAL_QUICK=1 python {path.relative_to(ROOT)}` exited with {run.returncode}.\n"
        f"--- stderr (tail) ---\n{tail(run.stderr)}\n--- stdout (tail) ---\n{tail(run.stdout, 15)}")
    assert run.stdout.strip(), f"{path.name} printed nothing: a tutorial shows its shapes and numbers"
    if HAS_MATPLOTLIB and "save_plot(" in path.read_text(encoding="utf-8"):
        found = sorted(p.name for p in plots.rglob("*.png"))
        assert found, (f"{path.name} calls save_plot and matplotlib is installed, but no .png appeared "
                       f"in TUTORIAL_OUT={plots}; plots must go to _setup.OUT")


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_title_carries_its_file_number(path):
    title = path.read_text(encoding="utf-8").splitlines()[1]
    number = re.match(r"^# # (\d\d)\b", title)
    assert number is None or number.group(1) == path.name[:2], (
        f"{path.name}: its title {title!r} carries number {number.group(1)}, its file {path.name[:2]}")


ASKS = re.compile(r"^# (?:## |\*\*)?Predict, then run", re.M)
YOUR_TURN = re.compile(r"^# ## Your turn\b(.*?)(?=^# %%|\Z)", re.M | re.S)


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_asks_a_question_and_names_its_graded_exercise(path):
    from tutorials.exercises import REGISTRY
    source = path.read_text(encoding="utf-8")
    assert ASKS.search(source), f"{path.name} has no 'Predict, then run' question for the learner to answer first"
    turn = YOUR_TURN.search(source)
    assert turn, f"{path.name} has no '## Your turn: exercise `name`' section naming its graded exercise"
    named = [n for n in re.findall(r"`(\w+)`", turn.group(1)) if n in REGISTRY]
    assert named, (f"{path.name}: its 'Your turn' section names no graded exercise in backquotes; "
                   f"they are {sorted(REGISTRY)}")
