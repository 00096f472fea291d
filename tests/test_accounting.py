"""Predicted training costs (common/train/accounting.py, each family's accounting.py) against measurement.

    parameters: exactly the model's count;   FLOPs per step: 6 N_mat D + 12 B h T_q T_k d_k per
    attention layer, within 5% of what torch's profiler counts for the matrix products (forward +
    backward);   peak memory of an AdamW step: weights + AdamW state + max(activations + transient,
    gradients), within 15% of the measured peak (common/train/measure.py) plus the weights and state.
Three sizes per family, tiny (bench/compute.py ACCOUNTING_CASES; `python -m bench.compute accounting`
prints the same comparison as a table); the measured ones are slow: the profiler's start-up costs seconds.
"""
import json

import pytest
import torch

from bench.compute import ACCOUNTING_CASES, predicted_and_measured
from common.train.accounting import count_parameters
from minigpt.accounting import estimate as gpt_estimate
from minigpt.config import LLAMA_SHAPE, GPTConfig
from minigpt.model import GPT


CASES = [(family, size) for family in ACCOUNTING_CASES for size in range(3)]
IDS = [f"{family}-{size}" for family, size in CASES]


@pytest.mark.parametrize("family,size", CASES, ids=IDS)
def test_predicted_parameters_equal_the_models_count(family, size):
    model, cost, _ = ACCOUNTING_CASES[family](size)
    assert cost.parameters == count_parameters(model), (
        f"predicted {cost.parameters:,} parameters, the model has {count_parameters(model):,}")


@pytest.mark.parametrize("kw", [dict(LLAMA_SHAPE, n_kv_head=1), dict(tie_word_embeddings=False, bias=False)],
                         ids=["llama_gqa", "untied_no_bias"])
def test_gpt_parameter_formula_covers_the_llama_switches(kw):
    config = GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=70, block_size=16, **kw)
    assert gpt_estimate(config, 1, 16).parameters == count_parameters(GPT(config))


@pytest.mark.slow
@pytest.mark.parametrize("family,size", CASES, ids=IDS)
def test_predicted_flops_and_peak_memory_match_the_measurement(family, size):
    row = predicted_and_measured(family, size)
    assert abs(row["flops_measured"] / row["flops_predicted"] - 1) <= 0.05, (
        f"profiler counts {row['flops_measured']:,} FLOPs, predicted {row['flops_predicted']:,}")
    assert row["adamw_measured"] == row["adamw_predicted"], (
        f"AdamW state {row['adamw_measured']:,} bytes, predicted {row['adamw_predicted']:,}")
    assert abs(row["peak_measured"] / row["peak_predicted"] - 1) <= 0.15, (
        f"measured peak {row['peak_measured'] / 2**20:.2f} MiB, predicted {row['peak_predicted'] / 2**20:.2f} MiB "
        f"(activations {row['activations'] / 2**20:.2f}, gradients {row['gradients'] / 2**20:.2f})")


def test_the_costs_command_prints_the_split_and_rejects_an_unknown_model_type(tmp_path, capsys):
    from bench.compute import main
    folder = tmp_path / "gpt"
    GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=100, block_size=64).save_pretrained(folder)
    assert main(["costs", str(folder), "--batch_size", "2", "--seq_len", "64"]) == 0
    out = capsys.readouterr().out
    for part in ("parameters", "GFLOP per step", "weights", "gradients", "AdamW state", "layer 2", "head"):
        assert part in out, f"{part!r} missing from the costs table:\n{out}"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(Exception, match=r"no cost accounting for model type 'mamba'.*known: bert, gpt2"):
        main(["costs", str(tmp_path / "config.json")])


@pytest.mark.slow
@pytest.mark.parametrize("kw,B,T", [(dict(n_layer=4, n_head=2, n_embd=32, vocab_size=50), 2, 128),
                                    (dict(n_layer=6, n_head=4, n_embd=64, vocab_size=300), 2, 64),
                                    (dict(n_layer=8, n_head=4, n_embd=64, vocab_size=256), 1, 256)],
                         ids=["4_layers", "6_layers", "8_layers_T256"])
def test_gpt_estimate_with_gradient_checkpointing_matches_the_measurement(kw, B, T):
    """Checkpointing: one more forward of every block (exactly what the profiler counts), activations
    of B T d per layer plus one recomputed block at a time; the peak is rougher here (within 20%)."""
    from common.train.measure import peak_allocated_bytes, profiled_flops
    torch.set_num_threads(1)
    config = GPTConfig(**kw, block_size=T)
    model = GPT(config)
    model.gradient_checkpointing_enable()
    ids = torch.randint(0, config.vocab_size, (B, T))
    cost, plain = gpt_estimate(config, B, T, gradient_checkpointing=True), gpt_estimate(config, B, T)
    flops = profiled_flops(lambda: model(ids, labels=ids).loss.backward())
    model.zero_grad(set_to_none=True)
    assert abs(flops / cost.flops - 1) <= 0.05, f"profiler counts {flops:,} FLOPs, predicted {cost.flops:,}"
    assert cost.flops > plain.flops and cost.activation_bytes < plain.activation_bytes
    optimizer = torch.optim.AdamW(model.parameters())

    def step():
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()
    measured = cost.weights + cost.adamw_state + peak_allocated_bytes(step)
    assert abs(measured / cost.peak - 1) <= 0.2, (
        f"measured peak {measured / 2**20:.2f} MiB, predicted {cost.peak / 2**20:.2f} MiB with checkpointing")
