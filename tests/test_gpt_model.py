"""minigpt's GPT: config validation, GPT-2 initialisation, causality, padding, the classification
head and save/load. (Numbers against transformers: test_gpt_parity.py.)"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError, UserError
from common.nn.losses import causal_lm_loss, classification_loss
from minigpt import GPT, GPTConfig, GPTForSequenceClassification
from minigpt.model import position_ids_from_attention_mask

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=50)


def tiny_model(cls=GPT, **overrides):
    torch.manual_seed(0)
    return cls(GPTConfig(**{**TINY, **overrides})).eval()


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("field, value", [
    ("n_embd", 33),  # not divisible by n_head = 2
    ("dropout", 1.0),
    ("block_size", 0),
    ("n_layer", -1),
    ("activation_function", "swish"),
    ("eos_token_id", -1),  # not a token id (one >= vocab_size is kept with a warning: tests/test_hf_token_ids.py)
])
def test_invalid_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        GPTConfig(**{**TINY, field: value})
    assert str(info.value).startswith(field), f"the message should name {field!r}: {info.value}"


def test_n_inner_defaults_to_four_times_n_embd():
    assert GPTConfig(**TINY).n_inner == 4 * 32
    assert GPTConfig(**TINY, n_inner=40).n_inner == 40


def test_huggingface_gpt2_config_names_are_mapped():
    hf = {"model_type": "gpt2", "n_positions": 64, "n_ctx": 64, "n_layer": 2, "n_head": 2, "n_embd": 32,
          "vocab_size": 50, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
          "summary_type": "cls_index"}
    config = GPTConfig.from_dict(hf)
    assert (config.block_size, config.dropout) == (64, 0.1), config
    assert config.extra == {"summary_type": "cls_index"}, f"renamed keys must not linger: {config.extra}"
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        GPTConfig.from_dict({**hf, "scale_attn_by_inverse_layer_idx": True})


def test_config_round_trips_through_a_dict():
    config = GPTConfig(**TINY, dropout=0.1, pad_token_id=3)
    again = GPTConfig.from_dict(config.to_dict())
    assert again == config, f"{again} != {config}"


# ----------------------------------------------------------------------------- initialisation

def test_gpt2_initialisation_and_weight_tying():
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=2000))
    wte_std = model.transformer.wte.weight.std().item()
    assert abs(wte_std - 0.02) < 0.002, f"wte std {wte_std:.4f}, expected 0.02"
    residual_std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    expected = 0.02 / math.sqrt(2 * 4)
    assert abs(residual_std - expected) < 0.1 * expected, f"c_proj std {residual_std:.4f}, expected {expected:.4f}"
    out_proj_std = model.transformer.h[3].attn.out_proj.weight.std().item()
    assert abs(out_proj_std - expected) < 0.1 * expected, f"out_proj std {out_proj_std:.4f}, expected {expected:.4f}"
    assert model.transformer.h[1].attn.query.bias.abs().max().item() == 0.0, "biases start at 0"
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head must share wte's weight"
    untied = GPT(GPTConfig(**TINY, tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight


# ----------------------------------------------------------------------------- forward

@settings(deadline=None, max_examples=15)
@given(t=st.integers(0, 22), k=st.integers(1, 10), new_token=st.integers(0, 49), seed=st.integers(0, 1000))
def test_changing_a_later_token_never_changes_earlier_logits(t, k, new_token, seed):
    model = tiny_model()
    T = 24
    changed_at = min(t + k, T - 1)
    ids = torch.randint(0, 50, (1, T), generator=torch.Generator().manual_seed(seed))
    other = ids.clone()
    other[0, changed_at] = new_token
    with torch.no_grad():
        a, b = model(ids).logits, model(other).logits
    err = (a[:, :changed_at] - b[:, :changed_at]).abs().max().item()
    assert err <= 1e-6, f"token {changed_at} changed the logits before it by {err:.2e}"


def test_last_token_only_gives_the_last_row_of_the_full_logits():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        full, last = model(ids).logits, model(ids, last_token_only=True).logits
    assert last.shape == (2, 1, 50), f"shape {tuple(last.shape)}"
    err = (full[:, -1:] - last).abs().max().item()
    assert err <= 1e-6, f"last_token_only differs from the full logits by {err:.2e}"


def test_loss_is_causal_lm_loss_and_ignores_padding():
    model = tiny_model()
    ids = torch.randint(0, 50, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask, labels=ids)
    # independent of the project's loss: shift by hand, torch's cross-entropy over the real tokens
    V = out.logits.size(-1)
    targets = ids.masked_fill(mask == 0, -100)[:, 1:].reshape(-1)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), targets, ignore_index=-100)
    assert abs(out.loss.item() - expected.item()) <= 1e-6, (
        f"GPT loss {out.loss.item():.6f} vs F.cross_entropy(logits[:, :-1], labels[:, 1:]) over the "
        f"{int((targets != -100).sum())} real next tokens {expected.item():.6f}")
    unmasked = causal_lm_loss(out.logits, ids)
    assert abs(out.loss.item() - unmasked.item()) > 1e-4, "padded labels were scored"


def test_left_padding_gives_the_logits_of_the_unpadded_prompt():
    model = tiny_model()
    prompt = torch.randint(1, 50, (1, 7))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), prompt], dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 7])
    with torch.no_grad():
        alone = model(prompt).logits
        batch = model(padded, attention_mask=mask).logits[:, 4:]
    err = (alone - batch).abs().max().item()
    assert err <= 1e-5, f"left padding changed the logits by {err:.2e} (tolerance 1e-5)"


def test_position_ids_count_only_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = position_ids_from_attention_mask(mask)
    assert got.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]], got.tolist()


def test_input_longer_than_block_size_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(UserError, match="block_size=24"):
        model(torch.zeros(1, 25, dtype=torch.long))


@pytest.mark.parametrize("bad_id", [50, 7000, -1])
def test_a_token_id_outside_the_vocabulary_is_a_clear_error_not_an_index_error(bad_id):
    model = tiny_model()  # vocab_size 50
    ids = torch.tensor([[1, 2, bad_id, 3]])
    with pytest.raises(UserError, match=rf"token id {bad_id}, outside .*\[0, vocab_size=50\); the tokenizer does "
                                        "not match the model"):
        model(ids)
    model(torch.tensor([[0, 49]]))  # both ends of the table are fine


def test_output_attentions_are_causal_probabilities():
    model = tiny_model()
    with torch.no_grad():
        out = model(torch.randint(0, 50, (2, 6)), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 6, 6)
    above = torch.triu(out.attentions[1], diagonal=1).abs().max().item()
    assert above == 0.0, f"attention to future tokens: {above:.2e}"


# ----------------------------------------------------------------------------- classification

def test_sequence_classification_pools_the_last_real_token():
    model = tiny_model(GPTForSequenceClassification, num_labels=3, pad_token_id=0)
    a, b = torch.randint(1, 50, (1, 5)), torch.randint(1, 50, (1, 8))
    right = torch.cat([torch.cat([a, torch.zeros(1, 3, dtype=torch.long)], 1), b])  # (2, 8)
    left = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), a], 1), b])
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        alone = torch.cat([model(a).logits, model(b).logits])
        by_mask = model(right, attention_mask=(right != 0).long(), labels=labels)
        by_pad_id = model(right).logits  # no mask: the last token that is not pad_token_id
        by_left_mask = model(left, attention_mask=(left != 0).long()).logits
    for name, got in [("right padding + mask", by_mask.logits), ("pad_token_id", by_pad_id),
                      ("left padding + mask", by_left_mask)]:
        err = (got - alone).abs().max().item()
        assert err <= 1e-5, f"{name}: logits differ from the unpadded sequences by {err:.2e}"
    expected = classification_loss(by_mask.logits, labels, 3)
    assert abs(by_mask.loss.item() - expected.item()) <= 1e-6, f"{by_mask.loss} vs {expected}"


# ----------------------------------------------------------------------------- save / load

def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(dropout=0.1, eos_token_id=7)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = GPT.from_pretrained(tmp_path)
    assert loaded.config == model.config, f"{loaded.config} != {model.config}"
    assert loaded.lm_head.weight is loaded.transformer.wte.weight, "tying lost on load"
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        err = (loaded(ids).logits - model(ids).logits).abs().max().item()
    assert err == 0.0, f"logits changed by {err:.2e} after save/load"


def test_classifier_loads_the_decoder_of_a_language_model(tmp_path):
    lm = tiny_model()
    lm.save_pretrained(tmp_path)
    with pytest.warns(UserWarning) as record:
        clf = GPTForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    messages = " ".join(str(w.message) for w in record)
    assert "score.weight" in messages and "lm_head.weight" in messages, messages
    same = torch.equal(clf.transformer.h[1].mlp.c_fc.weight, lm.transformer.h[1].mlp.c_fc.weight)
    assert same, "the decoder weights were not loaded into the classifier"
