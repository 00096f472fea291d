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


@pytest.mark.slow
def test_t5_bench_padded_row_gives_the_same_loss_on_all_three_sides():
    """transformers, ours with the head only at labels != -100, ours with the textbook head: one loss."""
    result = t5.padded_step(t5.QUICK, quick=True, repeats=1)
    losses = result["first_loss"]
    gap = max(losses.values()) - min(losses.values())
    assert gap < 1e-5, f"first losses on the padded batch differ by {gap:.2e}: {losses}"
    assert 0 < result["scored_fraction"] <= 1, result["scored_fraction"]
    assert result["ratio"] > 0 and result["ratio_to_textbook_head"] > 0, result


def test_padded_batches_are_padded_as_the_seq2seq_collator_pads():
    data, _ = t5.padded_batches(t5.QUICK, n=2)
    for batch in data:
        lengths = batch["attention_mask"].sum(1)
        assert int(lengths.max()) == batch["input_ids"].size(1), "sources should be padded to the longest"
        assert bool((batch["input_ids"][batch["attention_mask"] == 0] == 0).all()), "source padding should be id 0"
        scored = (batch["labels"] != -100).sum(1)
        assert int(scored.max()) == batch["labels"].size(1), "targets should be padded to the longest"
        for row in batch["labels"]:
            n = int((row != -100).sum())
            assert bool((row[n:] == -100).all()), f"-100 only after the target's {n} tokens: {row.tolist()}"
