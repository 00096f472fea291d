"""bench/t5.py compares like with like: the same weights give the same first loss and the same greedy tokens."""
import pytest

pytest.importorskip("transformers")

from bench import t5  # noqa: E402


@pytest.mark.slow
def test_t5_bench_quick_run_agrees_with_transformers_before_timing():
    result = t5.run(quick=True, repeats=1)
    assert result["same_tokens"], "greedy tokens differ from transformers'"
    losses = result["first_loss"]
    assert abs(losses["ours"] - losses["transformers"]) < 1e-5, losses
    assert result["step"]["ratio"] > 0 and result["generation"]["ratio"] > 0
