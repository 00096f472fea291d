"""Head pruning (common/nn/pruning.py, MultiHeadAttention.prune_heads): removing heads physically computes
what masking them computes, the parameter count drops by exactly their weights, and the folder reloads."""
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minibert
from common.errors import ConfigError
from common.nn.pruning import head_gates, head_importance, heads_to_prune
from minigpt.config import GPTConfig
from minigpt.model import GPT

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=16, num_labels=2)


def bert(seed=0):
    torch.manual_seed(seed)
    model = minibert.BertForSequenceClassification(minibert.BertConfig(**TINY)).eval()
    with torch.no_grad():  # perturbed: biases nonzero, so a dropped bias row would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_embd=32, n_layer=2, n_head=4)).eval()


heads_per_layer = st.lists(st.sets(st.integers(0, 3), max_size=3), min_size=2, max_size=2)


@settings(max_examples=12)
@given(heads=heads_per_layer, family=st.sampled_from(["bert", "gpt"]))
def test_pruned_heads_compute_what_masked_heads_compute(heads, family):
    model = bert() if family == "bert" else gpt()
    ids = torch.randint(1, 40, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 4)
    for layer, hs in enumerate(heads):
        mask[layer, sorted(hs)] = 0.0
    with torch.no_grad(), head_gates(model, mask):
        masked = model(ids).logits
    before = model.num_parameters()
    model.prune_heads({layer: sorted(hs) for layer, hs in enumerate(heads)})
    with torch.no_grad():
        pruned = model(ids).logits
    assert (pruned - masked).abs().max() <= 1e-6, (
        f"pruning {heads} differs from masking them by {float((pruned - masked).abs().max()):.3g}")
    d, C, removed = 8, 32, sum(len(hs) for hs in heads)
    per_head = 3 * (C * d + d) + d * C  # rows of W^Q, W^K, W^V with their biases + columns of W^O
    assert before - model.num_parameters() == removed * per_head, (
        f"removed {removed} heads: expected {removed * per_head} fewer parameters, "
        f"got {before - model.num_parameters()}")


def test_prune_heads_keeps_built_numbering_and_reloads(tmp_path):
    model = bert()
    ids = torch.randint(1, 50, (2, 6))
    model.prune_heads({0: [1]})
    model.prune_heads({0: [1, 3], 1: [0]})  # head 1 already gone: only head 3 more in layer 0
    attention = model.bert.encoder.layer[0].attention.self
    assert attention.num_heads == 2 and attention.pruned_heads == {1, 3}
    assert model.config.extra["pruned_heads"] == {"0": [1, 3], "1": [0]}
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = minibert.BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.num_parameters() == model.num_parameters()


def test_importance_is_the_gradient_wrt_the_head_gates():
    model = bert()
    batch = dict(input_ids=torch.randint(1, 50, (4, 6)), labels=torch.tensor([0, 1, 1, 0]))
    importance = head_importance(model, [batch], normalize=False)
    assert importance.shape == (2, 4) and (importance >= 0).all()
    # finite difference of the loss along one gate
    eps, l, h = 1e-3, 1, 2
    losses = []
    for sign in (1, -1):
        gates = torch.ones(2, 4)
        gates[l, h] += sign * eps
        with torch.no_grad(), head_gates(model, gates):
            losses.append(float(model(**batch).loss))
    numeric = abs(losses[0] - losses[1]) / (2 * eps)
    assert importance[l, h].item() == pytest.approx(numeric, rel=1e-2, abs=1e-5), (
        f"I = |dL/dxi| = {importance[l, h].item():.5g}, finite difference {numeric:.5g}")
    assert all(p.grad is None for p in model.parameters()), "importance must not leave gradients on weights"
    normalized = head_importance(model, [batch])
    assert torch.allclose(normalized.norm(dim=1), torch.ones(2)), "normalised per layer to unit L2 norm"


def test_heads_to_prune_takes_the_least_important_and_keeps_one_per_layer():
    model = bert()
    importance = torch.tensor([[0.1, 0.9, 0.2, 0.8], [0.05, 0.01, 0.03, 0.02]])
    assert heads_to_prune(model, importance, 0.25) == {1: [1, 3]}
    plan = heads_to_prune(model, importance, 0.75)
    assert sum(map(len, plan.values())) == 6 and all(len(v) <= 3 for v in plan.values())
    model.prune_heads({1: [1]})
    later = heads_to_prune(model, torch.tensor([[1.0, 1, 1, 1], [0.5, 0.1, 0.9, float("inf")]]), 1 / 7)
    assert later == {1: [2]}, "current head 1 of a pruned layer is its built head 2"


def test_bad_pruning_requests_are_clear_errors():
    model = bert()
    with pytest.raises(ConfigError, match="no head"):
        model.prune_heads({0: [0, 1, 2, 3]})
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        model.prune_heads({5: [0]})
    with pytest.raises(ConfigError, match=r"\[0, 4\)"):
        model.prune_heads({0: [7]})


def test_a_pruned_gpt_generates_the_same_tokens_with_and_without_the_cache():
    model = gpt()
    model.prune_heads({0: [1, 2], 1: [3]})
    ids = torch.randint(1, 40, (2, 3), generator=torch.Generator().manual_seed(2))
    cached = model.generate(ids, max_new_tokens=12, use_cache=True)
    recomputed = model.generate(ids, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, recomputed), "a pruned GPT must decode with its own head counts"
