"""GELU, the post-LN encoder block (BERT) and the pre-LN decoder block (GPT-2)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from common.nn.attention import KVCache, set_attn_implementation
from common.nn.blocks import (ACTIVATIONS, DecoderBlock, EncoderBlock, FeedForward, gelu, gelu_tanh,
                           get_activation, relu)
from common.nn.masks import causal_mask, padding_mask

seeds = st.integers(0, 2**31 - 1)
small = st.integers(1, 4)
values = st.lists(st.floats(-30.0, 30.0, allow_nan=False), min_size=1, max_size=40)


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


# ---------------------------------------------------------------- activations


@given(xs=values)
def test_gelu_is_x_times_the_normal_cdf_and_equals_torch(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    formula = torch.tensor([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in xs], dtype=torch.float64)
    err = max_diff(gelu(x), formula)
    assert err <= 1e-12, f"gelu differs from 0.5 x (1 + erf(x / sqrt 2)) by {err:.2e} at x = {xs}"
    err = max_diff(gelu(x), F.gelu(x))
    assert err <= 1e-12, f"gelu differs from F.gelu by {err:.2e}"
    err32 = max_diff(gelu(x.float()), F.gelu(x.float()))
    assert err32 <= 1e-5, f"float32 gelu differs from F.gelu by {err32:.2e} (tolerance 1e-5)"


@given(xs=values)
def test_gelu_tanh_equals_torch_tanh_approximation_and_stays_close_to_gelu(xs):
    x = torch.tensor(xs, dtype=torch.float64)
    err = max_diff(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    assert err <= 1e-12, f"gelu_tanh differs from F.gelu(approximate='tanh') by {err:.2e}"
    gap = max_diff(gelu_tanh(x), gelu(x))
    assert gap <= 5e-4, f"the tanh approximation is {gap:.2e} from exact GELU (largest gap 4.7e-4 near x = -2.7)"


@given(xs=values)
def test_relu_equals_torch(xs):
    x = torch.tensor(xs)
    assert torch.equal(relu(x), F.relu(x)), f"relu({xs}) = {relu(x).tolist()}"


def test_activation_names_follow_transformers():
    assert get_activation("gelu") is gelu, "'gelu' must be the exact GELU"
    for name in ("gelu_new", "gelu_pytorch_tanh"):
        assert get_activation(name) is gelu_tanh, f"{name!r} must be the tanh approximation"


@pytest.mark.parametrize("build", [
    lambda: get_activation("swish"),
    lambda: FeedForward(8, 16, activation="swish"),
    lambda: EncoderBlock(8, 2, 16, activation="swish"),
    lambda: DecoderBlock(8, 2, activation="swish"),
], ids=["get_activation", "FeedForward", "EncoderBlock", "DecoderBlock"])
def test_unknown_activation_is_a_clear_error_naming_the_known_ones(build):
    with pytest.raises(ValueError, match="unknown activation 'swish'") as info:
        build()
    missing = [name for name in ACTIVATIONS if name not in str(info.value)]
    assert not missing, f"the message does not list {missing}: {info.value}"


# ---------------------------------------------------------------- encoder block (post-LN)


def encoder(H, C, attn_impl="eager"):
    return set_attn_implementation(EncoderBlock(C, H, 2 * C, hidden_dropout=0.0, attention_dropout=0.0).double().eval(),
                                   attn_impl)


@given(seed=seeds, B=small, T=st.integers(1, 6), H=small, use_mask=st.booleans())
def test_encoder_block_output_is_layer_normalised_rows_of_the_input_shape(seed, B, T, H, use_mask):
    """Post-LN: every output row is LayerNorm(...) with weight 1, bias 0 at init: mean 0, variance 1."""
    C = 4 * H
    torch.manual_seed(seed)
    block = encoder(H, C)
    x = 3 * torch.randn(B, T, C, dtype=torch.float64) + 1
    mask = padding_mask((torch.rand(B, T) < 0.7).long()) if use_mask else None
    y, weights = block(x, mask, output_attentions=True)
    assert y.shape == (B, T, C), f"output shape {tuple(y.shape)}, expected {(B, T, C)}"
    assert weights.shape == (B, H, T, T), f"weights shape {tuple(weights.shape)}, expected {(B, H, T, T)}"
    mean = y.mean(-1).abs().max().item()
    var = (y.var(-1, unbiased=False) - 1).abs().max().item()
    assert mean <= 1e-10, f"output rows have mean up to {mean:.2e}, expected 0 (post-LN)"
    assert var <= 1e-6, f"output row variances differ from 1 by {var:.2e} (post-LN)"


@given(seed=seeds, B=small, T=st.integers(2, 6))
def test_encoder_block_ignores_padded_tokens(seed, B, T):
    C, H = 8, 2
    torch.manual_seed(seed)
    block = encoder(H, C)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[:, -1] = 0
    x = torch.randn(B, T, C, dtype=torch.float64)
    x2 = x.clone()
    x2[:, -1] = 10 * torch.randn(B, C, dtype=torch.float64)
    y, _ = block(x, padding_mask(attention_mask))
    y2, _ = block(x2, padding_mask(attention_mask))
    err = max_diff(y[:, :-1], y2[:, :-1])
    assert err <= 1e-12, f"changing a padded token moved real tokens' outputs by {err:.2e}"


def test_encoder_block_sdpa_path_equals_eager():
    torch.manual_seed(0)
    eager, sdpa = encoder(2, 8), encoder(2, 8, attn_impl="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]))
    err = max_diff(eager(x, mask)[0], sdpa(x, mask)[0])
    assert err <= 1e-10, f"encoder block eager vs sdpa differ by {err:.2e}"


# ---------------------------------------------------------------- decoder block (pre-LN)


def decoder(H, C, cross=False):
    return DecoderBlock(C, H, add_cross_attention=cross).double().eval()


@given(seed=seeds, B=small, T=st.integers(2, 7), H=small, data=st.data())
def test_decoder_block_is_causal(seed, B, T, H, data):
    t = data.draw(st.integers(0, T - 2), label="t")
    later = data.draw(st.integers(t + 1, T - 1), label="t + k")
    C = 4 * H
    torch.manual_seed(seed)
    block = decoder(H, C)
    x = torch.randn(B, T, C, dtype=torch.float64)
    x2 = x.clone()
    x2[:, later] = 10 * torch.randn(B, C, dtype=torch.float64)
    y, _ = block(x, causal_mask(T))
    y2, _ = block(x2, causal_mask(T))
    err = max_diff(y[:, : t + 1], y2[:, : t + 1])
    assert err <= 1e-12, f"changing token {later} moved outputs at positions <= {t} by {err:.2e}"


def test_decoder_block_is_the_identity_when_its_sublayers_output_zero():
    """Pre-LN keeps a clean residual path: x + 0 + 0 = x (a post-LN block would normalise x)."""
    block = decoder(2, 8)
    for linear in (block.attn.out_proj, block.mlp.c_proj):
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
    x = 5 * torch.randn(2, 4, 8, dtype=torch.float64)
    err = max_diff(block(x, causal_mask(4))[0], x)
    assert err == 0.0, f"with zero sub-layers the block changed x by {err:.2e}"


@given(seed=seeds, B=small, T=st.integers(1, 5), S=st.integers(2, 6))
def test_decoder_cross_attention_reads_the_encoder_and_respects_its_mask(seed, B, T, S):
    C, H = 8, 2
    torch.manual_seed(seed)
    block = decoder(H, C, cross=True)
    x = torch.randn(B, T, C, dtype=torch.float64)
    enc = torch.randn(B, S, C, dtype=torch.float64)
    enc_attention_mask = torch.ones(B, S, dtype=torch.long)
    enc_attention_mask[:, -1] = 0  # the last encoder position is padding
    enc_mask = padding_mask(enc_attention_mask)
    y, _ = block(x, causal_mask(T), encoder_hidden_states=enc, encoder_mask=enc_mask)
    assert y.shape == (B, T, C), f"output shape {tuple(y.shape)}, expected {(B, T, C)}"

    enc_real = enc.clone()
    enc_real[:, 0] += 5.0
    moved = max_diff(y, block(x, causal_mask(T), encoder_hidden_states=enc_real, encoder_mask=enc_mask)[0])
    assert moved > 1e-6, f"changing a visible encoder state moved the output by only {moved:.2e}"

    enc_pad = enc.clone()
    enc_pad[:, -1] = 10 * torch.randn(B, C, dtype=torch.float64)
    err = max_diff(y, block(x, causal_mask(T), encoder_hidden_states=enc_pad, encoder_mask=enc_mask)[0])
    assert err <= 1e-12, f"changing a masked encoder state moved the output by {err:.2e}"


def test_decoder_with_cross_attention_requires_encoder_states():
    with pytest.raises(ValueError, match="pass encoder_hidden_states"):
        decoder(2, 8, cross=True)(torch.randn(1, 3, 8, dtype=torch.float64))


def test_decoder_block_with_kv_cache_equals_the_full_sequence():
    torch.manual_seed(0)
    B, T, C, H = 2, 6, 8, 2
    block = decoder(H, C)
    x = torch.randn(B, T, C, dtype=torch.float64)
    full, _ = block(x, causal_mask(T))
    cache = KVCache(B, H, T, C // H, dtype=torch.float64)
    steps = [block(x[:, t:t + 1], causal_mask(1, t + 1), kv_cache=cache)[0] for t in range(T)]
    err = max_diff(full, torch.cat(steps, dim=1))
    assert err <= 1e-10, f"decoder block with KV cache differs from the full pass by {err:.2e}"


# ---------------------------------------------------------------- the blocks' formulas, written out
# Every parameter perturbed (LayerNorm weights and biases too, each LayerNorm different from the
# others), and the reference computed from the weights with torch's own attention and layer_norm:
# a residual taken from the wrong tensor, or a sub-layer fed by the wrong LayerNorm, changes it.


def perturbed(module, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def reference_attention(mha, x, source, mask=None):
    """Concat_h softmax(Q_h K_h^T / sqrt(d) + M) V_h [W^O], from the module's weights."""
    B, T, C = x.shape
    H = mha.num_heads

    def heads(t, linear):
        return F.linear(t, linear.weight, linear.bias).view(B, -1, H, C // H).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(x, mha.query), heads(source, mha.key),
                                         heads(source, mha.value), attn_mask=mask)
    out = out.transpose(1, 2).reshape(B, T, C)
    return out if mha.out_proj is None else F.linear(out, mha.out_proj.weight, mha.out_proj.bias)


