"""Row 5: bfloat16 autocast on the CPU against float32, for our GPT and BERT training steps at a
larger size, and the loss curve of the two over a few hundred steps.

Under torch.autocast("cpu", dtype=torch.bfloat16) the matrix products run in bf16 (8 bits of
mantissa instead of 23) with float32 accumulation, while the parameters, the optimizer and our
losses stay float32 (common.nn.losses upcasts the logits). CPUs with AMX or AVX512-BF16 multiply
bf16 matrices several times faster than float32 ones (bench/machine.py measures both peaks).
The loss curve shows whether the lower precision changes training: the same initial weights and
batches, fp32 and bf16 side by side, losses averaged over windows of 10 steps.
"""
from __future__ import annotations

import contextlib

import torch

from bench import bert_pretrain, gpt_train
from bench.data import bert_batches, gpt_batches, gpt_data_source
from bench.gpt_train import train_step
from bench.timing import interleaved, ratio

GPT_LARGE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, batch_size=8)
BERT_LARGE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                  vocab_size=8000, seq_len=256, batch_size=8)
QUICK_GPT = gpt_train.QUICK
QUICK_BERT = bert_pretrain.QUICK


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def with_autocast(forward, enabled: bool):
    def run(model, batch):
        with autocast(enabled):
            return forward(model, batch)
    return run


def speedups(quick: bool, repeats: int) -> dict:
    """fp32 vs bf16-autocast step time of our GPT and our BERT (each pair interleaved)."""
    out = {}
    gpt_size = QUICK_GPT if quick else GPT_LARGE
    gpt_data = gpt_batches(4, gpt_size["batch_size"], gpt_size["block_size"], gpt_size["vocab_size"])
    hf = gpt_train.hf_gpt2(gpt_size)
    gpt = {"fp32": gpt_train.ours_from_hf(hf), "bf16": gpt_train.ours_from_hf(hf)}
    bert_size = QUICK_BERT if quick else BERT_LARGE
    bert_data = bert_batches(4, bert_size["batch_size"], bert_size["seq_len"], bert_size["vocab_size"])
    hf_bert = bert_pretrain.hf_bert(bert_size)
    bert = {"fp32": bert_pretrain.ours_from_hf(hf_bert), "bf16": bert_pretrain.ours_from_hf(hf_bert)}
    for name, models, data, forward, size, tokens in (
            ("GPT", gpt, gpt_data, gpt_train.ours_loss, gpt_size,
             gpt_size["batch_size"] * gpt_size["block_size"]),
            ("BERT", bert, bert_data, bert_pretrain.pretraining_loss, bert_size,
             bert_size["batch_size"] * bert_size["seq_len"])):
        steps = {precision: train_step(model, data, with_autocast(forward, precision == "bf16"))
                 for precision, model in models.items()}
        t = interleaved(steps, repeats=1 if quick else repeats, steps=1, warmup=1)
        out[name] = dict(size=size, fp32_ms=t["fp32"].median * 1e3, bf16_ms=t["bf16"].median * 1e3,
                         fp32_spread=t["fp32"].spread, bf16_spread=t["bf16"].spread,
                         tokens_per_s_bf16=tokens / t["bf16"].median, speedup=ratio(t["fp32"], t["bf16"]))
    return out


def loss_curves(steps: int, window: int = 10, quick: bool = False) -> dict:
    """Train our row-1 GPT twice from the same weights on the same batches, fp32 and bf16
    autocast, alternating step by step; mean loss per window of `window` steps."""
    size = QUICK_GPT if quick else gpt_train.FULL
    data = gpt_batches(steps, size["batch_size"], size["block_size"], size["vocab_size"], seed=1)
    hf = gpt_train.hf_gpt2(size)
    runs = {p: train_step(gpt_train.ours_from_hf(hf), data, with_autocast(gpt_train.ours_loss, p == "bf16"),
                          lr=1e-3) for p in ("fp32", "bf16")}
    losses = {p: [] for p in runs}
    for _ in range(steps):
        for p, step in runs.items():
            losses[p].append(step().item())
    points = []
    for start in range(0, steps, window):
        fp32 = sum(losses["fp32"][start:start + window]) / len(losses["fp32"][start:start + window])
        bf16 = sum(losses["bf16"][start:start + window]) / len(losses["bf16"][start:start + window])
        points.append(dict(step=start + window, fp32=fp32, bf16=bf16))
    return dict(size=size, steps=steps, window=window, points=points,
                data=gpt_data_source(size["vocab_size"]))


def plot(curves: dict, path) -> bool:
    """Save the two loss curves as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [p["step"] for p in curves["points"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    for precision in ("fp32", "bf16"):
        ax.plot(steps, [p[precision] for p in curves["points"]], label=precision)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean of {curves['window']} steps)")
    ax.set_title("GPT (row 1 size): fp32 vs bf16 autocast")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run(quick: bool = False, repeats: int = 3, curve_steps: int = 300) -> dict:
    return dict(row="bf16 autocast", speedups=speedups(quick, repeats),
                curves=loss_curves(20 if quick else curve_steps, window=10, quick=quick))
