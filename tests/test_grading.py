"""The grade as data, for teachers and autograders: grade.json and the JUnit XML follow their
written schemas (tutorials/schemas/), `--require-level` sets the exit status, and a teacher's
folder of extra tests (`--extra-tests DIR`) is run with each exercise's tests and counted.

The fast tests build results by hand; the slow one grades a copy of the course for real, with and
without a planted extra test, and checks that the planted test changes the grade.
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tutorials import exercises as ex
from tutorials.exercises import Exercise, ExerciseError, ExerciseResult
from tutorials.exercises import TestOutcome as Outcome

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tutorials" / "schemas"

FAKE = {
    "alpha": Exercise("alpha", "pkg/mod.py", "tutorials/00_alpha.py", ("tests/test_mod.py",),
                      hint="return x + y", keywords=("alpha",)),
    "beta": Exercise("beta", "pkg/mod.py", "tutorials/00_beta.py", ("tests/test_mod.py",),
                     hint="return 1", keywords=("beta",), requires=("alpha",)),
    "beta_two": Exercise("beta_two", "pkg/mod.py", "tutorials/00_beta.py", ("tests/test_mod.py",),
                         hint="return 2", keywords=("beta_two",)),
}
LEVELS = (("Bronze", ("alpha",)), ("Silver", ("beta", "beta_two")))


def result(name, passed=2, failed=0, problem=""):
    fails = [Outcome("tests/test_mod.py", (f"test_{name}_{i}",), "failed",
                         "E   NotImplementedError: implement it") for i in range(failed)]
    return ExerciseResult(name, passed=passed, failed=fails, skipped=0, problem=problem)


CASES = {
    "all pass": {"alpha": result("alpha"), "beta": result("beta"), "beta_two": result("beta_two")},
    "one fails": {"alpha": result("alpha"), "beta": result("beta", 1, 1),
                  "beta_two": result("beta_two")},
    "cannot run": {"alpha": result("alpha", 0, 0, "could not import tests/test_mod.py: SyntaxError"),
                   "beta": result("beta", 0, 2), "beta_two": result("beta_two")},
}


def validate_json(data):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / "grade.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    assert not errors, f"grade.json breaks tutorials/schemas/grade.schema.json: {errors}"


def validate_junit(path):
    etree = pytest.importorskip("lxml.etree")
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "grade.junit.xsd")))
    doc = etree.parse(str(path))
    assert schema.validate(doc), (f"{path.name} breaks tutorials/schemas/grade.junit.xsd: "
                                  f"{[str(e) for e in schema.error_log]}")
    return doc


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_grade_json_and_junit_follow_their_schemas(case, tmp_path):
    results = CASES[case]
    data = ex.grade_data(results, LEVELS, FAKE)
    validate_json(json.loads(json.dumps(data)))
    junit = tmp_path / "grade.xml"
    ex.write_junit(data, junit)
    doc = validate_junit(junit)
    cases = doc.getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == list(results), "one testcase per exercise, in order"
    for c in cases:
        status = next(x["status"] for x in data["exercises"] if x["name"] == c.get("name"))
        tags = {child.tag for child in c} - {"system-out"}
        assert tags == {"pass": set(), "fail": {"failure"}, "error": {"error"}}[status], (
            f"{c.get('name')} is {status} in grade.json but its testcase holds {tags}")


def test_grade_json_reports_counts_status_requires_first_failure_and_level():
    data = ex.grade_data(CASES["one fails"], LEVELS, FAKE)
    beta = next(x for x in data["exercises"] if x["name"] == "beta")
    assert (beta["tests_passed"], beta["tests_total"], beta["status"]) == (1, 2, "fail"), beta
    assert beta["requires"] == ["alpha"] and beta["failing_requires"] == [], beta
    assert beta["first_failure"] == {"test": "tests/test_mod.py::test_beta_0",
                                     "message": "NotImplementedError: implement it"}, beta
    assert (data["level"], data["next_level"], data["next_level_needs"]) == (
        "Bronze", "Silver", ["beta"]), data
    assert [lvl["reached"] for lvl in data["ladder"]] == [True, False], data["ladder"]

    data = ex.grade_data(CASES["cannot run"], LEVELS, FAKE)
    alpha, beta = data["exercises"][:2]
    assert alpha["status"] == "error" and alpha["first_failure"]["test"] is None, alpha
    assert beta["failing_requires"] == ["alpha"], beta
    assert data["level"] is None and data["next_level"] == "Bronze", data


@pytest.mark.parametrize("required, reached, status", [
    ("Bronze", "all pass", 0), ("Silver", "all pass", 0), ("Bronze", "one fails", 0),
    ("Silver", "one fails", 1), ("Bronze", "cannot run", 1)])
def test_require_level_exits_1_below_the_level(required, reached, status, tmp_path, monkeypatch,
                                               capsys):
    results = CASES[reached]
    monkeypatch.setattr(ex, "REGISTRY", FAKE)
    monkeypatch.setattr(ex, "LEVELS", LEVELS)
    monkeypatch.setattr(ex, "run_exercise_tests",
                        lambda *a, **k: ex.RunResult(dict(results), 0, ""))
    out = tmp_path / "grade.json"
    # The parser's --require-level choices are read from LEVELS when it is built.
    got = ex.main(["grade", "--reference", "--require-level", required, "--json", str(out)])
    assert got == status, f"--require-level {required} with '{reached}' exited {got}, not {status}"
    assert json.loads(out.read_text())["exercises_total"] == 3
    if status:
        assert f"Level {required} required" in capsys.readouterr().err


def test_extra_test_files_map_to_exercises_by_file_or_folder_name(tmp_path):
    for rel in ["test_alpha.py", "test_beta_two.py", "test_beta_more.py", "beta/test_x.py",
                "beta/helpers.py", "conftest.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    got = ex.extra_test_files(tmp_path, FAKE)
    assert got == {"alpha": ["test_alpha.py"], "beta": ["beta/test_x.py", "test_beta_more.py"],
                   "beta_two": ["test_beta_two.py"]}, got
    (tmp_path / "test_gamma.py").write_text("")
    with pytest.raises(ExerciseError, match=r"test_gamma.py: a teacher's test file must be named "
                                            r"test_<exercise>.py"):
        ex.extra_test_files(tmp_path, FAKE)


def test_an_empty_or_missing_extra_folder_is_an_error(tmp_path):
    with pytest.raises(ExerciseError, match="no test_<exercise>.py file"):
        ex.extra_test_files(tmp_path, FAKE)
    with pytest.raises(ExerciseError, match="not a folder"):
        ex.extra_test_files(tmp_path / "nope", FAKE)


PLANTED = textwrap.dedent('''
    """A teacher's hidden tests for the masks exercise."""
    import torch
    from common.nn.masks import causal_mask, padding_mask


    def test_padding_mask_shape_for_one_sequence():
        assert padding_mask(torch.ones(1, 4)).shape == (1, 1, 1, 4)


    def test_causal_mask_is_strict_about_the_future():
        # Planted to fail on the reference: the diagonal IS allowed.
        assert not causal_mask(3)[0, 0, 1, 1]
