"""minit5 against transformers' T5 (test-only oracle) on perturbed random weights, in float32.

Every parameter is randomised away from its initialisation (RMSNorm weights away from 1, the
relative bias away from small values), so a mis-named, transposed, untied or unused weight shows up.
Sources are padded on the left in one row and on the right in another. Tolerance: 1e-5 in float32,
relative to the largest value of the tensor compared when that exceeds 1 (random untied heads give
logits and gradients of size 10-30, where float32 itself resolves about 1e-6).
"""
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from minit5.config import T5Config  # noqa: E402
from minit5.model import (  # noqa: E402
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5Model,
    relative_position_bucket,
    shift_right,
)

TOL = 1e-5
SMALL = dict(vocab_size=40, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_heads=3,
             relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0)


def perturbed(hf_model, seed=0):
    """Every parameter moved: its old value (1 for the RMSNorm weights) plus N(0, 0.2^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return hf_model


def pair(feed_forward_proj="relu", tie=True, encoder_only=False, **sizes):
    kw = {**SMALL, "feed_forward_proj": feed_forward_proj, "tie_word_embeddings": tie, **sizes}
    hf_config = transformers.T5Config(**kw, decoder_start_token_id=0, attn_implementation="eager")
    if encoder_only:
        hf, ours = transformers.T5EncoderModel(hf_config), T5EncoderModel(T5Config(**kw))
    else:
        hf, ours = transformers.T5ForConditionalGeneration(hf_config), T5ForConditionalGeneration(T5Config(**kw))
    if not tie and not encoder_only:
        # transformers >= 5 ties every T5's lm_head to `shared` (tie_word_embeddings=False only turns the
        # d_model^-0.5 rescale off); a T5 v1.1 checkpoint has its own head, which this untying gives.
        hf.lm_head.weight = torch.nn.Parameter(hf.lm_head.weight.detach().clone())
    perturbed(hf.eval())
    missing, unexpected = ours.load_pretrained_state_dict(hf.state_dict())
    assert missing == [] and unexpected == [], (missing, unexpected)
    return hf, ours.eval()


def padded_batch(seed=0):
    """Row 0 left-padded by 2, row 1 right-padded by 3 (pad id 0 in the padded slots)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, SMALL["vocab_size"], (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    mask[1, -3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(2, SMALL["vocab_size"], (3, 6), generator=g)
    labels[1, -2:] = -100  # a shorter target
    return ids, mask, labels


def max_diff(a, b):
    """max |a - b| / max(1, max |b|)."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
@pytest.mark.parametrize("tie", [True, False])
def test_logits_loss_and_gradients_equal_transformers(feed_forward_proj, tie):
    hf, ours = pair(feed_forward_proj, tie, num_decoder_layers=3)  # a deeper decoder than encoder
    ids, mask, labels = padded_batch()
    theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
    mine = ours(input_ids=ids, attention_mask=mask, labels=labels)
    assert max_diff(theirs.logits, mine.logits) <= TOL, f"logits differ by {max_diff(theirs.logits, mine.logits)}"
    assert abs(theirs.loss.item() - mine.loss.item()) <= TOL, f"loss {mine.loss.item()} vs {theirs.loss.item()}"
    theirs.loss.backward()
    mine.loss.backward()
    their_grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        g_ref = their_grads[name].grad
        assert g_ref is not None and p.grad is not None, name
        assert max_diff(p.grad, g_ref) <= TOL, f"gradient of {name} differs by {max_diff(p.grad, g_ref)}"


def test_decoder_attention_mask_and_explicit_decoder_inputs_equal_transformers():
    hf, ours = pair("gated-gelu", tie=False)
    ids, mask, labels = padded_batch(1)
    decoder_ids = shift_right(labels, 0, 0)
    decoder_mask = torch.ones_like(decoder_ids)
    decoder_mask[1, -2:] = 0
    args = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids,
                decoder_attention_mask=decoder_mask)
    diff = max_diff(hf(**args).logits, ours(**args).logits)
    assert diff <= TOL, f"logits differ by {diff}"


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_encoder_model_equals_transformers_T5EncoderModel(feed_forward_proj):
    hf, ours = pair(feed_forward_proj, encoder_only=True)
    ids, mask, _ = padded_batch(2)
    theirs = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    mine = ours(ids, mask).last_hidden_state
    real = mask.bool()
    assert max_diff(theirs[real], mine[real]) <= TOL, f"hidden states differ by {max_diff(theirs[real], mine[real])}"


def bare_pair(feed_forward_proj="relu", **sizes):
    """transformers' T5Model (perturbed) and ours with its weights: encoder + decoder, no LM head."""
    kw = {**SMALL, "feed_forward_proj": feed_forward_proj, **sizes}
    hf = perturbed(transformers.T5Model(transformers.T5Config(**kw, decoder_start_token_id=0,
                                                               attn_implementation="eager")).eval())
    ours = T5Model(T5Config(**kw))
    missing, unexpected = ours.load_pretrained_state_dict(hf.state_dict())
    assert missing == [] and unexpected == [], (missing, unexpected)
    return hf, ours.eval()


def bare_inputs(seed):
    """padded_batch's sources, plus decoder inputs whose row 1 has its last 2 positions masked."""
    ids, mask, labels = padded_batch(seed)
    decoder_ids = shift_right(labels, 0, 0)
    decoder_mask = torch.ones_like(decoder_ids)
    decoder_mask[1, -2:] = 0
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids,
                decoder_attention_mask=decoder_mask)


def readout(out, seed=7):
    """A scalar that weighs every position and channel of both outputs differently:
    L = sum(R_dec * decoder states) + sum(R_enc * encoder states), R fixed N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    dec, enc = out.last_hidden_state, out.encoder_last_hidden_state
    return (torch.randn(dec.shape, generator=g) * dec).sum() + (torch.randn(enc.shape, generator=g) * enc).sum()


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_bare_T5Model_states_and_gradients_equal_transformers(feed_forward_proj):
    """Every position is compared, padded ones included: the decoder_attention_mask only changes the
    states of row 1's masked positions (a causal query sees them only from there on)."""
    hf, ours = bare_pair(feed_forward_proj, num_decoder_layers=3)
    args = bare_inputs(6)
    theirs, mine = hf(**args), ours(**args)
    for field in ("encoder_last_hidden_state", "last_hidden_state"):
        a, b = getattr(mine, field), getattr(theirs, field)
        assert a.shape == b.shape, f"{field}: shape {tuple(a.shape)} vs transformers' {tuple(b.shape)}"
        assert max_diff(a, b) <= TOL, f"{field} differs from transformers' by {max_diff(a, b):.2e}"
    unmasked = ours(**{**args, "decoder_attention_mask": None}).last_hidden_state
    assert max_diff(unmasked, mine.last_hidden_state) > 1e-3, \
        "decoder_attention_mask changed nothing: this input would not test it"
    readout(theirs).backward()
    readout(mine).backward()
    their_params = dict(hf.named_parameters())
    our_params = dict(ours.named_parameters())
    assert sorted(our_params) == sorted(their_params), \
        f"parameter names differ: ours only {sorted(set(our_params) - set(their_params))}, " \
        f"theirs only {sorted(set(their_params) - set(our_params))}"
    for name, p in our_params.items():
        g_ref = their_params[name].grad
        assert g_ref is not None and p.grad is not None, f"{name} got no gradient"
        assert g_ref.abs().max() > 0, f"{name}: transformers' gradient is 0, the readout does not reach it"
        assert max_diff(p.grad, g_ref) <= TOL, f"gradient of {name} differs by {max_diff(p.grad, g_ref):.2e}"


def test_a_transformers_T5Model_state_dict_and_folder_load_into_ours(tmp_path):
    """Same keys as transformers' T5Model; an old checkpoint's unused
    decoder.block.0.layer.1.EncDecAttention.relative_attention_bias is dropped without a warning."""
    hf, ours = bare_pair("gated-gelu")
    theirs = hf.state_dict()
    assert sorted(ours.state_dict()) == sorted(theirs), \
        f"state-dict keys differ: ours only {sorted(set(ours.state_dict()) - set(theirs))}, " \
        f"theirs only {sorted(set(theirs) - set(ours.state_dict()))}"
    stale = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
    old = {**theirs, stale: torch.randn(SMALL["relative_attention_num_buckets"], SMALL["num_heads"])}
    fresh = T5Model(T5Config(**{**SMALL, "feed_forward_proj": "gated-gelu"}))
    missing, unexpected = fresh.load_pretrained_state_dict(T5Model.convert_state_dict(old, fresh.config))
    assert missing == [] and unexpected == [], (missing, unexpected)

    hf.save_pretrained(tmp_path / "hf")
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "hf" / "model.safetensors"
    save_file({**load_file(weights), stale: old[stale]}, weights, metadata={"format": "pt"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not used" / "newly initialised" warning
        loaded = T5Model.from_pretrained(tmp_path / "hf")
    assert loaded.config.feed_forward_proj == "gated-gelu" and loaded.config.d_kv == SMALL["d_kv"]
    args = bare_inputs(8)
    reference = hf(**args)
    for model in (fresh, loaded):
        out = model(**args)
        for field in ("encoder_last_hidden_state", "last_hidden_state"):
            diff = max_diff(getattr(out, field), getattr(reference, field))
            assert diff <= TOL, f"{field} after loading differs by {diff:.2e}"


def test_real_tokens_do_not_depend_on_the_padding_side():
    """Relative positions only: a source left-padded gives its real tokens the same states as
    the same source right-padded (no absolute position anywhere in T5)."""
    _, ours = pair("relu", encoder_only=True)
    tokens = torch.randint(2, 40, (1, 5))
    left = torch.cat([torch.zeros(1, 3, dtype=torch.long), tokens], 1)
    right = torch.cat([tokens, torch.zeros(1, 3, dtype=torch.long)], 1)
    m_left = (torch.arange(8) >= 3).long()[None]
    m_right = (torch.arange(8) < 5).long()[None]
    a = ours(left, m_left).last_hidden_state[:, 3:]
    b = ours(right, m_right).last_hidden_state[:, :5]
    assert max_diff(a, b) <= TOL, f"left vs right padding differ by {max_diff(a, b)}"


def test_a_transformers_folder_loads_with_from_pretrained(tmp_path):
    hf, _ = pair("gated-gelu", tie=False)
    hf.save_pretrained(tmp_path)
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert ours.config.feed_forward_proj == "gated-gelu" and ours.config.tie_word_embeddings is False
    ids, mask, labels = padded_batch(3)
    diff = max_diff(hf(input_ids=ids, attention_mask=mask, labels=labels).logits,
                    ours(input_ids=ids, attention_mask=mask, labels=labels).logits)
    assert diff <= TOL, f"logits after from_pretrained differ by {diff}"
    ours.save_pretrained(tmp_path / "again")  # and our own folder round-trips
    again = T5ForConditionalGeneration.from_pretrained(tmp_path / "again")
    for (name, a), b in zip(ours.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


@given(st.lists(st.integers(-300, 300), min_size=1, max_size=40), st.booleans(),
       st.sampled_from([(8, 12), (32, 128), (16, 40), (6, 7)]))
def test_relative_position_bucket_equals_transformers(distances, bidirectional, buckets_and_distance):
    num_buckets, max_distance = buckets_and_distance
    r = torch.tensor(distances)
    theirs = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        r, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    mine = relative_position_bucket(r, bidirectional, num_buckets, max_distance)
    assert torch.equal(mine, theirs), f"r={distances}: {mine.tolist()} vs {theirs.tolist()}"


def test_relative_position_bucket_by_hand():
    """32 buckets, 128 max, bidirectional: 16 per side, distances 0..7 exact, then log-spaced;
    keys after the query (r > 0) use buckets 16..31; 128 and beyond share the last bucket."""
    r = torch.tensor([0, -1, -7, -8, -12, -127, -128, -1000, 1, 7, 1000])
    got = relative_position_bucket(r, True, 32, 128).tolist()
    # n = 8: 8 + floor(log(1) ...) = 8; n = 12: 8 + floor(log(1.5)/log(16) * 8) = 8 + 1; n = 127: 8 + 7 = 15
    assert got == [0, 1, 7, 8, 9, 15, 15, 15, 17, 23, 31], got
    causal = relative_position_bucket(torch.tensor([0, -1, -15, -16, 5]), False, 32, 128).tolist()
    assert causal == [0, 1, 15, 16, 0], causal  # future keys (r > 0) fall in bucket 0 (masked anyway)


def test_shift_right_equals_transformers():
    labels = torch.tensor([[5, 6, 1, -100], [7, 1, -100, -100]])
    _, ours = pair()
    hf, _ = pair()
    assert torch.equal(shift_right(labels, 0, 0), hf._shift_right(labels))
    assert shift_right(labels, 0, 0).tolist() == [[0, 5, 6, 1], [0, 7, 1, 0]]


def upto_eos(tokens, eos=1, pad=0):
    """transformers fills a finished beam with eos when pad is 0 (`pad or eos`); we fill with pad.
    Compare the tokens up to each row's first eos."""
    tokens = tokens.clone()
    for row in tokens:
        at = (row == eos).nonzero()
        if len(at):
            row[at[0, 0] + 1:] = pad
    return tokens


def generation_pair(feed_forward_proj="relu", tie=True):
    """The models, and an eos id they actually produce: the token greedy decoding writes 4th in
    row 0, so that rows and beams end at different lengths (a random model rarely writes id 1)."""
    hf, ours = pair(feed_forward_proj, tie)
    ids, mask, _ = padded_batch(4)
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=SMALL["vocab_size"] - 1)
    return hf, ours, int(free[0, 4])


BEAM_SETTINGS = [
    dict(num_beams=3),
    dict(num_beams=4, length_penalty=0.5, early_stopping=True),
    dict(num_beams=3, length_penalty=2.0, early_stopping="never"),
    dict(num_beams=2, length_penalty=-1.0),
    dict(num_beams=3, num_return_sequences=2),
]


def generate_both(feed_forward_proj, tie, settings):
    hf, ours, eos = generation_pair(feed_forward_proj, tie)
    ids, mask, _ = padded_batch(4)
    for max_new_tokens in (4, 12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, **settings)
        mine = ours.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, eos_token_id=eos, **settings)
        assert upto_eos(mine, eos).tolist() == upto_eos(theirs, eos).tolist(), (settings, mine.tolist(), theirs.tolist())


@pytest.mark.parametrize("feed_forward_proj,tie", [("relu", True), ("gated-gelu", False)])
def test_greedy_decoding_gives_transformers_tokens(feed_forward_proj, tie):
    generate_both(feed_forward_proj, tie, dict(num_beams=1))


@pytest.mark.parametrize("settings", BEAM_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("feed_forward_proj,tie", [("relu", True), ("gated-gelu", False)])
def test_beam_search_gives_transformers_tokens(settings, feed_forward_proj, tie):
    generate_both(feed_forward_proj, tie, settings)


@pytest.mark.parametrize("settings", [dict(num_beams=1), dict(num_beams=3), dict(num_beams=4, early_stopping=True),
                                      dict(do_sample=True, top_k=5, top_p=0.9, temperature=0.8, seed=3)])
def test_cache_gives_the_tokens_of_recomputing(settings):
    _, ours, eos = generation_pair("gated-gelu", tie=False)
    ids, mask, _ = padded_batch(5)
    cached = ours.generate(ids, attention_mask=mask, max_new_tokens=10, use_cache=True, eos_token_id=eos, **settings)
    recomputed = ours.generate(ids, attention_mask=mask, max_new_tokens=10, use_cache=False, eos_token_id=eos,
                               **settings)
    assert cached.tolist() == recomputed.tolist()


def test_beams_end_at_different_lengths_in_these_tests():
    """The generation tests above mean something only if some rows stop at eos before the end."""
    for feed_forward_proj, tie in (("relu", True), ("gated-gelu", False)):
        _, ours, eos = generation_pair(feed_forward_proj, tie)
        ids, mask, _ = padded_batch(4)
        for num_beams, length_penalty in ((1, 1.0), (3, -1.0)):  # a negative penalty favours short hypotheses
            out = ours.generate(ids, attention_mask=mask, max_new_tokens=12, num_beams=num_beams,
                                length_penalty=length_penalty, eos_token_id=eos)
            lengths = [int((row == eos).nonzero()[0, 0]) if (row == eos).any() else 13 for row in out]
            assert len(set(lengths)) > 1 and min(lengths) < 12, (num_beams, lengths, out.tolist())
