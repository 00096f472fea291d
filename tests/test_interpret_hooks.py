"""interpret.hooks: a run that records every named activation and can replace any of them.

Identities: a run without patches IS the model's forward (logits to 1e-5, GPT-2 shape, Llama shape
with GQA, attention-only, BERT, with padding); the cached attn_out is the sum of each head's z_h W^O_h;
zeroing head h equals zeroing W^O's columns of head h in a copy of the model; patching the last
residual stream from another run gives that run's logits; an unknown name is one line listing the names.
"""
import copy

import pytest
import torch

import minibert
from common.errors import UserError
from interpret import hooks
from minigpt import GPT, GPTConfig
from minigpt.config import LLAMA_SHAPE

TOL = 1e-5
SHAPES = {
    "gpt2": dict(),
    "llama_gqa": dict(**LLAMA_SHAPE, n_kv_head=2),
    "attention_only": dict(feed_forward="none"),
}


def gpt(shape, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=16, block_size=16, vocab_size=23, **SHAPES[shape]))
    with torch.no_grad():  # away from the default init (LayerNorm 1 and 0, biases 0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def bert():
    torch.manual_seed(0)
    config = minibert.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=32, max_position_embeddings=16)
    return minibert.BertModel(config).eval()


def batch(vocab, B=2, T=10):
    ids = torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0  # right padding
    return ids, mask


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_run_without_patches_is_the_models_forward(shape):
    model = gpt(shape)
    ids, mask = batch(23)
    logits, cache = hooks.run_with_cache(model, ids, mask)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    diff = (logits - expected.logits)[real].abs().max().item()
    assert diff <= TOL, f"{shape}: the hooked run's logits differ from model(...) by {diff:.2e}"
    for n in range(2):  # the cached residual stream is the model's hidden state h_n
        d = (cache[f"blocks.{n}.resid_pre"] - expected.hidden_states[n])[real].abs().max().item()
        assert d <= TOL, f"blocks.{n}.resid_pre differs from hidden_states[{n}] by {d:.2e}"
    assert set(cache) == set(hooks.hook_names(model))
    if shape == "attention_only":
        assert "blocks.0.mlp_out" not in cache
    rows = cache["blocks.1.attn.pattern"].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-6), "every attention row sums to 1"


def test_bert_run_equals_the_encoder_and_its_attentions():
    model = bert()
    ids, mask = batch(30)
    out, cache = hooks.run_with_cache(model, ids, mask)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask, output_attentions=True)
    assert (out - expected.last_hidden_state).abs().max() <= TOL
    assert (cache.stack("attn.pattern") - torch.stack(expected.attentions)).abs().max() <= TOL


def test_attn_out_is_the_sum_of_each_heads_output_through_its_slice_of_w_o():
    model = gpt("gpt2")
    ids, _ = batch(23)
    _, cache = hooks.run_with_cache(model, ids)
    out_proj = model.transformer.h[0].attn.out_proj
    z = cache["blocks.0.attn.heads"]  # (B, H, T, d_k)
    H, d = z.size(1), z.size(3)
    W = out_proj.weight.view(-1, H, d)  # (d_model, H, d_k), d_k = d here: the columns of W^O that read head h
    summed = torch.einsum("bhtd,chd->btc", z, W) + out_proj.bias
    assert (summed - cache["blocks.0.attn_out"]).abs().max() <= TOL


@pytest.mark.parametrize("head", [0, 3])
def test_zeroing_a_head_equals_zeroing_its_columns_of_w_o(head):
    model = gpt("gpt2")
    ids, _ = batch(23)
    ablated, _ = hooks.run_with_hooks(model, ids, patches={"blocks.1.attn.heads": hooks.zero_head(head)})
    surgery = copy.deepcopy(model)
    d = model.config.head_dim
    with torch.no_grad():
        surgery.transformer.h[1].attn.out_proj.weight[:, head * d:(head + 1) * d] = 0
        expected = surgery(ids).logits
    assert (ablated - expected).abs().max() <= TOL
    clean, _ = hooks.run_with_cache(model, ids)
    assert (ablated - clean).abs().max() > 1e-3, "ablating a head must change the logits"


