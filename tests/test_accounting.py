"""Predicted training costs (common/train/accounting.py, each family's accounting.py) against measurement.

    parameters: exactly the model's count;   FLOPs per step: 6 N_mat D + 12 B h T_q T_k d_k per
    attention layer, within 5% of what torch's profiler counts for the matrix products (forward +
    backward);   peak memory of an AdamW step: weights + AdamW state + max(activations + transient,
    gradients), within 15% of the measured peak (common/train/measure.py) plus the weights and state.
Three sizes per family, tiny (the measured ones are slow: the profiler's start-up costs seconds).
"""
import json

import pytest
import torch

from common.train.accounting import count_parameters
from common.train.measure import peak_allocated_bytes, profiled_flops
from minibert.accounting import estimate as bert_estimate
from minibert.config import BertConfig
from minibert.heads import BertForMaskedLM
from minigpt.accounting import estimate as gpt_estimate
from minigpt.config import LLAMA_SHAPE, GPTConfig
from minigpt.model import GPT
from minit5.accounting import estimate as t5_estimate
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration


def gpt(size):
    kw, B, T = [(dict(n_layer=1, n_head=2, n_embd=32, vocab_size=50), 4, 32),
                (dict(n_layer=2, n_head=4, n_embd=64, vocab_size=300), 2, 64),
                (dict(n_layer=2, n_head=4, n_embd=32, vocab_size=64), 2, 256)][size]
    config = GPTConfig(**kw, block_size=T)
    model = GPT(config)
    ids = torch.randint(0, config.vocab_size, (B, T))
    return model, gpt_estimate(config, B, T), lambda: model(ids, labels=ids).loss


def bert(size):
    kw, B, T = [(dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=32, intermediate_size=64, vocab_size=50), 4, 32),
                (dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=256, vocab_size=300), 2, 64),
                (dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=128, vocab_size=100), 2, 256)][size]
    config = BertConfig(**kw, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=256)
    model = BertForMaskedLM(config)
    ids = torch.randint(0, config.vocab_size, (B, T))
    return model, bert_estimate(config, B, T), lambda: model(ids, labels=ids).loss


def t5(size):
    kw, B, S, T = [(dict(num_layers=1, num_heads=2, d_model=32, d_kv=16, d_ff=64, vocab_size=50), 4, 32, 16),
                   (dict(num_layers=2, num_heads=4, d_model=64, d_kv=16, d_ff=128, vocab_size=300,
                         feed_forward_proj="gated-gelu"), 2, 64, 32),
                   (dict(num_layers=2, num_heads=2, d_model=32, d_kv=16, d_ff=64, vocab_size=100), 2, 128, 128)][size]
    config = T5Config(**kw, dropout_rate=0.0)
    model = T5ForConditionalGeneration(config)
    ids, labels = torch.randint(1, config.vocab_size, (B, S)), torch.randint(1, config.vocab_size, (B, T))
    return model, t5_estimate(config, B, S, T), lambda: model(ids, labels=labels).loss


CASES = [(family, size) for family in (gpt, bert, t5) for size in range(3)]
IDS = [f"{family.__name__}-{size}" for family, size in CASES]


@pytest.mark.parametrize("family,size", CASES, ids=IDS)
def test_predicted_parameters_equal_the_models_count(family, size):
    model, cost, _ = family(size)
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
    torch.set_num_threads(1)
    model, cost, loss = family(size)
    optimizer = torch.optim.AdamW(model.parameters())

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()  # the AdamW state exists from here on, as in any later step
    flops = profiled_flops(lambda: loss().backward())
    optimizer.zero_grad(set_to_none=True)
    assert abs(flops / cost.flops - 1) <= 0.05, f"profiler counts {flops:,} FLOPs, predicted {cost.flops:,}"
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    assert state == cost.adamw_state, f"AdamW state {state:,} bytes, predicted {cost.adamw_state:,}"
    measured = cost.weights + state + peak_allocated_bytes(step)
    assert abs(measured / cost.peak - 1) <= 0.15, (
        f"measured peak {measured / 2**20:.2f} MiB, predicted {cost.peak / 2**20:.2f} MiB "
        f"(activations {cost.activation_bytes / 2**20:.2f}, gradients {cost.gradients / 2**20:.2f})")


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
