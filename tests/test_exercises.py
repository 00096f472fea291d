"""The course's exercises make a round trip: reference passes -> stubbed copy fails -> each stub
fails exactly its own exercise.

Fast tests check the registry, the stubbing (signature, docstring and everything outside the
bodies survive) and the error messages. The slow ones run the real tests: the reference passes
every mapped test; a copy with every exercise stubbed imports, and fails every mapped test with
NotImplementedError; a copy with ONE exercise stubbed fails that exercise and passes every
exercise that does not build on it.
"""
import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tutorials import exercises as ex
from tutorials.exercises import Exercise, ExerciseError

ROOT = Path(__file__).resolve().parents[1]

FAKE = {
    "alpha": Exercise("alpha", "pkg/mod.py", "tutorials/00_alpha.py", ("tests/test_mod.py",),
                      hint="return x + y", keywords=("alpha",)),
    "beta": Exercise("beta", "pkg/mod.py", "tutorials/00_beta.py", ("tests/test_mod.py",),
                     hint="return 1 or 2", keywords=("beta",), exclude=("slow_beta",)),
}

MODULE = textwrap.dedent('''\
    """A module with two exercise regions."""
    import math

    CONSTANT = 3


    def deco(fn):
        return fn


    # BEGIN EXERCISE alpha
    @deco
    def first(x: int,
              y: int = 2) -> int:  # a comment inside the signature
        """Add x and y.

        With a second paragraph."""
        # a comment in the body
        z = x + y
        return z


    def second(x):
        return math.sqrt(x)
    # END EXERCISE alpha


    class Thing:
        # BEGIN EXERCISE beta
        def method(self, a):
            # a comment right after the signature
            if a:
                return 1
            return 2
        # END EXERCISE beta

        def untouched(self):
            return "same"
    ''')
BODY_LINES = ("# a comment in the body", "z = x + y", "return z", "return math.sqrt(x)",
              "# a comment right after the signature", "if a:", "return 1", "return 2")


def _run(namespace_text: str) -> dict:
    namespace: dict = {}
    exec(compile(namespace_text, "mod.py", "exec"), namespace)
    return namespace


def _skeleton(tree: ast.AST, stubbed: set) -> str:
    """ast.dump with the bodies of `stubbed` functions cut down to their docstring."""
    tree = ast.parse(ast.unparse(tree))  # a fresh copy to edit

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if name in stubbed:
                    doc = ex._docstring_node(child)
                    child.body = [doc] if doc else []
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return ast.dump(tree)


def _outside_regions(text: str) -> list:
    """The chunks of a file outside its exercise regions (markers included)."""
    chunks, current, inside = [], [], False
    for line in text.splitlines():
        match = ex.MARKER.match(line)
        if match and match.group(1) == "BEGIN":
            chunks.append(current + [line])
            current, inside = [], True
        elif match:
            current, inside = [line], False
        elif not inside:
            current.append(line)
    return chunks + [current]


# ---------------------------------------------------------------------------- the registry


def test_every_exercise_has_a_region_in_its_source_file_and_every_region_a_function():
    regions = ex.find_regions(ROOT)
    found = {(r.name, r.path) for r in regions}
    missing = [f"{e.name} ({e.source})" for e in ex.REGISTRY.values() if (e.name, e.source) not in found]
    assert not missing, f"no '# BEGIN EXERCISE' region for: {', '.join(missing)}"
    assert all(r.functions for r in regions)


def test_there_are_at_least_twelve_exercises_and_the_ladder_lists_each_once():
    assert len(ex.REGISTRY) >= 12, f"only {len(ex.REGISTRY)} exercises registered"
    laddered = [name for _, members in ex.LEVELS for name in members]
    assert sorted(laddered) == sorted(ex.REGISTRY), (
        f"ladder {sorted(laddered)} != registry {sorted(ex.REGISTRY)}")


