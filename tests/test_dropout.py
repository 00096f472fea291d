"""common.nn.dropout: the distribution of nn.Dropout, drawn differently (see the module docstring)."""
import math

import pytest
import torch

from common.nn.dropout import Dropout, dropout, keep_mask, uniform_15bit


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(4, 5)
    assert dropout(x, 0.3, training=False) is x, "eval mode must return x unchanged"
    assert dropout(x, 0.0, training=True) is x, "p = 0 must return x unchanged"
    layer = Dropout(0.3).eval()
    assert layer(x) is x, "Dropout.eval() must return x unchanged"


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_one_over_one_minus_p(p):
    torch.manual_seed(0)
    n = 400_000
    x = torch.rand(n) + 1.0  # no zeros of its own
    y = dropout(x, p, training=True)
    dropped = (y == 0).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(dropped - p) <= 5 * sigma, f"dropped {dropped:.5f} of the units, expected p = {p} (+- {5 * sigma:.5f})"
    kept = y != 0
    err = (y[kept] - x[kept] / (1 - p)).abs().max().item()
    assert err <= 1e-6, f"kept units differ from x / (1 - p) by up to {err:.2e}"
    mean_ratio = (y.sum() / x.sum()).item()
    assert abs(mean_ratio - 1) <= 0.01, f"E[Dropout(x)] / x = {mean_ratio:.4f}, expected 1 (inverted dropout)"


def test_dropout_masks_are_independent_between_calls_and_elements():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    a = dropout(x, 0.5, training=True) == 0
    b = dropout(x, 0.5, training=True) == 0
    both = (a & b).double().mean().item()
    assert abs(both - 0.25) <= 0.01, f"P(dropped in two calls) = {both:.4f}, expected 0.25 for independent draws"
    neighbours = (a[1:] & a[:-1]).double().mean().item()
    assert abs(neighbours - 0.25) <= 0.01, f"P(two neighbours dropped) = {neighbours:.4f}, expected 0.25"


def test_dropout_gradient_is_the_same_mask_over_one_minus_p():
    torch.manual_seed(0)
    p = 0.25
    x = torch.randn(1000, requires_grad=True)
    y = dropout(x, p, training=True)
    y.sum().backward()
    expected = (y != 0).float() / (1 - p)
    err = (x.grad - expected).abs().max().item()
    assert err <= 1e-6, f"d Dropout(x) / dx differs from m / (1 - p) by {err:.2e}"


def test_dropout_keeps_a_bfloat16_input_bfloat16_with_the_same_rate():
    torch.manual_seed(0)
    x = torch.ones(200_000, dtype=torch.bfloat16)
    y = dropout(x, 0.1, training=True)
    assert y.dtype == torch.bfloat16, f"output dtype {y.dtype}, expected the input's bfloat16"
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - 0.1) <= 0.005, f"dropped {dropped:.4f} of bf16 units, expected 0.1"


def test_dropout_rejects_a_probability_outside_0_1():
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.parametrize("p", [0.1, 0.5, 1 / 3])
def test_keep_mask_drops_below_floor_keeps_above_and_resolves_the_tie_with_probability_q_minus_floor(p):
    # every 15-bit value once: exactly f = floor(p 2^15) dropped below the tie, 2^15 - f - 1 kept above it
    q = p * 2**15
    f = int(q)
    v = torch.arange(2**15, dtype=torch.int16)
    keep = keep_mask(v, p)
    assert not keep[:f].any(), f"values below f = {f} must be dropped (v < f means u < p)"
    assert keep[f + 1:].all(), f"values above f = {f} must be kept"
    # only ties: kept with probability 1 - (q - f), so P(drop) = (f + q - f) / 2^15 = p exactly
    torch.manual_seed(0)
    n = 200_000
    kept = keep_mask(torch.full((n,), f, dtype=torch.int16), p).double().mean().item()
    expected = 1 - (q - f)
    sigma = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
    assert abs(kept - expected) <= 5 * sigma + 1e-12, (
        f"a tie v = f was kept with frequency {kept:.4f}, expected 1 - (q - f) = {expected:.4f}")


def test_uniform_15bit_gives_four_alike_uniform_pieces_per_draw():
    torch.manual_seed(0)
    v = uniform_15bit((100_000, 4)).long()  # column j = the j-th 16-bit piece of each 64-bit draw
    assert v.min() >= 0 and v.max() < 2**15, f"values outside 0 .. 2^15 - 1: [{v.min()}, {v.max()}]"
    for j in range(4):
        for bit in (0, 7, 14):
            share = ((v[:, j] >> bit) & 1).double().mean().item()
            assert abs(share - 0.5) <= 0.01, f"bit {bit} of piece {j} is set in {share:.4f} of draws, expected 0.5"
    assert uniform_15bit((3, 5, 7)).shape == (3, 5, 7), "a shape whose size is not a multiple of 4 must still fit"
