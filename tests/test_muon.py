"""Muon (common/train/muon.py): Newton-Schulz, one step by hand, the parameter split, --optim muon, resume.

Wrong versions these tests catch: Newton-Schulz without the Frobenius normalisation (singular values
blow up), with the cubic (1.5, -0.5, 0) iteration (small singular values stay small in five steps),
without the transpose of a tall matrix (wrong shape); a step without Nesterov or with the momentum
summed rather than averaged, without the sqrt(out / in) scale, with the weight decay left out; an
embedding or the output layer put on Muon; momentum lost on resume.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from common.hub.pretrained import load_state_dict
from common.train.args import TrainingArguments
from common.train.muon import NS_COEFFICIENTS, Muon, muon_parameter_split, newton_schulz
from common.train.optim import create_optimizer
from common.train.trainer import Trainer

BAND = (0.68, 1.21)  # where five quintic steps send every normalised singular value in [2e-3, 1]


def quintic_five_times(x: torch.Tensor) -> torch.Tensor:
    """p(p(p(p(p(x))))) with p(s) = a s + b s^3 + c s^5, on numbers (the spectral view of NS_5)."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(5):
        x = a * x + b * x ** 3 + c * x ** 5
    return x


def test_five_quintic_steps_send_every_value_from_2e_3_to_1_into_the_band():
    x = torch.logspace(math.log10(2e-3), 0, 20001, dtype=torch.float64)
    y = quintic_five_times(x)
    assert BAND[0] <= y.min().item() and y.max().item() <= BAND[1], f"p^5 range [{y.min():.4f}, {y.max():.4f}]"
    cubic = x.clone()
    for _ in range(5):  # the textbook cubic iteration is far from orthogonal after five steps
        cubic = 1.5 * cubic - 0.5 * cubic ** 3
    assert cubic.min() < 0.1, "the cubic iteration should not reach the band in 5 steps"


@settings(deadline=None, max_examples=25)
@given(rows=st.integers(1, 24), cols=st.integers(1, 24), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10**6))
def test_newton_schulz_keeps_the_singular_vectors_and_maps_each_singular_value_by_p5(rows, cols, scale, seed):
    """M = U S V^T -> U p^5(S / ||M||_F) V^T: the reference is the SVD, not the iteration."""
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    expected = u @ torch.diag(quintic_five_times(s / (s.square().sum().sqrt() + 1e-7))) @ vh
    got = newton_schulz(g).double()
    assert got.shape == g.shape
    error = (got - expected).abs().max().item()
    assert error < 1e-4, f"{rows}x{cols}: NS_5 differs from U p^5(S) V^T by {error:.2e}"


@pytest.mark.parametrize("shape", [(32, 32), (16, 64), (64, 16), (128, 512)])
def test_orthogonalised_random_gradients_have_every_singular_value_in_the_band(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 5.0
    s = torch.linalg.svdvals(newton_schulz(g))
    before = torch.linalg.svdvals(g)
    assert BAND[0] <= s.min() and s.max() <= BAND[1], (
        f"{shape}: singular values {s.min():.3f}..{s.max():.3f} (input {before.min():.3f}..{before.max():.3f}) "
        f"outside {BAND}")


def test_newton_schulz_on_a_batch_equals_one_matrix_at_a_time():
    g = torch.randn(3, 8, 5, generator=torch.Generator().manual_seed(2))
    batched = newton_schulz(g)
    for i in range(3):
        torch.testing.assert_close(batched[i], newton_schulz(g[i]), atol=1e-6, rtol=0)


def test_two_muon_steps_on_a_fixed_matrix_equal_the_formulas_by_hand():
    """W (3, 2) tall: s = sqrt(3/2); mu = 0.9, lr = 0.1, lambda = 0.5; gradients G1 then G2."""
    w0 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], dtype=torch.float64)
    g1 = torch.tensor([[0.2, 0.1], [-0.3, 0.4], [0.0, 1.0]], dtype=torch.float64)
    g2 = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    mu, lr, decay = 0.9, 0.1, 0.5
    param = nn.Parameter(w0.clone())
    optimizer = Muon([{"params": [param], "lr": lr, "momentum": mu, "weight_decay": decay, "use_muon": True}])

    def orthogonalise(m):  # by the SVD: U p^5(S / ||M||_F) V^T
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u @ torch.diag(quintic_five_times(s / (m.norm() + 1e-7))) @ vh

    w, buffer = w0.clone(), torch.zeros_like(w0)
    for g in (g1, g2):
        param.grad = g.clone()
        optimizer.step()
        buffer = mu * buffer + (1 - mu) * g
        look_ahead = mu * buffer + (1 - mu) * g
        w = w * (1 - lr * decay) - lr * math.sqrt(3 / 2) * orthogonalise(look_ahead)
        torch.testing.assert_close(param.detach(), w, atol=1e-5, rtol=0,
                                   msg=lambda m: f"Muon step differs from the formula: {m}")
    torch.testing.assert_close(optimizer.state[param]["momentum_buffer"], buffer, atol=1e-12, rtol=0)