def layer_norm(ln, x):
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
def test_feed_forward_is_act_of_x_w1_plus_b1_then_w2_plus_b2(activation):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 with the activation's formula (not the kernel)."""
    torch.manual_seed(5)
    ffn = perturbed(FeedForward(8, 16, activation=activation).double())
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    hidden = ACTIVATIONS[activation](F.linear(x, ffn.c_fc.weight, ffn.c_fc.bias))
    expected = F.linear(hidden, ffn.c_proj.weight, ffn.c_proj.bias)
    err = max_diff(ffn(x), expected)
    assert err <= 1e-10, f"{activation} feed-forward differs from act(x W_1 + b_1) W_2 + b_2 by {err:.2e}"


def test_encoder_block_is_the_post_ln_formula_on_perturbed_weights():
    """h = LN_a(x + MultiHead(x) W^O), y = LN_o(h + FFN(h)): the FFN reads h, its residual is h."""
    torch.manual_seed(3)
    B, T, C, H = 2, 5, 8, 2
    block = perturbed(encoder(H, C))
    x = torch.randn(B, T, C, dtype=torch.float64)
    mask = padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    att, out = block.attention, block.output
    a = F.linear(reference_attention(att.self, x, x, mask), att.output.dense.weight, att.output.dense.bias)
    h = layer_norm(att.output.LayerNorm, x + a)
    ffn = F.linear(block.intermediate(h), out.dense.weight, out.dense.bias)
    expected = layer_norm(out.LayerNorm, h + ffn)
    got, _ = block(x, mask)
    err = max_diff(got, expected)
    assert err <= 1e-10, (f"encoder block differs from LN(h + FFN(h)), h = LN(x + MultiHead(x)), by "
                          f"{err:.2e}; e.g. got {got[0, 0, :3].tolist()}, expected {expected[0, 0, :3].tolist()}")


