"""Activation checkpointing (common/nn/checkpointing.py, gradient_checkpointing_enable on the three
families, --gradient_checkpointing through TrainingArguments): recomputing in the backward, whole
blocks ("full") or all but the Linears' outputs ("selective"), gives the gradients of the run that
keeps every activation, bit for bit without dropout, and with dropout too (the RNG state at each
block's start is replayed, so the same masks are drawn)."""
import pytest
import torch

from common.errors import ConfigError, UserError
from common.train.args import TrainingArguments
from common.train.measure import peak_allocated_bytes
from minibert.config import BertConfig
from minibert.heads import BertForMaskedLM
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration


def gpt(dropout, T=12):
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=20, block_size=T, dropout=dropout))
    ids = torch.randint(0, 20, (2, T))
    mask = torch.tensor([[1] * T, [1] * (T - 4) + [0] * 4])
    return model, lambda: model(ids, attention_mask=mask, labels=ids).loss


def bert(dropout, T=10):
    model = BertForMaskedLM(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                                       intermediate_size=32, vocab_size=30, hidden_dropout_prob=dropout,
                                       attention_probs_dropout_prob=dropout))
    ids = torch.randint(0, 30, (2, T))
    mask = torch.tensor([[1] * T, [1] * (T - 4) + [0] * 4])
    return model, lambda: model(ids, attention_mask=mask, labels=ids).loss


def t5(dropout, T=9):
    model = T5ForConditionalGeneration(T5Config(num_layers=2, num_heads=2, d_model=16, d_kv=8, d_ff=32,
                                                vocab_size=30, dropout_rate=dropout))
    ids, labels = torch.randint(1, 30, (2, T)), torch.randint(1, 30, (2, T - 2))
    return model, lambda: model(ids, attention_mask=torch.ones(2, T, dtype=torch.long), labels=labels).loss


def gradients(model, loss, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = loss()
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", [gpt, bert, t5], ids=["gpt", "bert", "t5"])
@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("granularity", [None, "full", "selective"], ids=["default", "full", "selective"])
def test_checkpointed_gradients_are_bit_equal_to_the_plain_run(family, dropout, granularity):
    torch.manual_seed(0)
    model, loss = family(dropout)
    model.train()
    plain_loss, plain = gradients(model, loss, seed=7)
    if granularity is None:
        model.gradient_checkpointing_enable()  # "full"
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"granularity": granularity})
    assert model.is_gradient_checkpointing
    ckpt_loss, ckpt = gradients(model, loss, seed=7)
    assert torch.equal(plain_loss, ckpt_loss), (
        f"loss {plain_loss.item()} vs {ckpt_loss.item()} with {granularity or 'full'} checkpointing")
    assert plain.keys() == ckpt.keys()
    for name in plain:
        diff = (plain[name] - ckpt[name]).abs().max().item()
        assert torch.equal(plain[name], ckpt[name]), (
            f"{name}: gradient differs by {diff:.2e} with {granularity or 'full'} checkpointing")
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