class Tiny(nn.Module):
    def __init__(self, tie: bool = True):
        super().__init__()
        self.wte = nn.Embedding(11, 8)
        self.block = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.norm = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 11, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight


def test_hidden_matrices_go_to_muon_embeddings_output_layer_and_vectors_to_adamw():
    for tie in (True, False):
        model = Tiny(tie)
        names = {id(p): n for n, p in model.named_parameters()}
        muon, adam = muon_parameter_split(model)
        assert sorted(names[id(p)] for p in muon) == ["block.0.weight", "block.2.weight"]
        expected = ["block.0.bias", "block.2.bias", "norm.bias", "norm.weight", "wte.weight"]
        expected += [] if tie else ["lm_head.weight"]
        assert sorted(names[id(p)] for p in adam) == sorted(expected), f"tie={tie}"


def test_the_adamw_groups_step_exactly_like_torch_adamw():
    torch.manual_seed(0)
    model, reference = Tiny(tie=False), Tiny(tie=False)
    reference.load_state_dict(model.state_dict())
    ours = create_optimizer(model, 1e-2, 0.1, (0.8, 0.95), 1e-6, optim="muon")
    theirs = create_optimizer(reference, 1e-2, 0.1, (0.8, 0.95), 1e-6)
    for _ in range(3):  # the same gradients for both (a loss would see Muon's different matrices)
        grads = {name: torch.randn_like(p) for name, p in model.named_parameters()}
        for m, opt in ((model, ours), (reference, theirs)):
            for name, p in m.named_parameters():
                p.grad = grads[name].clone()
            opt.step()
    for name in ("wte.weight", "lm_head.weight", "norm.weight", "block.0.bias"):
        torch.testing.assert_close(model.get_parameter(name), reference.get_parameter(name), atol=1e-6, rtol=0,
                                   msg=lambda m: f"{name} (AdamW under Muon) differs from torch.optim.AdamW: {m}")


def test_muon_on_a_model_with_no_hidden_matrix_is_one_clear_error():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))
    with pytest.raises(ConfigError) as error:
        create_optimizer(model, 1e-3, optim="muon")
    message = str(error.value)
    assert "\n" not in message and "muon" in message and "--optim adamw_torch" in message, message


def test_bad_optim_flags_fail_at_construction():
    for bad in (dict(optim="sgd"), dict(muon_momentum=1.0), dict(muon_learning_rate=-1.0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainingArguments(output_dir="x", **bad)


def test_resume_restores_the_momentum_and_ends_on_the_uninterrupted_weights(tmp_path):
    """8 steps straight against 4 steps, a checkpoint, and 4 more from it: equal weights."""
    from _trainer_toys import RaggedTokenDataset, ToyTokenizer, ToyTokenLM

    def run(output_dir, max_steps, resume=None):
        torch.manual_seed(0)
        model = ToyTokenLM()
        args = TrainingArguments(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4,
                                 learning_rate=1e-2, muon_learning_rate=0.05, optim="muon", warmup_steps=2,
                                 save_steps=4, logging_steps=1, use_cpu=True, disable_tqdm=True, seed=5,
                                 lr_scheduler_type="constant_with_warmup")
        trainer = Trainer(model, args, train_dataset=RaggedTokenDataset(n=40), tokenizer=ToyTokenizer())
        trainer.train(resume_from_checkpoint=resume)
        return model, trainer

    straight, _ = run(tmp_path / "a", 8)
    _, first = run(tmp_path / "b", 4)
    saved = torch.load(tmp_path / "b" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    buffers = [s for s in saved["state"].values() if "momentum_buffer" in s]
    assert len(buffers) == 1 and buffers[0]["momentum_buffer"].abs().sum() > 0, "no Muon momentum in the checkpoint"
    resumed, trainer = run(tmp_path / "b", 8, resume=str(tmp_path / "b" / "checkpoint-4"))
    assert isinstance(trainer.optimizer, Muon)
    for name, weight in straight.state_dict().items():
        assert torch.equal(weight, resumed.state_dict()[name]), f"{name} after resume differs from the straight run"


def test_minigpt_train_with_optim_muon(tmp_path, capsys):
    from minigpt.train import main as train_main

    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    out = tmp_path / "out"
    assert train_main(["--train_file", str(text), "--output_dir", str(out), "--optim", "muon",
                       "--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=16", "--max_steps", "4",
                       "--bf16", "false", "--use_cpu", "--disable_tqdm", "--save_strategy", "no",
                       "--sample_tokens", "0"]) == 0
    assert (out / "eval_results.json").exists() and "eval_loss" in capsys.readouterr().out