''')


def grade(root, tmp_path, *extra):
    out_json, out_xml = tmp_path / "grade.json", tmp_path / "grade.xml"
    proc = subprocess.run([sys.executable, "-m", "tutorials.exercises", "grade", "--only", "masks",
                           "--root", str(root), "--json", str(out_json), "--junit", str(out_xml),
                           "--require-level", "Bronze", *extra],
                          cwd=root, capture_output=True, text=True)
    assert out_json.is_file(), f"no grade.json (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out_json.read_text(encoding="utf-8"))
    validate_json(data)
    validate_junit(out_xml)
    return proc, data["exercises"][0]


@pytest.mark.slow
def test_a_planted_extra_test_is_run_with_the_exercise_and_changes_its_grade(tmp_path):
    course = tmp_path / "course"
    ex.make_student_copy(course, only=[])  # nothing stubbed: the reference, in a copy
    proc, before = grade(course, tmp_path)
    assert before["status"] == "pass" and before["extra_tests"] == 0, before
    assert proc.returncode == 1, "--only masks cannot reach Bronze: --require-level must exit 1"

    extra = tmp_path / "teacher"
    extra.mkdir()
    (extra / "test_masks.py").write_text(PLANTED)
    proc, after = grade(course, tmp_path, "--extra-tests", str(extra))
    assert after["tests_total"] == before["tests_total"] + 2, (before, after)
    assert after["tests_passed"] == before["tests_passed"] + 1, (before, after)
    assert after["extra_tests"] == 2 and after["status"] == "fail", after
    assert after["first_failure"]["test"].endswith(
        "test_masks.py::test_causal_mask_is_strict_about_the_future"), after["first_failure"]
    assert not list((course / "tests").glob("_teacher_*")), "the staged extra tests were left behind"