def test_every_exercise_names_existing_test_files_and_plain_word_keywords():
    for e in ex.REGISTRY.values():
        missing = [t for t in e.tests if not (ROOT / t).is_file()]
        assert not missing, f"{e.name}: test files missing: {missing}"
        for word in e.keywords + e.exclude:
            assert ex.KEYWORD.match(word) and word not in ("and", "or", "not"), (
                f"{e.name}: keyword {word!r} must be one identifier-like word for pytest -k")
        unknown = set(e.requires) - set(ex.REGISTRY)
        assert not unknown, f"{e.name} requires unknown exercises {unknown}"
        assert e.name not in ex.requirements(e.name), f"{e.name} requires itself (a cycle)"


def test_every_exercise_points_at_an_existing_tutorial():
    missing = [f"{e.name}: {e.tutorial}" for e in ex.REGISTRY.values()
               if not (ROOT / e.tutorial).is_file()]
    assert not missing, f"tutorials missing: {missing}"


def test_selection_follows_keywords_and_exclusions_ignoring_case():
    beta = FAKE["beta"]
    assert beta.selects("tests/test_mod.py", ("TestBeta", "test_one"))
    assert beta.selects("tests/test_mod.py", ("test_x[BETA]",))
    assert not beta.selects("tests/test_mod.py", ("test_slow_beta",))
    assert not beta.selects("tests/test_other.py", ("test_beta",))
    assert beta.pytest_command() == 'python -m pytest tests/test_mod.py -k "beta and not slow_beta"'


# ---------------------------------------------------------------------------- stubbing


def test_stub_keeps_signatures_docstrings_markers_and_every_line_outside_the_bodies():
    stubbed, regions = ex.stub_text(MODULE, "pkg/mod.py", registry=FAKE)
    assert [(r.name, [f.qualname for f in r.functions]) for r in regions] == [
        ("alpha", ["first", "second"]), ("beta", ["Thing.method"])]
    stubbed_lines = {line.strip() for line in stubbed.splitlines()}
    for line in BODY_LINES:
        assert line not in stubbed_lines, f"body line {line!r} survived stubbing"
    kept = [line for line in MODULE.splitlines() if line.strip() not in BODY_LINES]
    out = iter(stubbed.splitlines())
    missing = [line for line in kept if not any(line == o for o in out)]
    assert not missing, f"lines outside the bodies were lost or reordered: {missing}"

    ns = _run(stubbed)
    assert ns["CONSTANT"] == 3 and ns["Thing"]().untouched() == "same"
    assert ns["first"].__doc__.startswith("Add x and y.")
    with pytest.raises(NotImplementedError) as info:
        ns["first"](1)
    message = str(info.value)
    for part in ("alpha: implement first", "return x + y", "tutorials/00_alpha.py",
                 'python -m pytest tests/test_mod.py -k "alpha"'):
        assert part in message, f"{part!r} missing from the stub's message: {message}"
    with pytest.raises(NotImplementedError, match="beta: implement Thing.method"):
        ns["Thing"]().method(True)
    with pytest.raises(NotImplementedError, match="alpha: implement second"):
        ns["second"](4.0)


def test_stubbing_twice_changes_nothing_more():
    once, _ = ex.stub_text(MODULE, "pkg/mod.py", registry=FAKE)
    twice, regions = ex.stub_text(once, "pkg/mod.py", registry=FAKE)
    assert twice == once and len(regions) == 2


def test_only_the_chosen_exercise_is_stubbed():
    stubbed, regions = ex.stub_text(MODULE, "pkg/mod.py", only=["beta"], registry=FAKE)
    assert [r.name for r in regions] == ["beta"]
    ns = _run(stubbed)
    assert ns["first"](1, 2) == 3 and ns["second"](4.0) == 2.0


