"""Row 1: one GPT training step (forward, L_LM, backward, AdamW), ours against transformers'
GPT2LMHeadModel with the same weights, the same batches and the same optimizer.

Tokens per second = B T / step time. Model FLOPs utilisation (MFU, as in the PaLM paper and
nanoGPT's estimate_mfu), with N = parameters without the position table (wte counted once):
    FLOPs per step = (6 N + 12 L T d) B T      6N: forward 2N + backward 4N per token;
                                                12 L T d: Q K^T and A V, forward + backward
    MFU = FLOPs per step / step time / measured fp32 matmul peak: the larger of the peak measured
          at the start (bench/machine.py) and a 1024^3 product timed interleaved with the steps
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import torch

from bench.data import cycle, gpt_batches
from bench.timing import interleaved, per_repeat_ms, ratio
from minigpt import GPT, GPTConfig

FULL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, batch_size=12)
QUICK = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, batch_size=2)


def hf_gpt2(size: dict, seed: int = 0, attn_implementation: str = "sdpa"):
    """transformers' GPT2LMHeadModel, no dropout, randomly initialised with `seed`."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(
        n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"],
        n_positions=size["block_size"], vocab_size=size["vocab_size"], resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    model.config._attn_implementation = attn_implementation
    return model


def ours_from_hf(hf, attn_impl: str = "eager") -> GPT:
    """Our GPT with the transformers model's weights (GPT.convert_state_dict splits c_attn)."""
    c = hf.config
    config = GPTConfig(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions,
                       vocab_size=c.vocab_size, dropout=0.0, attn_impl=attn_impl)
    model = GPT(config)
    model.load_state_dict(GPT.convert_state_dict(hf.state_dict(), config))
    return model


def train_step(model, batches, forward: Callable, lr: float = 3e-4) -> Callable[[], float]:
    """A closure doing one AdamW step on the next batch; returns the loss (as a tensor)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    model.train()
    stream = cycle(batches)

    def step():
        x = next(stream)
        loss = forward(model, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def hf_loss(model, x):
    return model(input_ids=x, labels=x).loss


def ours_loss(model, x):
    return model(x, labels=x).loss


def flops_per_step(model: GPT, batch_size: int) -> float:
    """(6 N + 12 L T d) B T, N = parameters without the position table."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    T = c.block_size
    return (6 * n + 12 * c.n_layer * T * c.n_embd) * batch_size * T


def matrix_products(size: dict) -> Callable[[], None]:
    """The matrix products of one training step of row 1's GPT, and nothing else, on random
    tensors of the same shapes and layouts (N = B T rows, per Linear (in -> out)):
        forward   addmm: (N, in) (in, out)                    y = x W^T + b
        backward  mm: (N, out) (out, in)  and  (out, N) (N, in)   dL/dx = g W,  dL/dW = g^T x
        attention bmm: Q K^T and A V forward, dA, dV, dQ, dK backward, (B H) heads of (T, d_k)
    plus the tied LM head (d -> V). Any implementation of the step must do these products."""
    B, T, d, V, H = (size[k] for k in ("batch_size", "block_size", "n_embd", "vocab_size", "n_head"))
    N, d_k, L = B * T, d // H, size["n_layer"]
    linears = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]  # (in, out): Q, K, V, W^O, c_fc, c_proj
    W = {(i, o): torch.randn(o, i) for i, o in linears + [(d, V)]}
    b = {o: torch.randn(o) for o in (d, 4 * d)}
    x = {i: torch.randn(N, i) for i in (d, 4 * d)}
    g = {o: torch.randn(N, o) for o in (d, 4 * d, V)}
    q, k, v, grad_out = (torch.randn(B * H, T, d_k) for _ in range(4))
    a = torch.randn(B * H, T, T)

    def products():
        for _ in range(L):
            for i, o in linears:
                torch.addmm(b[o], x[i], W[(i, o)].t())
                g[o].mm(W[(i, o)])
                g[o].t().mm(x[i])
            torch.bmm(q, k.transpose(1, 2)), torch.bmm(a, v)
            torch.bmm(grad_out, v.transpose(1, 2)), torch.bmm(a.transpose(1, 2), grad_out)
            torch.bmm(a, k), torch.bmm(a.transpose(1, 2), q)
        x[d].mm(W[(d, V)].t()), g[V].mm(W[(d, V)]), g[V].t().mm(x[d])
    return products


