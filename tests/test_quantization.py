"""int8 absmax quantization (common/nn/quantization.py): the rounding bound, the symmetric grid, the
int8 kernel pinned to the textbook path, and quantized folders that load with from_pretrained."""
import json
import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

import minibert
from common.errors import ConfigError
from common.nn.quantization import (Int8Embedding, Int8Linear, dequantize, is_quantized, quantize_absmax,
                                    quantize_model, use_int8_kernel)

seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds, rows=st.integers(1, 6), n=st.integers(1, 40), log_scale=st.floats(-6, 4))
def test_rounding_error_is_at_most_half_a_step(seed, rows, n, log_scale):
    w = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed)) * 10.0 ** log_scale
    q, s = quantize_absmax(w)
    assert q.dtype == torch.int8 and s.shape == (rows, 1)
    err = (w - dequantize(q, s)).abs()
    bound = s / 2 * (1 + 1e-5)  # float32 rounding of w / s
    assert (err <= bound).all(), f"|w - dequant(q)| up to {float((err / s).max()):.4f} steps; the bound is 0.5"
    assert int(q.abs().max()) == 127, "each row's largest |w| must map to +-127 (absmax uses the whole grid)"
    assert int(q.min()) >= -127, "the grid is symmetric: -128 is never used"
    absmax = w.abs().amax(1, keepdim=True)
    assert torch.allclose(s, absmax / 127), "the scale is max|w| / 127 per row (per output channel)"


def test_zero_rows_and_one_outlier_per_row():
    w = torch.zeros(3, 8)
    w[1] = torch.arange(8.0)
    w[2, 0] = 1000.0  # an outlier spoils only its own row's resolution
    w[2, 1:] = 0.5
    q, s = quantize_absmax(w)
    assert torch.equal(dequantize(q, s)[0], torch.zeros(8)) and float(s[0]) == 1.0
    assert torch.allclose(dequantize(q, s)[1], w[1], atol=float(s[1]) / 2)
    assert int(q[2, 1]) == 0, "per-channel: the outlier row's small weights round to 0 ..."
    assert float(s[1]) == pytest.approx(7 / 127), "... while the other rows keep their own scale"


@given(seed=seeds, B=st.integers(1, 3), T=st.integers(1, 5), n_in=st.integers(1, 24), n_out=st.integers(1, 24),
       bias=st.booleans())
def test_int8_linear_is_the_dequantized_product_and_close_to_float(seed, B, T, n_in, n_out, bias):
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n_out, n_in, generator=g))
        if bias:
            linear.bias.copy_(torch.randn(n_out, generator=g))
    x = torch.randn(B, T, n_in, generator=g)
    q = Int8Linear.from_linear(linear)
    y = q(x)
    q_x, s_x = quantize_absmax(x)
    expected = dequantize(q_x, s_x) @ dequantize(q.weight, q.weight_scale).T + (linear.bias if bias else 0)
    assert torch.allclose(y, expected, atol=1e-5), "textbook path: dequantize x and W, then multiply"
    # error bound of the product: |x||dW| + |dx||W| summed over the inputs, with |dW| <= s_w/2, |dx| <= s_x/2
    bound = (x.abs() @ (q.weight_scale / 2).expand(n_out, n_in).T + (s_x / 2) * (linear.weight.abs().sum(1))
             + (s_x / 2) * (q.weight_scale.view(-1) / 2) * n_in)
    assert ((y - linear(x)).abs() <= bound * (1 + 1e-4) + 1e-5).all(), "int8 output outside the rounding bound"


def random_int8_layer(seed, N, n_in, n_out, x_scale):
    """An Int8Linear of N(0, 1) weights, an input (N, n_in), and the textbook path's output."""
    g = torch.Generator().manual_seed(seed)
    linear = nn.Linear(n_in, n_out)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n_out, n_in, generator=g))
    q = Int8Linear.from_linear(linear)
    x = torch.randn(N, n_in, generator=g) * x_scale
    return q, x, q(x)


