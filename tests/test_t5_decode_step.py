"""minit5's fast path (minit5/decode_step.py) against the textbook decoder it replaces.

A decode step must give the logits of T5ForConditionalGeneration.decode fed one token with the caches,
step after step, for both feed-forward variants, tied and untied heads, padded sources and any number
of column blocks; generate must write the same tokens with and without it. Wrong versions these
catch: the bias row of the wrong position (p - 1 or p + 1), a 1/sqrt(d) factor, the source padding not
masked, the d_model^-0.5 rescale on an untied head, W_i0 / W_i1 swapped.
"""
import pytest
import torch

import minit5.generate as t5_generate
from minit5.config import T5Config
from common.nn.norms import RMSNorm
from minit5.decode_step import DecodeWeights, rms
from minit5.model import T5ForConditionalGeneration

SIZES = dict(vocab_size=50, d_model=24, d_kv=8, d_ff=40, num_layers=2, num_decoder_layers=3, num_heads=3,
             relative_attention_num_buckets=8, relative_attention_max_distance=10, dropout_rate=0.0)


def model(feed_forward_proj="relu", tie=True, seed=0):
    """A T5 with every parameter moved off its initialisation (RMSNorm weights away from 1)."""
    torch.manual_seed(seed)
    m = T5ForConditionalGeneration(T5Config(**SIZES, feed_forward_proj=feed_forward_proj, tie_word_embeddings=tie))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def sources(seed=0):
    """Three sources of 7 tokens; row 1 padded on the left by 2, row 2 on the right by 3."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, SIZES["vocab_size"], (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    mask[2, -3:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@pytest.mark.parametrize("feed_forward_proj,tie", [("relu", True), ("gated-gelu", False), ("gated-gelu", True)])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_decode_step_gives_the_logits_of_decode_with_the_caches(feed_forward_proj, tie, blocks):
    m = model(feed_forward_proj, tie)
    ids, mask = sources()
    steps = 12  # past relative_attention_max_distance: the last buckets are used too
    targets = torch.randint(2, SIZES["vocab_size"], (3, steps), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        encoded = m.encode(ids, mask)
        slow_caches, fast_caches = m.new_kv_caches(3, steps), m.new_kv_caches(3, steps)
        cross = m.cross_key_values(encoded)
        fast = DecodeWeights.from_model(m, steps, mask, blocks=blocks)
        for t in range(steps):
            token = targets[:, t:t + 1]
            want = m.decode(token, encoded, mask, kv_caches=slow_caches, cross_key_values=cross)[:, -1]
            got = fast.step(token, fast_caches, cross)
            err = (got - want).abs().max().item()
            assert err <= 1e-5 * max(1.0, want.abs().max().item()), (
                f"step {t} (target position {t}): decode_step logits differ from decode() by {err:.2e}")
            assert fast_caches[0].length == slow_caches[0].length == t + 1


def test_source_padding_is_masked_in_the_cross_attention():
    """Changing the ids under the padding must not change the step's logits."""
    m = model("gated-gelu", tie=False)
    ids, mask = sources()
    other = ids.masked_fill(mask == 0, 7)
    start = torch.zeros(3, 1, dtype=torch.long)
    with torch.inference_mode():
        logits = []
        for source in (ids, other):
            encoded = m.encode(source, mask)
            fast = DecodeWeights.from_model(m, 4, mask)
            logits.append(fast.step(start, m.new_kv_caches(3, 4), m.cross_key_values(encoded)))
    assert torch.allclose(logits[0], logits[1], atol=1e-6), (logits[0] - logits[1]).abs().max()


def test_use_decode_step_rule():
    assert t5_generate.use_decode_step(t5_generate.MIN_STEPS_TO_PACK, use_cache=True)
    assert not t5_generate.use_decode_step(t5_generate.MIN_STEPS_TO_PACK - 1, use_cache=True)
    assert not t5_generate.use_decode_step(100, use_cache=False)


@pytest.mark.parametrize("settings", [dict(num_beams=1), dict(num_beams=3, length_penalty=0.7),
                                      dict(num_beams=2, num_return_sequences=2),
                                      dict(do_sample=True, top_k=8, temperature=0.9, seed=4)])
def test_generate_writes_the_same_tokens_with_and_without_the_fast_path(settings, monkeypatch):
    m = model("relu", tie=True, seed=2)
    ids, mask = sources(3)
    # an eos the model actually writes, so that rows end at different lengths
    eos = int(m.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=-1)[0, 5])
    fast = m.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, **settings)
    monkeypatch.setattr(t5_generate, "use_decode_step", lambda max_new_tokens, use_cache: False)
    slow = m.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, **settings)
    assert fast.tolist() == slow.tolist(), f"{settings}: fast path {fast.tolist()} != textbook {slow.tolist()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_is_the_rmsnorm_module(dtype):
    """The fused kernel the step uses in float32 computes x / sqrt(mean(x^2) + eps) * weight."""
    norm = RMSNorm(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.add_(0.5 * torch.randn(24, generator=torch.Generator().manual_seed(0)))
    x = (3 * torch.randn(5, 24, generator=torch.Generator().manual_seed(1))).to(dtype)
    with torch.inference_mode():
        got, want = rms(norm.to(dtype), x), norm.to(dtype)(x)
    err = (got.float() - want.float()).abs().max().item()
    assert got.dtype == dtype and err <= 1e-6 * want.float().abs().max().item(), f"{dtype}: differs by {err:.2e}"
