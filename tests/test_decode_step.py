"""minigpt.decode_step: one token through the packed weights gives GPT.forward's logits, with and
without left padding, with and without biases, for both attention implementations; packing copies
the weights and leaves the model's parameters alone."""
import pytest
import torch

from minigpt import GPT, GPTConfig
from common.nn.blocked_linear import BlockedLinear
from minigpt.decode_step import DecodeWeights

TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=50)


def tiny_model(**overrides):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "initializer_range": 0.2, **overrides})).double().eval()
    if not model.config.bias:
        return model
    with torch.no_grad():  # biases and LayerNorm betas are zeros at init: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model


@pytest.mark.parametrize("overrides", [{}, {"bias": False}, {"attn_impl": "sdpa"}, {"tie_word_embeddings": False}],
                         ids=["default", "no_bias", "sdpa", "untied"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])  # 3 divides neither 4d = 128 nor V = 50: padded blocks
def test_decode_steps_give_the_logits_of_the_full_forward(overrides, padded, blocks):
    model = tiny_model(**overrides)
    B, T0, T = 2, 4, 9  # prefill 4 tokens, then 5 decode steps
    ids = torch.randint(0, TINY["vocab_size"], (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.long)
    if padded:
        mask[1, :2] = 0  # row 1 is left padded by 2
    caches = model.new_kv_caches(B, T)
    with torch.no_grad():
        decoder = DecodeWeights.from_model(model, blocks=blocks)
        model(ids[:, :T0], attention_mask=mask[:, :T0] if padded else None, kv_caches=caches)
        for t in range(T0, T):
            window = mask[:, :t + 1] if padded else None
            got = decoder.step(ids[:, t:t + 1], caches, window)  # (B, V)
            full = model(ids[:, :t + 1], attention_mask=window).logits[:, -1]  # (B, V)
            err = (got - full).abs().max().item()
            assert err < 1e-10, f"step at position {t}: decode-step logits differ from forward by {err:.2e}"
            assert caches[0].length == t + 1, f"cache holds {caches[0].length} positions after position {t}"


def test_packing_copies_the_weights_and_leaves_the_parameters_alone():
    model = tiny_model()
    before = {name: (p.data_ptr(), p.stride(), p.clone()) for name, p in model.named_parameters()}
    with torch.no_grad():
        decoder = DecodeWeights.from_model(model)
    layer, attn = decoder.layers[0], model.transformer.h[0].attn
    d = TINY["n_embd"]
    qkv = DecodeWeights.from_model(model, blocks=1).layers[0].qkv.weight[0]  # one block: the whole W^T
    assert qkv.shape == (d, 3 * d) and qkv.is_contiguous(), qkv.shape
    assert torch.equal(qkv[:, d:2 * d], attn.key.weight.t()), "columns d..2d must be W^K^T"
    assert decoder.head.out_features == TINY["vocab_size"], decoder.head.out_features
    for name, p in model.named_parameters():
        ptr, stride, value = before[name]
        assert (p.data_ptr(), p.stride()) == (ptr, stride) and torch.equal(p, value), f"{name} changed"


@pytest.mark.parametrize("blocks", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("rows", [1, 3, BlockedLinear.MAX_ROWS + 1])
@pytest.mark.parametrize("bias", [True, False])
def test_blocked_linear_is_x_w_transpose_plus_b(blocks, rows, bias):
    """Cutting W^T into column blocks (zero-padded when they do not divide `out`) changes nothing:
    [x W_1^T | ... | x W_P^T] + b = x W^T + b, for P = 1 up to more blocks than columns."""
    g = torch.Generator().manual_seed(blocks)
    linear = torch.nn.Linear(10, 50, bias=bias).double()
    x = torch.randn(rows, 10, dtype=torch.float64, generator=g)
    weight = linear.weight.t().contiguous().t()  # the same W, stored transposed: packing must not care
    got = BlockedLinear.from_weight(weight, linear.bias, blocks)(x)  # (rows, 50)
    want = linear(x).detach()
    assert got.shape == want.shape, f"{blocks} blocks: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    assert err < 1e-12, f"{blocks} blocks, {rows} rows: differs from x W^T + b by {err:.2e}"