def test_patching_the_last_residual_stream_from_another_run_gives_that_runs_logits():
    model = gpt("llama_gqa")
    a, _ = batch(23)
    b = torch.randint(0, 23, a.shape, generator=torch.Generator().manual_seed(5))
    logits_b, cache_b = hooks.run_with_cache(model, b)
    patched, _ = hooks.run_with_hooks(model, a, patches={"blocks.1.resid_post": hooks.from_run(cache_b, "blocks.1.resid_post")})
    assert (patched - logits_b).abs().max() <= TOL
    zeroed, _ = hooks.run_with_hooks(model, a, patches={"embed": hooks.zero()})
    spread = zeroed.std(dim=1).max().item()  # RoPE rotates a zero vector to zero: no position is told apart
    assert spread < 1e-6, f"zeroed embeddings in a RoPE model must give one logit row at every position, spread {spread:.2e}"


def test_mean_ablation_replaces_the_head_by_its_average_over_the_reference_batch():
    model = gpt("gpt2")
    ids, _ = batch(23, B=4)
    _, cache = hooks.run_with_cache(model, ids)
    ref = cache["blocks.0.attn.heads"]
    _, patched = hooks.run_with_hooks(model, ids, patches={"blocks.0.attn.heads": hooks.mean_head(2, ref)})
    got = patched["blocks.0.attn.heads"]
    assert torch.allclose(got[:, 2], ref[:, 2].mean(0, keepdim=True).expand_as(got[:, 2]))
    assert torch.equal(got[:, 1], ref[:, 1]), "the other heads are untouched"


def test_an_unknown_hook_name_is_one_line_listing_the_names():
    model = gpt("attention_only")
    ids, _ = batch(23)
    with pytest.raises(UserError) as e:
        hooks.run_with_hooks(model, ids, patches={"blocks.0.mlp_out": hooks.zero()})
    message = str(e.value)
    assert "\n" not in message and "'blocks.0.mlp_out'" in message
    assert "blocks.N.attn.pattern" in message and "(N = 0..1)" in message, message
    _, cache = hooks.run_with_cache(model, ids)
    with pytest.raises(UserError, match="blocks.N.resid_pre"):
        cache["blocks.7.resid_pre"]
    with pytest.raises(UserError, match="head 9 does not exist"):
        hooks.run_with_hooks(model, ids, patches={"blocks.0.attn.heads": hooks.zero_head(9)})


def test_t5_run_equals_the_model_and_names_its_cross_attention():
    from minit5 import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=30, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                                                num_decoder_layers=2, num_heads=4, dropout_rate=0.0)).eval()
    with torch.no_grad():  # RMSNorm weights away from 1
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ids, mask = batch(30)
    decoder_ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(3))
    logits, cache = hooks.run_with_cache(model, ids, mask, decoder_input_ids=decoder_ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, output_attentions=True)
    assert (logits - expected.logits).abs().max() <= TOL
    cross = cache.stack("cross_attn.pattern", prefix="decoder.")
    assert (cross - torch.stack(expected.cross_attentions)).abs().max() <= TOL
    assert cross.shape == (2, 2, 4, 6, 10), "(L, B, H, T, S)"
    message = hooks.describe_names(list(cache))
    assert "decoder.blocks.N.cross_attn.pattern" in message and "encoder.blocks.N.attn.pattern" in message
    silenced, _ = hooks.run_with_hooks(model, ids, mask, decoder_input_ids=decoder_ids,
                                       patches={"decoder.blocks.1.cross_attn.heads": hooks.zero()})
    assert (silenced - logits).abs().max() > 1e-4, "silencing cross-attention must change the output"


def test_an_attention_only_gpt_has_no_feed_forward_and_generates_the_same_with_the_fast_path():
    model = gpt("attention_only")
    names = [n for n, _ in model.named_parameters()]
    assert not any(".mlp." in n or ".ln_2." in n for n in names), [n for n in names if "mlp" in n or "ln_2" in n]
    prompt = torch.randint(0, 23, (2, 3), generator=torch.Generator().manual_seed(4))
    fast = model.generate(prompt, 12)  # packed decode steps (minigpt/decode_step.py)
    slow = model.generate(prompt, 12, use_cache=False)  # the whole prefix each step
    assert torch.equal(fast, slow), f"attention-only generation differs: {fast.tolist()} vs {slow.tolist()}"
