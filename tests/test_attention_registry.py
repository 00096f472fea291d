"""The attention-implementation registry (common/nn/attention.py): chosen once per model, never per layer.

(Every registered implementation's numbers against the hand-written path: tests/test_attention.py.)
"""
from common.nn.attention import MultiHeadAttention, set_attn_implementation


def test_no_block_or_layer_constructor_takes_attn_impl():
    """The implementation is chosen once per model (set_attn_implementation), never threaded through layers."""
    import inspect

    from common.nn import blocks
    for cls in (MultiHeadAttention, blocks.EncoderAttention, blocks.EncoderBlock, blocks.DecoderBlock):
        assert "attn_impl" not in inspect.signature(cls.__init__).parameters, f"{cls.__name__}.__init__ takes attn_impl"


def test_a_model_switches_every_attention_layer_at_once():
    from minigpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, attn_impl="sdpa"))
    impls = {m.attn_impl for m in model.modules() if isinstance(m, MultiHeadAttention)}
    assert impls == {"sdpa"}, f"config attn_impl='sdpa' gave layers with {impls}"
    set_attn_implementation(model, "eager")
    impls = {m.attn_impl for m in model.modules() if isinstance(m, MultiHeadAttention)}
    assert impls == {"eager"} and model.config.attn_impl == "eager", f"after switching: {impls}, {model.config.attn_impl}"
