"""minigpt against Hugging Face transformers (the test-only oracle): same weights, same numbers.

A transformers GPT2LMHeadModel of a tiny config, every parameter perturbed away from its default
initialisation (Conv1D biases, LayerNorm scales and shifts too: a default init has biases 0 and
LayerNorm 1 and 0, which hides a dropped bias or a swapped LayerNorm), is saved with its own
`save_pretrained` and loaded with minigpt's `GPT.from_pretrained` (which splits GPT-2's fused
Conv1D `c_attn` into query/key/value and transposes every Conv1D weight). Then, in eval mode
and float32:
    logits, unpadded / right padded / left padded   agree to 1e-5 at the real positions
    the language-model loss                         agrees to 1e-5
    greedy generation                               gives the same tokens as transformers' generate
"""
import warnings

import pytest
import torch

from minigpt import GPT, GPTForSequenceClassification

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")

TOL = 1e-5
TINY = dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=99, bos_token_id=1,
            eos_token_id=1, pad_token_id=0)


def hf_config(**overrides):
    config = transformers.GPT2Config(**{**TINY, **overrides})
    config._attn_implementation = "eager"  # the oracle runs the plain softmax(QK^T/sqrt(d)+M)V
    return config


def perturb(model, scale=0.1):
    """Add scale * N(0, 1) to every parameter (weights, biases, LayerNorm weight and bias), so
    that no parameter keeps the value a default initialisation gives it."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, minigpt model) with the same perturbed weights, both in eval mode."""
    torch.manual_seed(0)
    hf = perturb(transformers.GPT2LMHeadModel(hf_config())).eval()
    folder = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing or unused weight would be a warning: fail on it
        ours = GPT.from_pretrained(folder)
    return hf, ours


def test_every_parameter_is_perturbed_away_from_the_default_init(pair):
    """LayerNorm weights are 1 and biases 0 by default: a conversion that drops them passes on
    such weights. Every one here must differ from those values."""
    hf, _ = pair
    default = transformers.GPT2LMHeadModel(hf_config())
    defaults = dict(default.named_parameters())
    for name, p in hf.named_parameters():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            assert (p - 1).abs().min() > 0, f"{name} still holds LayerNorm's default 1"
        elif name.endswith(".bias"):
            assert p.abs().min() > 0, f"{name} still holds zeros (the default bias)"
        assert not torch.equal(p, defaults[name]), f"{name} equals a fresh default init"


def max_diff(a, b, where=None):
    diff = (a - b).abs()
    return (diff[where] if where is not None else diff).max().item()


def test_config_maps_gpt2_names_to_minigpt_names(pair):
    _, ours = pair
    c = ours.config
    assert (c.block_size, c.n_layer, c.n_head, c.n_embd, c.vocab_size) == (32, 2, 4, 32, 99), c
    assert c.n_inner == 4 * 32, f"n_inner null should mean 4 * n_embd = 128, got {c.n_inner}"
    assert c.dropout == 0.1, f"resid_pdrop 0.1 should become dropout, got {c.dropout}"
    assert "n_positions" not in c.extra, "n_positions is renamed to block_size, not kept twice"


def test_logits_and_loss_match_transformers_without_padding(pair):
    hf, ours = pair
    ids = torch.randint(2, 99, (3, 20))
    with torch.no_grad():
        expected = hf(ids, labels=ids)
        got = ours(ids, labels=ids)
    err = max_diff(got.logits, expected.logits)
    assert err <= TOL, f"logits differ from transformers by {err:.2e} (tolerance {TOL})"
    loss_err = abs(got.loss.item() - expected.loss.item())
    assert loss_err <= TOL, f"loss {got.loss.item():.6f} vs transformers {expected.loss.item():.6f}"


