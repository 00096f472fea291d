"""Activation checkpointing (common/nn/checkpointing.py, gradient_checkpointing_enable on the three
families, --gradient_checkpointing through TrainingArguments): recomputing each block in the backward
gives the gradients of the run that keeps every activation, bit for bit without dropout, and with
dropout too (the RNG state at each block's start is replayed, so the same masks are drawn)."""
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


def gpt(dropout):
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=20, block_size=12, dropout=dropout))
    ids = torch.randint(0, 20, (2, 12))
    mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    return model, lambda: model(ids, attention_mask=mask, labels=ids).loss


def bert(dropout):
    model = BertForMaskedLM(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16,
                                       intermediate_size=32, vocab_size=30, hidden_dropout_prob=dropout,
                                       attention_probs_dropout_prob=dropout))
    ids = torch.randint(0, 30, (2, 10))
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    return model, lambda: model(ids, attention_mask=mask, labels=ids).loss


def t5(dropout):
    model = T5ForConditionalGeneration(T5Config(num_layers=2, num_heads=2, d_model=16, d_kv=8, d_ff=32,
                                                vocab_size=30, dropout_rate=dropout))
    ids, labels = torch.randint(1, 30, (2, 9)), torch.randint(1, 30, (2, 7))
    return model, lambda: model(ids, attention_mask=torch.ones(2, 9, dtype=torch.long), labels=labels).loss


def gradients(model, loss, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = loss()
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", [gpt, bert, t5], ids=["gpt", "bert", "t5"])
@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["no_dropout", "dropout"])
def test_checkpointed_gradients_are_bit_equal_to_the_plain_run(family, dropout):
    torch.manual_seed(0)
    model, loss = family(dropout)
    model.train()
    plain_loss, plain = gradients(model, loss, seed=7)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ckpt_loss, ckpt = gradients(model, loss, seed=7)
    assert torch.equal(plain_loss, ckpt_loss), f"loss {plain_loss.item()} vs {ckpt_loss.item()} with checkpointing"
    assert plain.keys() == ckpt.keys()
    for name in plain:
        diff = (plain[name] - ckpt[name]).abs().max().item()
        assert torch.equal(plain[name], ckpt[name]), f"{name}: gradient differs by {diff:.2e} with checkpointing"
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
