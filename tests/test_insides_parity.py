"""Every family's insides against transformers (the test-only oracle), layer by layer, to 1e-5.

output_hidden_states=True and output_attentions=True must return transformers' fields with
transformers' numbers on the same perturbed weights (a default init hides a dropped bias or norm):
    GPT-2 and Llama (GQA: 2 key/value heads for 4 query heads)   hidden_states, attentions
    T5ForConditionalGeneration   encoder_/decoder_hidden_states, encoder_/decoder_attentions, cross_attentions
BERT's are checked by tests/test_bert_parity.py::test_hidden_states_and_attentions_match_transformers.
The convention under test: L + 1 hidden states, the embeddings first, the LAST after the final norm
(not the last block's raw output); attentions are the softmax weights (B, H, T_q, T_k) per layer.
Rows with padding are compared at the real queries only (a padded query's row is never used).
"""
import warnings

import pytest
import torch

from minigpt import GPT, GPTConfig
from minit5 import T5Config, T5ForConditionalGeneration

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")

TOL = 1e-5


def perturb(model, scale=0.2):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def assert_layers_equal(ours, theirs, what, real=None):
    """Compare tuples of per-layer tensors; `real` (B, T) bool selects the real query positions."""
    assert ours is not None, f"{what}: ours returned None"
    assert len(ours) == len(theirs), f"{what}: {len(ours)} tensors, transformers gives {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {tuple(a.shape)} != transformers' {tuple(b.shape)}"
        if real is not None:  # (B, T, d) or (B, H, T, T_k): keep the real query rows
            a, b = (a[real] if a.dim() == 3 else a.transpose(1, 2)[real]), \
                   (b[real] if b.dim() == 3 else b.transpose(1, 2)[real])
        diff = (a - b).abs().max().item()
        assert diff <= TOL, f"{what}[{i}] differs from transformers by {diff:.2e} > {TOL}"


def gpt_pair(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=3, n_head=4, n_embd=32, n_positions=32, vocab_size=50,
                                         bos_token_id=1, eos_token_id=1)
        hf = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=88, num_hidden_layers=3,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                          tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
        hf = transformers.LlamaForCausalLM
    config._attn_implementation = "eager"
    hf = perturb(hf(config))
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = GPT.from_pretrained(tmp_path).eval()
    return hf, ours


@pytest.mark.parametrize("kind", ["gpt2", "llama_gqa"])
def test_gpt_hidden_states_and_attentions_equal_transformers_layer_by_layer(kind, tmp_path):
    hf, ours = gpt_pair(kind, tmp_path)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 50, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0  # right padding in row 1
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        mine = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    real = mask.bool()
    assert len(mine.hidden_states) == ours.config.n_layer + 1
    assert_layers_equal(mine.hidden_states, theirs.hidden_states, f"{kind} hidden_states", real)
    assert_layers_equal(mine.attentions, theirs.attentions, f"{kind} attentions", real)
    if kind == "llama_gqa":
        assert mine.attentions[0].shape[1] == 4, "GQA: one pattern per QUERY head (4), not per kv head (2)"
    head = ours.lm_head(mine.hidden_states[-1])
    assert (head - mine.logits).abs().max() <= TOL, "the last hidden state is the one the LM head reads"


def test_insides_are_off_by_default_and_do_not_change_the_logits():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=20)).eval()
    ids = torch.randint(0, 20, (1, 9))
    plain = model(ids)
    assert plain.hidden_states is None and plain.attentions is None
    inside = model(ids, output_hidden_states=True, output_attentions=True)
    assert torch.equal(plain.logits, inside.logits)


def test_t5_encoder_decoder_and_cross_insides_equal_transformers_layer_by_layer():
    kw = dict(vocab_size=40, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_decoder_layers=3, num_heads=3,
              relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0)
    hf = perturb(transformers.T5ForConditionalGeneration(
        transformers.T5Config(**kw, decoder_start_token_id=0, attn_implementation="eager")))
    ours = T5ForConditionalGeneration(T5Config(**kw))
    missing, unexpected = ours.load_pretrained_state_dict(hf.state_dict())
    assert missing == [] and unexpected == [], (missing, unexpected)
    ours.eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, 40, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    labels = torch.randint(2, 40, (2, 6), generator=g)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                    output_attentions=True)
        mine = ours(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                    output_attentions=True)
    assert len(mine.encoder_hidden_states) == 3 and len(mine.decoder_hidden_states) == 4
    assert_layers_equal(mine.encoder_hidden_states, theirs.encoder_hidden_states, "encoder_hidden_states",
                        mask.bool())
    assert_layers_equal(mine.encoder_attentions, theirs.encoder_attentions, "encoder_attentions", mask.bool())
    assert_layers_equal(mine.decoder_hidden_states, theirs.decoder_hidden_states, "decoder_hidden_states")
    assert_layers_equal(mine.decoder_attentions, theirs.decoder_attentions, "decoder_attentions")
    assert_layers_equal(mine.cross_attentions, theirs.cross_attentions, "cross_attentions")
    assert mine.cross_attentions[0].shape == (2, 3, 6, 9), "cross-attention is (B, H, T, S)"
    assert abs(mine.loss.item() - theirs.loss.item()) <= TOL
