"""The benchmarks run and measure the same thing on both sides (no speed is asserted: timings
on a shared machine are not a test). At tiny sizes:
    row 1  ours and transformers start from the same loss on the same batch
    row 2  the MLM+NSP loss is identical with logits at masked positions only, at all positions,
           and in transformers
    row 3  greedy generation gives the same tokens as transformers' generate
and the layers' fused activation kernels compute the formulas of common/nn/blocks.py.
The whole `python -m bench.run_all --quick` (fresh processes for peak memory) is marked slow.
"""
import json
import subprocess
import sys

import pytest
import torch

from common.nn.blocks import ACTIVATIONS, FUSED_ACTIVATIONS, EncoderBlock
from common.nn.masks import padding_mask
from minibert.masked_only import encoder_block_at, loss_positions

pytest.importorskip("transformers", reason="transformers (the benchmark's reference) is not installed")

from bench import bert_pretrain, generation, gpt_train, timing  # noqa: E402


def test_fused_activation_kernels_equal_the_formulas():
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    for name, formula in ACTIVATIONS.items():
        err = (FUSED_ACTIVATIONS[name](x) - formula(x)).abs().max().item()
        assert err <= 1e-12, f"fused {name!r} differs from its formula by {err:.2e} (tolerance 1e-12)"


def test_encoder_block_at_equals_the_block_at_those_positions():
    torch.manual_seed(0)
    block = EncoderBlock(16, 4, 32, hidden_dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(3, 9, 16)
    mask = padding_mask(torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 2 + [0] * 7]))
    positions = torch.tensor([[0, 4, 8], [0, 1, 5], [0, 0, 1]])
    full, _ = block(x, mask=mask)
    at = encoder_block_at(block, x, positions, mask)
    expected = full.gather(1, positions[..., None].expand(-1, -1, 16))
    err = (at - expected).abs().max().item()
    assert err <= 1e-6, f"encoder_block_at differs from EncoderBlock.forward at the same positions by {err:.2e}"


def test_loss_positions_lists_each_rows_labelled_positions_in_order():
    labels = torch.tensor([[-100, 5, -100, 7], [-100, -100, -100, -100], [1, -100, -100, 2]])
    positions, valid = loss_positions(labels)
    assert positions.tolist() == [[1, 3], [0, 0], [0, 3]], positions
    assert valid.tolist() == [[True, True], [False, False], [True, True]], valid
    picked = labels.gather(1, positions)[valid]
    assert picked.tolist() == labels[labels != -100].tolist(), "order must match labels[labels != -100]"


def test_interleaved_timing_runs_every_candidate_once_per_step_and_repeat():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    result = timing.interleaved({"a": make("a"), "b": make("b")}, repeats=3, steps=2, warmup=1)
    assert calls == {"a": 7, "b": 7}, f"expected 1 warm-up + 3 repeats x 2 steps = 7 calls each, got {calls}"
    assert all(len(t.per_repeat) == 3 for t in result.values()), result


def test_gpt_row_compares_models_with_the_same_starting_loss():
    result = gpt_train.run(quick=True, peak_flops=1e9)
    assert result["loss_gap"] <= 1e-5, f"ours and transformers start {result['loss_gap']:.2e} apart"
    assert set(result["candidates"]) >= {"transformers", "ours", "ours sdpa"}, result["candidates"]
    assert all(c["ms"] > 0 and c["mfu"] > 0 for c in result["candidates"].values()), result["candidates"]
    assert result["ceiling"]["ratio"] > 0, result["ceiling"]


@pytest.mark.parametrize("size", ["QUICK", "FULL"])
def test_ceiling_times_exactly_the_matrix_products_of_a_training_step(size):
    """The row-1 ceiling is only a bound if its products are those of a real step: the same FLOPs
    per kind of product (addmm, mm, bmm) as forward + backward of our GPT."""
    from torch.utils.flop_counter import FlopCounterMode

    size = getattr(gpt_train, size)
    model = gpt_train.ours_from_hf(gpt_train.hf_gpt2(size))
    x = torch.randint(0, size["vocab_size"], (size["batch_size"], size["block_size"]))
    with FlopCounterMode(display=False) as step:
        gpt_train.ours_loss(model, x).backward()
    with FlopCounterMode(display=False) as products:
        gpt_train.matrix_products(size)()
    got = {str(op): n for op, n in products.get_flop_counts()["Global"].items()}
    want = {str(op): n for op, n in step.get_flop_counts()["Global"].items()}
    assert got == want, f"ceiling products {got} != training step products {want}"


def test_bert_row_loss_is_identical_with_masked_only_logits():
    result = bert_pretrain.run(quick=True)
    losses = result["losses"]
    assert result["loss_gap"] <= 1e-5, f"MLM+NSP losses differ: {losses}"


def test_generation_row_produces_the_same_tokens_as_transformers():
    result = generation.run(quick=True)
    assert result["same_tokens"], "greedy tokens differ from transformers' generate on the same weights"


@pytest.mark.slow
def test_run_all_quick_writes_the_table_and_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"bench.run_all --quick failed:\n{done.stderr[-2000:]}"
    table = (tmp_path / "bench.md").read_text()
    for row in ("GPT training step", "BERT pre-training step", "Generation", "Peak memory", "bf16", "MFU"):
        assert row in table, f"{row!r} missing from bench.md:\n{table[:1500]}"
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["generation"]["same_tokens"], "generation row: tokens differ from transformers"


@pytest.mark.slow
def test_tokenizer_bench_trains_both_sides_and_checks_four_encoders_agree(tmp_path):
    """bench/tokenizer.py on a tiny text: both trainers run, and the four GPT-2 encoders give the
    same ids on it (measure() raises otherwise)."""
    from bench import tokenizer as bench_tokenizer
    gpt2 = bench_tokenizer.DATA / "gpt2"
    (tmp_path / "tinyshakespeare.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    if (gpt2 / "merges.txt").is_file():
        (tmp_path / "gpt2").symlink_to(gpt2.resolve())
    tiny = dict(vocab_size=300, corpus_bytes=3000, shakespeare_chars=None, train_repeats=1, big_repeats=1,
                encode_repeats=1)
    results = bench_tokenizer.measure(tiny, tmp_path, memory=False)
    assert set(results["training"]) == {"shakespeare", "corpus"}
    assert all(row["ours_s"] > 0 and row["tokenizers_s"] > 0 for row in results["training"].values())
    if (gpt2 / "merges.txt").is_file():
        assert len(results["encoding"]) == 4, results["encoding"]
    assert "ours / tokenizers" in bench_tokenizer.markdown(results)


def test_torch_layer_norm_is_the_formula():
    """The blocks run nn.LayerNorm; it must be (x - mean) / sqrt(biased var + eps) * gamma + beta."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 3 + 1
    norm = torch.nn.LayerNorm(16, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased: divide by C, not C - 1
    by_hand = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    err = (norm(x) - by_hand).abs().max().item()
    assert err <= 1e-12, f"nn.LayerNorm differs from the formula by {err:.2e}"