def optimizer_only(model) -> Callable[[], None]:
    """torch.optim.AdamW's step over a copy of model's parameters with fixed gradients."""
    params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return torch.optim.AdamW(params, lr=3e-4, weight_decay=0.1).step


def compiled_step(hf, batches) -> Callable[[], float] | None:
    """A training step of torch.compile(our model) (opt-in row), compiled now by one call; None
    (with a warning) when this machine cannot compile, e.g. without a C++ compiler."""
    step = train_step(torch.compile(ours_from_hf(hf)), batches, ours_loss)
    try:
        step()
    except Exception as error:  # noqa: BLE001 - a missing compiler is reported, not fatal
        warnings.warn(f"torch.compile row skipped: {type(error).__name__}: {str(error)[:200]}")
        return None
    return step


def run(quick: bool = False, repeats: int = 7, steps: int = 3, peak_flops: float | None = None,
        with_compile: bool = False) -> dict:
    size = QUICK if quick else FULL
    B, T = size["batch_size"], size["block_size"]
    batches = gpt_batches(8, B, T, size["vocab_size"])
    hf = hf_gpt2(size)
    ours = ours_from_hf(hf)
    ours_sdpa = ours_from_hf(hf, attn_impl="sdpa")
    with torch.no_grad():  # same weights, same batch: the losses must agree before timing anything
        x = batches[0]
        loss_gap = abs(hf_loss(hf.eval(), x).item() - ours_loss(ours.eval(), x).item())
    candidates = {
        "transformers": train_step(hf, batches, hf_loss),
        "ours": train_step(ours, batches, ours_loss),
        "ours sdpa": train_step(ours_sdpa, batches, ours_loss),
    }
    if with_compile:
        step = compiled_step(hf, batches)
        if step is not None:
            candidates["ours torch.compile"] = step
    # The peak is timed in the same interleaved loop, so MFU divides rates measured under the same load.
    n = 256 if quick else 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    candidates["fp32 matmul peak"] = lambda: a @ b
    # The ceiling: a step cannot be faster than its matrix products plus the optimizer's step.
    candidates["products only"] = matrix_products(size)
    candidates["AdamW only"] = optimizer_only(hf)
    timings = interleaved(candidates, repeats=1 if quick else repeats, steps=1 if quick else steps,
                          warmup=1 if quick else 3)
    interleaved_peak = 2 * n**3 / timings.pop("fp32 matmul peak").median
    products_s, adamw_s = timings.pop("products only").median, timings.pop("AdamW only").median
    peak_flops = interleaved_peak if peak_flops is None else max(peak_flops, interleaved_peak)
    flops = flops_per_step(ours, B)
    base = timings["transformers"]
    rows = {}
    for name, t in timings.items():
        rows[name] = dict(ms=t.median * 1e3, spread=t.spread, tokens_per_s=B * T / t.median,
                          ratio=ratio(base, t),
                          mfu=(flops / t.median / peak_flops) if peak_flops else None)
    ceiling = dict(products_ms=products_s * 1e3, adamw_ms=adamw_s * 1e3,
                   ratio=base.median / (products_s + adamw_s))
    return dict(row="GPT training step", size=size, target=1.5, loss_gap=loss_gap, ceiling=ceiling,
                flops_per_step=flops, peak_flops=peak_flops, interleaved_peak_flops=interleaved_peak,
                candidates=rows, per_repeat_ms=per_repeat_ms(timings))
