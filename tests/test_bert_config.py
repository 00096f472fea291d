"""BertConfig: transformers' names and defaults, validation that names the field, config.json round trips."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from minibert import BertConfig


def test_defaults_are_bert_base():
    c = BertConfig()
    got = (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)
    assert got == (30522, 768, 12, 12, 3072), f"BERT-base sizes expected, got {got}"
    assert c.num_labels == 2 and c.id2label == {0: "LABEL_0", 1: "LABEL_1"}, f"labels {c.id2label}"
    assert (c.attn_impl, c.mlm_alpha, c.nsp_beta) == ("eager", 1.0, 1.0)


def test_defaults_equal_transformers_defaults():
    transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")
    theirs, ours = transformers.BertConfig(), BertConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob",
                 "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                 "initializer_range", "layer_norm_eps", "pad_token_id", "num_labels", "id2label",
                 "label2id", "problem_type", "classifier_dropout"):
        assert getattr(ours, name) == getattr(theirs, name), (
            f"{name}: ours {getattr(ours, name)!r}, transformers {getattr(theirs, name)!r}")


@pytest.mark.parametrize("field,value", [
    ("vocab_size", 0),
    ("hidden_size", -8),
    ("num_hidden_layers", 2.5),
    ("num_attention_heads", 0),
    ("intermediate_size", "3072"),
    ("max_position_embeddings", -1),
    ("type_vocab_size", 0),
    ("hidden_act", "swish"),
    ("hidden_dropout_prob", 1.0),
    ("attention_probs_dropout_prob", -0.1),
    ("classifier_dropout", 1.5),
    ("initializer_range", -0.02),
    ("layer_norm_eps", 0.0),
    ("pad_token_id", -1),  # not a token id (one >= vocab_size is kept with a warning: tests/test_hf_token_ids.py)
    ("num_labels", 0),
    ("problem_type", "ranking"),
    ("attn_impl", "no-such-kernel"),  # not in common/nn/attention.py's ATTENTION_FUNCTIONS
    ("mlm_alpha", -1.0),
    ("nsp_beta", float("nan")),
])
def test_invalid_value_fails_at_construction_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        BertConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}:"), f"message does not name {field}: {message!r}"
    assert "\n" not in message, f"the message should be one line: {message!r}"


def test_hidden_size_must_divide_into_heads():
    with pytest.raises(ConfigError, match=r"^hidden_size: 100 is not divisible by num_attention_heads \(12\)"):
        BertConfig(hidden_size=100)


def test_num_labels_and_id2label_must_agree():
    with pytest.raises(ConfigError, match=r"^id2label: must have the ids 0\.\.2"):
        BertConfig(num_labels=3, id2label={0: "neg", 1: "pos"})
    c = BertConfig(id2label={0: "neg", 1: "neutral", 2: "pos"})
    assert c.num_labels == 3 and c.label2id == {"neg": 0, "neutral": 1, "pos": 2}, f"{c.num_labels} {c.label2id}"


def test_round_trip_through_config_json(tmp_path):
    c = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, id2label={0: "neg", 1: "pos"}, problem_type="single_label_classification",
                   classifier_dropout=0.2, attn_impl="sdpa", mlm_alpha=0.5, nsp_beta=2.0)
    c.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "bert" and written["id2label"] == {"0": "neg", "1": "pos"}, written
    back = BertConfig.from_pretrained(tmp_path)
    assert back == c, f"round trip changed the config:\n{back}\n!=\n{c}"


@settings(deadline=None, max_examples=15)
@given(heads=st.integers(1, 8), head_dim=st.integers(1, 16), layers=st.integers(1, 24),
       vocab=st.integers(1, 50000), dropout=st.floats(0.0, 0.99), labels=st.integers(1, 10))
def test_any_valid_config_round_trips(tmp_path_factory, heads, head_dim, layers, vocab, dropout, labels):
    c = BertConfig(vocab_size=vocab, hidden_size=heads * head_dim, num_attention_heads=heads,
                   num_hidden_layers=layers, hidden_dropout_prob=dropout, num_labels=labels)
    folder = tmp_path_factory.mktemp("config")
    c.save_pretrained(folder)
    back = BertConfig.from_pretrained(folder)
    assert back == c, f"round trip changed the config:\n{back}\n!=\n{c}"
    assert back.head_dim == head_dim, f"head_dim {back.head_dim}, expected {head_dim}"


TRANSFORMERS_STYLE_CONFIG = {
    "_name_or_path": "some/bert", "_attn_implementation": "sdpa", "architectures": ["BertForMaskedLM"],
    "torch_dtype": "float32", "dtype": "float32", "transformers_version": "5.0.0", "use_cache": True,
    "position_embedding_type": "absolute", "gradient_checkpointing": False, "model_type": "bert",
    "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
    "vocab_size": 1000, "id2label": {"0": "O", "1": "B-PER", "2": "I-PER"},
    "label2id": {"O": 0, "B-PER": 1, "I-PER": 2},
}


def test_transformers_config_json_loads_and_keeps_unknown_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TRANSFORMERS_STYLE_CONFIG))
    c = BertConfig.from_pretrained(tmp_path)
    assert (c.hidden_size, c.num_labels, c.id2label[1]) == (64, 3, "B-PER"), f"{c}"
    for key in ("_attn_implementation", "architectures", "torch_dtype", "use_cache"):
        assert c.extra[key] == TRANSFORMERS_STYLE_CONFIG[key], f"extra lost {key}: {c.extra}"
    assert c.attn_impl == "eager", "transformers' _attn_implementation must not switch our attention path"
    out = tmp_path / "resaved"
    c.save_pretrained(out)
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["BertForMaskedLM"] and written["torch_dtype"] == "float32", written


def test_num_labels_override_replaces_the_label_names(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TRANSFORMERS_STYLE_CONFIG))
    c = BertConfig.from_pretrained(tmp_path, num_labels=5)
    assert c.num_labels == 5 and sorted(c.id2label) == [0, 1, 2, 3, 4], f"{c.num_labels} {c.id2label}"


@pytest.mark.parametrize("key,value,field", [
    ("model_type", "gpt2", "model_type"),
    ("position_embedding_type", "relative_key", "position_embedding_type"),
    ("is_decoder", True, "is_decoder"),
    ("tie_word_embeddings", False, "tie_word_embeddings"),
])
def test_unsupported_transformers_options_are_refused_not_ignored(tmp_path, key, value, field):
    (tmp_path / "config.json").write_text(json.dumps({**TRANSFORMERS_STYLE_CONFIG, key: value}))
    with pytest.raises(ConfigError) as info:
        BertConfig.from_pretrained(tmp_path)
    assert str(info.value).startswith(f"{field}:"), f"message does not name {field}: {info.value}"


def test_broken_config_json_names_the_file_and_line(tmp_path):
    from common.errors import CheckpointError

    (tmp_path / "config.json").write_text('{\n  "hidden_size": 64,\n  oops\n}')
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON \(line 3\)"):
        BertConfig.from_pretrained(tmp_path)