def test_logits_and_loss_match_transformers_with_right_padding(pair):
    hf, ours = pair
    ids = torch.randint(2, 99, (3, 16))
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    mask[2, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    hf_labels = ids.masked_fill(mask == 0, -100)  # transformers scores every label that is not -100
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=hf_labels)
        got = ours(ids, attention_mask=mask, labels=ids)  # ours ignores the padded labels itself
    err = max_diff(got.logits, expected.logits, mask.bool())
    assert err <= TOL, f"logits at real tokens differ from transformers by {err:.2e} (tolerance {TOL})"
    loss_err = abs(got.loss.item() - expected.loss.item())
    assert loss_err <= TOL, f"loss {got.loss.item():.6f} vs transformers {expected.loss.item():.6f}"


def test_logits_match_transformers_with_left_padding(pair):
    hf, ours = pair
    ids = torch.randint(2, 99, (3, 16))
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    mask[1, :1] = 0
    ids = ids.masked_fill(mask == 0, 0)
    # transformers' generate numbers the real tokens from 0 and puts padding at position 1
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=position_ids).logits
        got = ours(ids, attention_mask=mask).logits  # minigpt derives the positions from the mask
    err = max_diff(got, expected, mask.bool())
    assert err <= TOL, f"left-padded logits differ from transformers by {err:.2e} (tolerance {TOL})"


def test_greedy_generation_matches_transformers_generate(pair):
    hf, ours = pair
    prompt = torch.randint(2, 99, (1, 7))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(prompt, 15)
    assert torch.equal(got, expected), f"minigpt {got.tolist()}\ntransformers {expected.tolist()}"


def test_left_padded_batch_generation_with_eos_matches_transformers(pair):
    hf, ours = pair
    ids = torch.randint(2, 99, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    ids = ids.masked_fill(mask == 0, 0)
    # make the first row's own greedy continuation the end-of-sequence token, so one row stops early
    eos = ours.generate(ids[:1], 3)[0, -1].item()
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                           eos_token_id=eos, pad_token_id=0)
    got = ours.generate(ids, 12, attention_mask=mask, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected), f"minigpt {got.tolist()}\ntransformers {expected.tolist()}"
    assert (got[0, 12:] == 0).all(), f"row 0 emitted eos={eos} by token 12, then must be padding: {got[0].tolist()}"


def test_sequence_classification_matches_transformers(tmp_path):
    hf = perturb(transformers.GPT2ForSequenceClassification(hf_config(num_labels=3))).eval()
    hf.save_pretrained(tmp_path)
    ours = GPTForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.randint(2, 99, (3, 12))
    ids[0, 8:] = 0  # right padding: transformers finds the last token that is not pad_token_id
    ids[1, 3:] = 0
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        expected = hf(ids, labels=labels)
        got = ours(ids, attention_mask=(ids != 0).long(), labels=labels)
    err = max_diff(got.logits, expected.logits)
    assert err <= TOL, f"classification logits differ from transformers by {err:.2e} (tolerance {TOL})"
    loss_err = abs(got.loss.item() - expected.loss.item())
    assert loss_err <= TOL, f"loss {got.loss.item():.6f} vs transformers {expected.loss.item():.6f}"


def test_gpt2_buffers_attn_bias_and_masked_bias_are_ignored(pair):
    """Older GPT-2 checkpoints store the causal mask (`attn.bias`) and a constant (`attn.masked_bias`)."""
    hf, ours = pair
    state = {f"transformer.{k}": v for k, v in hf.transformer.state_dict().items()}
    state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    converted = GPT.convert_state_dict(state, ours.config)
    assert not any(k.endswith((".attn.bias", ".attn.masked_bias")) for k in converted), sorted(converted)
    fresh = GPT(ours.config).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing, unexpected = fresh.load_pretrained_state_dict(converted)
    assert (missing, unexpected) == ([], []), f"missing {missing}, unexpected {unexpected}"
    ids = torch.randint(2, 99, (1, 10))
    with torch.no_grad():
        err = max_diff(fresh(ids).logits, ours(ids).logits)
    assert err == 0.0, f"the converted weights give other logits (max diff {err:.2e})"