def test_stubbed_course_files_keep_their_api_and_all_text_outside_the_regions():
    for path in ex._source_files(ROOT):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        stubbed, regions = ex.stub_text(text, rel)
        if not regions:
            assert stubbed == text
            continue
        names = {f.qualname for r in regions for f in r.functions}
        assert _skeleton(ast.parse(stubbed), names) == _skeleton(ast.parse(text), names), (
            f"{rel}: stubbing changed something besides the bodies of {sorted(names)}")
        assert _outside_regions(stubbed) == _outside_regions(text), (
            f"{rel}: text outside the exercise regions changed")
        for fn in ex._all_functions(ast.parse(stubbed)):
            if fn.qualname in names:
                body = fn.node.body[1:] if ex._docstring_node(fn.node) else fn.node.body
                assert len(body) == 1 and isinstance(body[0], ast.Raise), (
                    f"{rel}: {fn.qualname} is not reduced to one raise")


BAD_MARKERS = [
    ("# END EXERCISE alpha\n", "mod.py:1: END EXERCISE alpha without a BEGIN"),
    ("# BEGIN EXERCISE alpha\ndef f():\n    return 1\n# END EXERCISE beta\n",
     "mod.py:4: END EXERCISE beta closes region 'alpha' begun at line 1"),
    ("x = 1\n# BEGIN EXERCISE alpha\ndef f():\n    return 1\n",
     "mod.py:2: BEGIN EXERCISE alpha is never closed"),
    ("# BEGIN EXERCISE alpha\n# BEGIN EXERCISE beta\n",
     "mod.py:2: BEGIN EXERCISE beta inside region 'alpha' begun at line 1"),
    ("# BEGIN EXERCISE alpha\nx = 1\n# END EXERCISE alpha\n",
     "mod.py:1: region 'alpha' (lines 1-3) holds no complete function"),
    ("def f():\n    # BEGIN EXERCISE alpha\n    return 1\n    # END EXERCISE alpha\n\n\nx = f()\n",
     "mod.py:2: region 'alpha' (lines 2-4) cuts through function f (lines 1-3)"),
    ("# BEGIN EXERCISE alpha\ndef f():\n    x = 1\n# END EXERCISE alpha\n    return x\n",
     "mod.py:1: region 'alpha' (lines 1-4) cuts through function f (lines 2-5)"),
    ("# BEGIN EXERCISE gamma\n", "mod.py:1: unknown exercise 'gamma'"),
    ("# BEGIN EXERCISE\n", "mod.py:1: '# BEGIN EXERCISE' needs one lowercase exercise name"),
    ("# BEGIN EXERCISE alpha\ndef f(): return 1\n# END EXERCISE alpha\n",
     "mod.py:2: f has code on its signature or docstring line"),
]


@pytest.mark.parametrize("text, expected", BAD_MARKERS)
def test_marker_mistakes_are_reported_with_file_and_line(text, expected):
    with pytest.raises(ExerciseError) as info:
        ex.stub_text(text, "mod.py", registry=FAKE)
    assert expected in str(info.value), f"expected {expected!r} in: {info.value}"
    assert "\n" not in str(info.value), f"the message should be one line: {info.value}"


# ---------------------------------------------------------------------------- making a copy


def test_make_refuses_a_non_empty_folder_unless_forced(tmp_path):
    out = tmp_path / "student"
    out.mkdir()
    (out / "my_work.py").write_text("precious = True\n")
    with pytest.raises(ExerciseError, match="not empty .* --force"):
        ex.make_student_copy(out)
    assert (out / "my_work.py").read_text() == "precious = True\n"
    report = ex.make_student_copy(out, force=True)
    assert not (out / "my_work.py").exists() and report.files > 0
    assert set(report.stubbed) == {r.name for r in ex.find_regions(ROOT)}


@pytest.mark.parametrize("where", [".", "common/sub"])
def test_make_refuses_to_write_into_the_course_itself(where):
    with pytest.raises(ExerciseError, match="choose"):
        ex.make_student_copy(ROOT / where)


def test_make_writes_nothing_when_a_marker_is_wrong(tmp_path):
    course = tmp_path / "course"
    (course / "common").mkdir(parents=True)
    (course / "common" / "bad.py").write_text("x = 1\n# END EXERCISE masks\n")
    out = tmp_path / "student"
    with pytest.raises(ExerciseError, match=r"common/bad.py:2: END EXERCISE masks without"):
        ex.make_student_copy(out, root=course)
    assert not out.exists()