@given(seed=seeds, N=st.integers(1, 40), n_in=st.integers(1, 64), n_out=st.integers(1, 32))
def test_int8_kernel_equals_the_textbook_path(seed, N, n_in, n_out):
    q, x, textbook = random_int8_layer(seed, N, n_in, n_out, x_scale=3.0)
    assert use_int8_kernel(q) == "int_mm", "torch._int_mm runs on this CPU"
    fast = q(x)
    scale = textbook.abs().max().clamp_min(1.0)
    assert torch.allclose(fast, textbook, rtol=1e-5, atol=1e-5 * float(scale)), (
        f"int8 kernel and textbook path differ by {float((fast - textbook).abs().max()):.3g}")


@given(seed=seeds, N=st.integers(1, 20), n_in=st.integers(1, 48), n_out=st.integers(1, 24))
def test_fbgemm_int8_kernel_is_the_textbook_product_up_to_its_input_rounding(seed, N, n_in, n_out):
    """fbgemm rounds the input with one asymmetric 7-bit scale per call, step = (max - min) / 127
    (x86's reduce_range), the textbook path with s_x[t] per token: the two differ by at most
    sum_j |W_deq[o, j]| (step / 2 + s_x[t] / 2) (same int8 weights, both sums exact)."""
    q, x, textbook = random_int8_layer(seed, N, n_in, n_out, x_scale=2.0)
    assert use_int8_kernel(q, "fbgemm") == "fbgemm", "torch.ao's fbgemm kernel runs on this CPU"
    fast = q(x)
    _, s_x = quantize_absmax(x)
    step = (x.max().clamp_min(0) - x.min().clamp_max(0)) / 127
    w_abs = dequantize(q.weight, q.weight_scale).abs().sum(1)  # (out,)
    bound = w_abs * (step / 2 + s_x / 2) * 1.01 + 1e-4  # (N, out)
    assert ((fast - textbook).abs() <= bound).all(), (
        f"fbgemm and textbook differ by {float((fast - textbook).abs().max()):.4g}, more than their rounding allows")


def test_missing_int8_kernel_falls_back_with_one_line(monkeypatch):
    import common.nn.quantization as quantization

    q = Int8Linear.from_linear(nn.Linear(8, 4))
    monkeypatch.setattr(quantization, "int8_kernel_available", lambda device=None, kernel="int_mm": False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert use_int8_kernel(q) == "textbook"
    assert len(caught) == 1 and "textbook path" in str(caught[0].message), [str(w.message) for w in caught]
    assert q.kernel == "textbook"


def test_int8_embedding_rows_are_per_row_absmax():
    emb = nn.Embedding(11, 6)
    q = Int8Embedding.from_embedding(emb)
    ids = torch.tensor([[0, 3, 10]])
    w_q, s = quantize_absmax(emb.weight.detach())
    assert torch.equal(q(ids), dequantize(w_q, s)[ids])
    assert ((q(ids) - emb(ids)).abs() <= s[ids] / 2 + 1e-6).all()


TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=16, num_labels=2)


def test_quantized_bert_folder_round_trip(tmp_path):
    torch.manual_seed(0)
    model = minibert.BertForSequenceClassification(minibert.BertConfig(**TINY)).eval()
    ids = torch.randint(1, 50, (3, 9))
    reference = model(ids).logits
    config = quantize_model(model, ["classifier"])
    model.config.extra["quantization_config"] = config
    assert "classifier" in config["modules_to_not_convert"] and isinstance(model.classifier, nn.Linear)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, Int8Linear)
    assert isinstance(model.bert.embeddings.word_embeddings, Int8Embedding)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == "absmax_int8"
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("bert.encoder.layer.0.attention.self.query.weight").dtype == torch.int8
        assert "bert.encoder.layer.0.attention.self.query.weight_scale" in f.keys()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing, nothing unused
        loaded = minibert.BertForSequenceClassification.from_pretrained(tmp_path)
    assert is_quantized(loaded)
    assert torch.equal(loaded(ids).logits, model(ids).logits), "a quantized folder must load to the same model"
    assert (loaded(ids).logits - reference).abs().max() < 0.05, "int8 logits drifted far from float"
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_model(loaded)


def test_tied_weights_stay_in_float():
    from minigpt.config import GPTConfig
    from minigpt.model import GPT

    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_embd=16, n_layer=1, n_head=2)).eval()
    config = quantize_model(model)
    assert {"lm_head", "transformer.wte"} <= set(config["modules_to_not_convert"])
    assert model.lm_head.weight is model.transformer.wte.weight
    assert isinstance(model.transformer.h[0].attn.query, Int8Linear)