@pytest.mark.parametrize("cross", [False, True], ids=["self_only", "cross_attention"])
def test_decoder_block_is_the_pre_ln_formula_with_distinct_layer_norms(cross):
    """x += MultiHead(LN_1(x)); [x += MultiHead(LN_c(x), enc)]; x += FFN(LN_2(x)), each
    sub-layer reading its own LayerNorm (perturbed apart, so swapping two of them shows)."""
    torch.manual_seed(4)
    B, T, S, C, H = 2, 5, 4, 8, 2
    block = perturbed(decoder(H, C, cross=cross))
    x = torch.randn(B, T, C, dtype=torch.float64)
    enc = torch.randn(B, S, C, dtype=torch.float64) if cross else None
    enc_mask = padding_mask(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])) if cross else None
    mask = causal_mask(T)
    h = x + reference_attention(block.attn, layer_norm(block.ln_1, x), layer_norm(block.ln_1, x), mask)
    if cross:
        h = h + reference_attention(block.crossattention, layer_norm(block.ln_cross_attn, h), enc, enc_mask)
    expected = h + block.mlp(layer_norm(block.ln_2, h))
    got, _ = block(x, mask, encoder_hidden_states=enc, encoder_mask=enc_mask)
    err = max_diff(got, expected)
    assert err <= 1e-10, (f"decoder block differs from the pre-LN formula by {err:.2e}; e.g. got "
                          f"{got[0, -1, :3].tolist()}, expected {expected[0, -1, :3].tolist()}")