def test_make_command_fails_in_one_line_with_exit_status_2(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "tutorials.exercises", "make", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, f"exit {proc.returncode}, stderr: {proc.stderr}"
    assert proc.stderr.startswith("error: ") and "--force" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("from_git", [True, False], ids=["git work tree", "plain folder"])
def test_the_student_copy_holds_both_readmes(from_git, tmp_path):
    root = ROOT
    if not from_git:  # a course unpacked from an archive: no .git, the walk decides
        root = tmp_path / "course"
        root.mkdir()
        for name in ("README.md", "README.zh-CN.md", "Makefile"):
            shutil.copy(ROOT / name, root / name)
    files = ex._course_files(root)
    missing = [name for name in ("README.md", "README.zh-CN.md") if (ROOT / name).is_file() and name not in files]
    assert not missing, f"a student copy would lack {missing} (COPY_FILES: {ex.COPY_FILES})"


def test_copy_makefile_uses_the_course_python_and_never_installs(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = tmp_path / "student"
    ex.make_student_copy(out, only=["masks"])
    venv = ex._course_venv(ROOT)
    if venv is None:
        pytest.skip("not running in a virtual environment: the copy builds its own")
    dry = subprocess.run(["make", "-n", "grade", "test"], cwd=out, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "pip" not in dry.stdout, f"the copy's make would install into the course venv:\n{dry.stdout}"
    assert f"{venv}/bin/python -m tutorials.exercises grade" in dry.stdout, dry.stdout


# Body lines that answer nothing although no library line outside the regions holds them.
GENERIC_LINES = {"if self.rng.random() < 0.5:": "a coin flip (demo/corpus.py draws one too)",
                 "reduction=reduction)": "the last argument of a call (tests pass it on too)"}


def code_of(line: str) -> str:
    return line.split("  #")[0].strip()


def solution_lines(root: Path = ROOT) -> dict[str, str]:
    """{line: exercise} for the lines a stub removes that would give an answer away: the stripped
    code lines of every exercise body, 16 characters or longer, that the library code outside the
    regions does not also hold (`raise ValueError(` or `if mask is not None:` answer nothing)."""
    found: dict[str, str] = {}
    library: list[str] = []
    for path in ex._source_files(root):
        rel = path.relative_to(root).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        inside = set()
        for region in ex.find_regions_in_text("\n".join(lines), rel):
            inside.update(range(region.begin, region.end + 1))
            for fn in region.functions:
                doc = ex._docstring_node(fn.node)
                first = doc.end_lineno if doc else fn.node.body[0].lineno - 1
                for line in lines[first:fn.end]:
                    code = code_of(line)
                    if len(code) >= 16 and not code.startswith("#"):
                        found.setdefault(code, region.name)
        library.append("\n".join(line for i, line in enumerate(lines, 1) if i not in inside))
    library_text = "\n".join(library)
    return {line: name for line, name in found.items()
            if line not in library_text and line not in GENERIC_LINES}


def leaks(folder: Path, lines: dict[str, str]) -> dict[str, list[str]]:
    """{file of `folder`: the solution lines it holds}, every file of it read as text."""
    out: dict[str, list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a binary file (a plot) holds no source line
        hits = [f"{lines[line]}: {line}" for line in lines if line in text]
        if hits:
            out[path.relative_to(folder).as_posix()] = hits
    return out


@pytest.mark.skipif(ex.is_student_copy(ROOT), reason="a student copy: the reference's check")
def test_the_student_copy_carries_no_solution_line_in_any_file(tmp_path):
    lines = solution_lines()
    assert len(set(lines.values())) >= 0.8 * len(ex.REGISTRY), (
        f"only {sorted(set(lines.values()))} have a distinctive body line: the search would miss the others")
    # The search finds what it looks for: the teachers' material holds the reference lines.
    teacher = leaks(ROOT / "tutorials", lines)
    assert "mistakes.py" in teacher, "no solution line found in tutorials/mistakes.py: the search is broken"
    out = tmp_path / "student"
    ex.make_student_copy(out)
    found = leaks(out, lines)
    assert not found, "the student copy gives answers away:\n" + "\n".join(
        f"  {f}: {len(hits)} line(s), e.g. {hits[0]}" for f, hits in found.items())
    assert not [f for f in ex.TEACHER_FILES if (out / f).exists()], "teachers' material in the copy"
    assert (out / ex.STUDENT_MARK).is_file(), f"the copy lacks its mark {ex.STUDENT_MARK}"


@pytest.mark.skipif(ex.is_student_copy(ROOT), reason="a student copy: the reference's check")
def test_make_refuses_a_folder_inside_the_reference_course():
    with pytest.raises(ExerciseError, match="inside the reference course .* outside it"):
        ex.make_student_copy(ROOT / "student")
    assert not (ROOT / "student" / ex.STUDENT_MARK).exists()


@pytest.mark.skipif(ex.is_student_copy(ROOT), reason="a student copy: the reference's check")
def test_grade_refuses_the_reference_course_unless_a_teacher_asks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tutorials.exercises", "grade", "--json", ""],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "reference course" in proc.stderr and "--reference" in proc.stderr, (
        f"grade at the reference root exited {proc.returncode}: {proc.stderr or proc.stdout[-500:]}")
    missing = subprocess.run([sys.executable, "-m", "tutorials.exercises", "grade", "--root",
                              str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "make exercises" in missing.stderr, missing.stderr


# ---------------------------------------------------------------------------- grading


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_mod" name="test_alpha_ok" time="0.1"/>
<testcase classname="tests.test_mod.TestBeta" name="test_one[2]" time="0.1">
  <failure message="NotImplementedError: beta: implement">trace</failure></testcase>
<testcase classname="tests.test_mod" name="test_beta_skip" time="0"><skipped message="no data"/></testcase>
<testcase classname="" name="tests.test_broken" time="0"><error message="collection failure">
Traceback:\nE   ModuleNotFoundError: No module named 'x'</error></testcase>
<testcase classname="" name="tests.test_oracle" time="0"><skipped message="collection skipped">
Skipped: transformers is not installed</skipped></testcase>
</testsuite></testsuites>"""


def test_junit_outcomes_are_sorted_by_exercise():
    outcomes, broken, skipped = ex.parse_junit(
        JUNIT, ["tests/test_mod.py", "tests/test_broken.py", "tests/test_oracle.py"])
    assert broken == {"tests/test_broken.py": "ModuleNotFoundError: No module named 'x'"}, broken
    assert "transformers is not installed" in skipped["tests/test_oracle.py"], skipped
    assert [(o.nodeid, o.outcome) for o in outcomes] == [
        ("tests/test_mod.py::test_alpha_ok", "passed"),
        ("tests/test_mod.py::TestBeta::test_one[2]", "failed"),
        ("tests/test_mod.py::test_beta_skip", "skipped")]
    assert FAKE["beta"].selects(outcomes[1].file, outcomes[1].names)


def test_grade_report_climbs_the_ladder_only_level_by_level():
    def result(name, ok):
        failed = [] if ok else [ex.TestOutcome("tests/t.py", ("test_x",), "failed", "E  ValueError: no")]
        return ex.ExerciseResult(name, passed=1, failed=failed, skipped=0)

    levels = (("Bronze", ("alpha",)), ("Silver", ("beta",)))
    report = ex.grade_report({"alpha": result("alpha", True), "beta": result("beta", False)},
                             levels, FAKE)
    assert "Grade: Bronze" in report and "For Silver, still to do: beta" in report, report
    assert "ValueError: no" in report, report
    report = ex.grade_report({"alpha": result("alpha", False), "beta": result("beta", True)},
                             levels, FAKE)
    assert "Grade: none yet" in report, report


COLLECT = textwrap.dedent("""
    import json, sys, pytest
    class Collect:
        def pytest_collection_finish(self, session):
            self.ids = [item.nodeid for item in session.items]
    out = {}
    for name, files, k in json.loads(sys.argv[1]):
        c = Collect()
        pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *files]
                    + (["-k", k] if k else []), plugins=[c])
        out[name] = c.ids
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_each_exercise_selects_exactly_what_its_pytest_k_command_selects():
    """The grader sorts ONE pytest run by our keyword matching; the stub messages tell the
    student to run `pytest <files> -k <expression>`. Both must pick the same tests."""
    files = sorted({f for e in ex.REGISTRY.values() for f in e.tests})
    spec = [["*all*", files, ""]] + [[e.name, list(e.tests), e.k_expression()]
                                      for e in ex.REGISTRY.values()]
    proc = subprocess.run([sys.executable, "-c", COLLECT, json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = json.loads(lines[0][len("RESULT"):])
    for e in ex.REGISTRY.values():
        ours = {n for n in collected["*all*"] if e.selects(n.split("::")[0], n.split("::")[1:])}
        theirs = set(collected[e.name])
        assert ours == theirs, (f"{e.name}: only we select {sorted(ours - theirs)}; only "
                                f"`{e.pytest_command()}` selects {sorted(theirs - ours)}")
        assert ours, f"{e.name}: {e.pytest_command()} selects no test"


@pytest.mark.slow
def test_reference_passes_every_mapped_test():
    run = ex.run_exercise_tests(ROOT)
    bad = {n: (r.problem or [o.nodeid for o in r.failed]) for n, r in run.results.items() if not r.ok}
    assert not bad, f"the reference fails its own exercises: {bad}\n{run.output[-3000:]}"


@pytest.mark.slow
def test_fully_stubbed_copy_imports_and_fails_every_mapped_test_with_not_implemented(tmp_path):
    out = tmp_path / "student"
    report = ex.make_student_copy(out)
    assert not report.missing, f"exercises without a region: {report.missing}"

    modules = sorted(".".join(p.relative_to(out).with_suffix("").parts).removesuffix(".__init__")
                     for d in ex.SOURCE_DIRS for p in (out / d).rglob("*.py"))
    check = (f"import importlib; mods = {modules!r}; [importlib.import_module(m) for m in mods]; "
             "import common; print(common.__file__)")
    proc = subprocess.run([sys.executable, "-c", check], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, f"the student copy does not import:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().startswith(str(out)), f"imported {proc.stdout} instead of the copy"

    run = ex.run_exercise_tests(out)
    for name, r in run.results.items():
        assert not r.problem, f"{name}: {r.problem}\n{run.output[-3000:]}"
        assert r.passed == 0 and r.failed, (
            f"{name}: {r.passed} of {r.total} mapped tests pass with every exercise stubbed; "
            "they do not test this exercise")
        other = [o.nodeid for o in r.failed if "NotImplementedError" not in o.message]
        assert not other, f"{name}: these fail for another reason than the stubs: {other}"


@pytest.mark.slow
@pytest.mark.parametrize("only", ["kv_cache", "causal_lm_loss"])
def test_stubbing_one_exercise_fails_it_and_no_exercise_that_does_not_build_on_it(only, tmp_path):
    out = tmp_path / "student"
    ex.make_student_copy(out, only=[only])
    run = ex.run_exercise_tests(out)
    mine = run.results[only]
    assert mine.passed == 0 and mine.failed, (
        f"{only} stubbed, yet {mine.passed}/{mine.total} of its tests pass")
    wrongly = {n: [o.nodeid for o in r.failed] or r.problem for n, r in run.results.items()
               if n != only and only not in ex.requirements(n) and not r.ok}
    assert not wrongly, (f"stubbing only {only} broke exercises that do not build on it "
                         f"(fix their test mapping or their `requires`): {wrongly}")