def test_checkpointing_keeps_less_for_the_backward():
    """Four layers at T = 64: the checkpointed forward keeps each block's input only."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=4, n_head=2, n_embd=32, vocab_size=20, block_size=64))
    ids = torch.randint(0, 20, (2, 64))
    step = lambda: model(ids, labels=ids).loss.backward()  # noqa: E731
    plain = peak_allocated_bytes(step)
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable()
    ckpt = peak_allocated_bytes(step)
    assert ckpt * 1.5 <= plain, f"peak {ckpt} bytes with checkpointing, {plain} without: not 1.5x less"


def test_each_granularity_keeps_what_its_formula_says_per_layer():
    """Activations the forward pass leaves for the backward, per layer (4 layers minus 2 layers, halved):
    plain 16 B T d + B h T^2 + 4 B T (norm statistics), + the (T, T) bool mask masked_fill keeps; full
    B T d (the block's input); selective the plain terms without the (T x T) ones. Each checkpointed
    block (full) or attention core (selective) also keeps the RNG state it replays. A selective that
    kept the attention weights, or a full that kept more than the input, would fail here."""
    B, T, d, h = 2, 64, 32, 4

    def kept(n_layer, granularity):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=n_layer, n_head=h, n_embd=d, vocab_size=20, block_size=T))
        if granularity:
            model.gradient_checkpointing_enable({"granularity": granularity})
        ids = torch.randint(0, 20, (B, T))
        return kept_by_the_forward(lambda: model(ids, labels=ids).loss)

    rng_state = torch.get_rng_state().numel()  # bytes: the CPU generator's state, kept per checkpoint
    expected = {"full": 4 * B * T * d + rng_state, "selective": 4 * (16 * B * T * d + 4 * B * T) + rng_state,
                None: 4 * (16 * B * T * d + B * h * T * T + 4 * B * T) + T * T}
    for granularity, numbers in expected.items():
        per_layer = (kept(4, granularity) - kept(2, granularity)) / 2
        # within 64 bytes (a scalar or two); a wrong choice is off by at least B T numbers (512 bytes)
        assert abs(per_layer - numbers) <= 64, (
            f"{granularity or 'plain'}: {per_layer:,.0f} bytes kept per layer, the formula says {numbers:,}")


def kept_by_the_forward(loss) -> int:
    """Bytes that stay allocated after the forward pass while its graph is alive (what the backward reads)."""
    from common.train.measure import allocated_bytes

    graph = {}

    def forward():
        graph["loss"] = loss()
    return allocated_bytes(forward)[1]


@pytest.mark.parametrize("family", [gpt, bert, t5], ids=["gpt", "bert", "t5"])
def test_each_granularity_keeps_less_than_the_plain_run_in_every_family(family):
    """Full keeps less than selective, selective less than plain: each family's stacks and attention
    layers act on the granularity (a family whose attention ignored "selective" would keep as much as
    plain and still pass the gradient test). T = 64, so the (T x T) weights outweigh the RNG state
    (5 KB) each checkpoint keeps."""
    torch.manual_seed(0)
    model, loss = family(0.0, T=64)
    model.train()
    kept = {"plain": kept_by_the_forward(loss)}
    for granularity in ("selective", "full"):
        model.gradient_checkpointing_enable({"granularity": granularity})
        kept[granularity] = kept_by_the_forward(loss)
    assert kept["full"] < kept["selective"] < kept["plain"], f"bytes kept after the forward: {kept}"


def test_an_unknown_granularity_or_key_is_one_clear_error():
    model, _ = gpt(0.0)
    with pytest.raises(UserError, match=r"granularity must be one of \('full', 'selective'\), got 'partial'"):
        model.gradient_checkpointing_enable({"granularity": "partial"})
    with pytest.raises(UserError, match=r"unknown key\(s\) \['policy'\]"):
        model.gradient_checkpointing_enable({"policy": "selective"})
    with pytest.raises(UserError, match="use_reentrant=True is not supported"):
        model.gradient_checkpointing_enable({"use_reentrant": True})
    model.gradient_checkpointing_enable({"use_reentrant": False})  # transformers' common argument: accepted
    assert model.is_gradient_checkpointing
    for bad, field_error in [('{"granularity": "partial"}', "granularity must be one of"),
                             ("[1]", "must be a JSON object"), ("{granularity", "not valid JSON")]:
        with pytest.raises(ConfigError, match=f"^gradient_checkpointing_kwargs: .*{field_error}"):
            TrainingArguments(output_dir="unused", gradient_checkpointing=True, gradient_checkpointing_kwargs=bad)
    with pytest.raises(ConfigError, match="only with --gradient_checkpointing"):
        TrainingArguments(output_dir="unused", gradient_checkpointing_kwargs={"granularity": "selective"})


def test_a_model_that_cannot_checkpoint_says_so_in_one_line():
    from common.hub.pretrained import PreTrainedModel
    from common.train.trainer import Trainer

    class Plain(PreTrainedModel):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

    with pytest.raises(UserError, match="Plain cannot recompute its blocks"):
        Plain().gradient_checkpointing_enable()
    with pytest.raises(ConfigError, match="--gradient_checkpointing: Linear cannot recompute its blocks"):
        Trainer(torch.nn.Linear(2, 2), TrainingArguments(output_dir="unused", gradient_checkpointing=True))._wrap_model()


def test_the_flag_reaches_the_trainer_through_the_shared_training_flags(tmp_path):
    import argparse

    from common.cli.training import add_training_flags, training_arguments
    from common.train.trainer import Trainer

    parser = argparse.ArgumentParser()
    add_training_flags(parser, {})
    args = training_arguments(parser.parse_args(["--output_dir", str(tmp_path), "--gradient_checkpointing"]))
    assert args.gradient_checkpointing is True
    model, _ = gpt(0.0)
    Trainer(model, args)._wrap_model()
    assert model.is_gradient_checkpointing, "--gradient_checkpointing did not enable checkpointing"
    assert model.transformer.gradient_checkpointing == "full", "the default granularity is full-block recompute"
    args = training_arguments(parser.parse_args(["--output_dir", str(tmp_path), "--gradient_checkpointing",
                                                 "--gradient_checkpointing_kwargs", '{"granularity": "selective"}']))
    model, _ = gpt(0.0)
    Trainer(model, args)._wrap_model()
    assert model.transformer.gradient_checkpointing == "selective", (
        f"--gradient_checkpointing_kwargs did not reach the model: {model.transformer.gradient_checkpointing!r}")
