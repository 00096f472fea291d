"""The ladder can be climbed: a student who solves the exercises in the order `make grade` lists
them sees each one pass as soon as it is solved.

The round trip in test_exercises.py stubs ONE exercise at a time; this walks the path a student
takes. From the fully stubbed copy, the reference solution of one exercise at a time is put back,
in ladder order, and that exercise's mapped tests must pass at that moment, while every exercise
after it is still a stub. A test that also calls a later exercise (log_softmax's tests calling
cross_entropy), or an exercise listed before one it needs (sampling before kv_cache), fails here
with the test and the stub it hit.

The fast tests check the same thing on paper: every exercise's `requires` come before it.

Speed: one student copy, rewritten in place step by step; one parent process imports torch, pytest
and hypothesis once and forks a child per step, which imports the copy's modules fresh and runs
only that exercise's tests (about 1-3 s a step instead of about 5 s with a fresh interpreter), with at
most 8 examples per property test (EXERCISES_MAX_EXAMPLES, tutorials/grading_plugin.py) unless the
test sets its own.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tutorials import exercises as ex

ROOT = Path(__file__).resolve().parents[1]


def test_every_exercise_comes_after_the_exercises_it_requires():
    order = ex.ladder_order()
    late = {name: sorted(d for d in ex.requirements(name) if order.index(d) > order.index(name))
            for name in order}
    late = {name: deps for name, deps in late.items() if deps}
    assert not late, (f"in the ladder {order}, these exercises come before what they require "
                      f"(reorder LEVELS or fix `requires`): {late}")


def test_every_function_an_exercise_asks_for_is_named_in_its_tutorial():
    """An exercise asks for what its tutorial teaches, not for a helper that exists for speed
    (shifted_log_normaliser once sat in the log_softmax region). A method `C.forward` counts as
    named when its class is; `beam_search` when the tutorial says "beam search"."""
    unnamed = []
    for region in ex.find_regions(ROOT):
        e = ex.REGISTRY[region.name]
        text = (ROOT / e.tutorial).read_text(encoding="utf-8") + e.hint
        for fn in region.functions:
            parts = fn.qualname.split(".")
            word = parts[0] if parts[-1] in ("forward", "__call__") else parts[-1]
            if word not in text and word.strip("_").replace("_", " ") not in text:
                unnamed.append(f"{region.name}: {fn.qualname} ({region.path}) is not named in {e.tutorial}")
    assert not unnamed, ("exercise regions hold functions their tutorial never mentions; move a "
                         "speed helper out of the region, or teach it:\n" + "\n".join(unnamed))


def test_the_ladder_order_is_the_order_grade_lists_and_covers_the_registry():
    order = ex.ladder_order()
    assert sorted(order) == sorted(ex.REGISTRY), f"ladder {order} != registry {sorted(ex.REGISTRY)}"
    assert order[:len(ex.LEVELS[0][1])] == list(ex.LEVELS[0][1]), order


# The forking runner: argv[1] is a JSON plan [{"name", "write": {path: text}, "args"}]. Writes each
# step's files, then runs pytest with the step's arguments in a forked child (the parent never
# imports the copy's modules, so each child sees the files as they are now).
RUNNER = textwrap.dedent("""
    import json, os, subprocess, sys
    import torch, pytest, hypothesis  # shared by every step; imported once, before forking
    plan = json.load(open(sys.argv[1], encoding="utf-8"))
    sys.path.insert(0, os.getcwd())
    for step in plan:
        for rel, text in step["write"].items():
            with open(rel, "w", encoding="utf-8") as f:
                f.write(text)
        if hasattr(os, "fork"):
            pid = os.fork()
            if pid == 0:
                sys.stdout = open(step["log"], "w")
                sys.stderr = sys.stdout
                code = pytest.main(step["args"])
                sys.stdout.flush()
                os._exit(int(code))
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        else:
            with open(step["log"], "w") as log:
                code = subprocess.run([sys.executable, "-m", "pytest", *step["args"]],
                                      stdout=log, stderr=subprocess.STDOUT).returncode
        print("STEP", step["name"], code, flush=True)
""")


@pytest.mark.slow
def test_solving_the_exercises_in_ladder_order_passes_each_as_soon_as_it_is_solved(tmp_path):
    out = tmp_path / "student"
    report = ex.make_student_copy(out)
    assert not report.missing, f"exercises without a region: {report.missing}"
    order = ex.ladder_order()
    sources = {}  # the files holding regions: reference text
    for path in ex._source_files(ROOT):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if ex.find_regions_in_text(text, rel):
            sources[rel] = text
    current = {rel: (out / rel).read_text(encoding="utf-8") for rel in sources}

    plan = []
    for i, name in enumerate(order):
        still_stubbed = order[i + 1:]
        write = {}
        for rel, text in sources.items():
            new, _ = ex.stub_text(text, rel, only=still_stubbed)
            if new != current[rel]:
                write[rel] = current[rel] = new
        e = ex.REGISTRY[name]
        files = [f for f in e.tests if (out / f).is_file()]
        junit = tmp_path / f"{i:02d}_{name}.xml"
        plan.append({"name": name, "write": write, "log": str(tmp_path / f"{i:02d}_{name}.log"),
                     "junit": str(junit), "args": ex.pytest_arguments(files, [e], junit)})
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan), encoding="utf-8")
    env = {**os.environ, "EXERCISES_MAX_EXAMPLES": "8", "PYTHONPATH": os.pathsep.join(
        [str(out)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))}
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(plan_file)], cwd=out, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"the runner failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

    stuck = []
    for i, step in enumerate(plan):
        name, e = step["name"], ex.REGISTRY[step["name"]]
        junit = Path(step["junit"])
        log = Path(step["log"]).read_text(encoding="utf-8") if Path(step["log"]).is_file() else ""
        if not junit.is_file():
            stuck.append(f"{name}: pytest wrote no report:\n{log[-1500:]}")
            continue
        files = [f for f in e.tests if (out / f).is_file()]
        outcomes, broken, skipped = ex.parse_junit(junit.read_text(encoding="utf-8"), files)
        r = ex.sort_outcomes([e], out, outcomes, broken, skipped)[name]
        if not r.ok:
            first = r.problem or f"{r.failed[0].nodeid}: {ex._summary(r.failed[0].message)[:300]}"
            stuck.append(f"{name} (step {i + 1}, solved: {', '.join(order[:i + 1])}): "
                         f"{r.passed}/{r.total} pass; first failure: {first}")
    assert not stuck, ("solved in ladder order, these exercises still fail when their turn comes "
                       "(a test that calls a later exercise: move it, reorder LEVELS, or add "
                       "`requires`):\n" + "\n".join(stuck))
