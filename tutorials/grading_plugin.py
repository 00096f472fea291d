"""pytest plugin loaded by `python -m tutorials.exercises grade` (`-p tutorials.grading_plugin`).

A stubbed exercise fails on every input, so Hypothesis would spend seconds per test shrinking a
failure that is already as simple as it gets. While grading, property tests report their first
failing example instead; everything else (examples, deadline) stays as the project's conftest set
it. Run pytest yourself (without this plugin) to see a shrunk, minimal counterexample.

EXERCISES_MAX_EXAMPLES=N (optional) lowers the examples per property test that does not set its
own: tests/test_ladder.py runs every exercise's tests once per step of the ladder, where the
question is whether an exercise passes at its turn, not how hard its properties are pushed.
"""
import os

import pytest


@pytest.hookimpl(trylast=True)  # after conftest.py and Hypothesis have loaded their profile
def pytest_configure(config):
    try:
        from hypothesis import Phase, settings
    except ImportError:  # no property tests to speed up
        return
    examples = os.environ.get("EXERCISES_MAX_EXAMPLES", "")
    settings.register_profile(
        "exercises-grading", settings(), report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        **({"max_examples": int(examples)} if examples.isdigit() else {}),
    )
    settings.load_profile("exercises-grading")
