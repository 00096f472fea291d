"""What training costs, measured: attention memory and time, activation checkpointing.

    python -m bench.compute attention [--lengths 512 1024 2048] [--heads 4] [--head_dim 64]
    python -m bench.compute checkpointing [--n_layer 12] [--n_embd 128] [--block_size 512] [--batch_size 1] [--repeats 3] [--steps 1] [--clock wall|cpu]
    python -m bench.compute accounting
    python -m bench.compute costs CONFIG [--batch_size 8] [--seq_len 512] [--target_len T] [--gradient_checkpointing]

costs: the predicted parameters, FLOPs per step and training memory (weights, gradients, AdamW
state, activations per layer) of the model a config.json (or a folder holding one) describes;
its model_type picks the family (minigpt, gpt2, llama, bert, t5).

attention: forward + backward of causal self-attention at each length T, three ways: the textbook
path (common/nn/attention.py), the tiled online softmax (common/nn/flash_attention.py) and torch's
fused kernel (F.scaled_dot_product_attention, through sdpa_attention). Memory is the peak of the
bytes allocated during the step (common/train/measure.py, torch's profiler); time is the median
of interleaved repeats (bench/timing.py), so all three see the same load.
checkpointing: one training step (forward, backward) of a GPT plain and with
gradient_checkpointing_enable() at each granularity ("full": whole blocks recomputed; "selective":
the Linears' outputs kept, the attention core recomputed; common/nn/checkpointing.py): the bytes the
forward pass leaves allocated for the backward (the activations), the step's peak and its median time.
Figures and the commands that made them: docs/results/compute.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench.timing import interleaved
from common.errors import UserError, read_text, run_cli
from common.train.accounting import unknown_model_type
from minibert.accounting import estimate as bert_estimate
from minibert.config import BertConfig
from minibert.heads import BertForMaskedLM
from minigpt.accounting import estimate as gpt_estimate
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minit5.accounting import estimate as t5_estimate
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration
from common.nn.attention import scaled_dot_product_attention, sdpa_attention
from common.nn.checkpointing import GRANULARITIES
from common.nn.flash_attention import flash_attention
from common.nn.masks import causal_mask
from common.train.measure import allocated_bytes, peak_allocated_bytes, profiled_flops

MIB = 2**20


def attention_step(attend, q, k, v, mask):
    """One forward + backward of attend(q, k, v, mask) from fresh leaves."""
    def step():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves, mask)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return step


def attention(lengths, heads, head_dim, repeats) -> list[dict]:
    rows = []
    for T in lengths:
        torch.manual_seed(0)
        q, k, v = (torch.randn(1, heads, T, head_dim) for _ in range(3))
        mask = causal_mask(T)
        steps = {"textbook": attention_step(scaled_dot_product_attention, q, k, v, mask),
                 "flash": attention_step(flash_attention, q, k, v, mask),
                 "torch sdpa": attention_step(sdpa_attention, q, k, v, mask)}
        memory = {name: peak_allocated_bytes(step) / MIB for name, step in steps.items()}
        times = interleaved(steps, repeats=repeats, steps=1, warmup=1)
        for name in steps:
            rows.append(dict(T=T, impl=name, peak_mib=memory[name], seconds=times[name].median,
                             spread=times[name].spread))
        base = next(r for r in rows if r["T"] == T and r["impl"] == "textbook")
        for r in rows[-3:]:
            print(f"T={T:5d} {r['impl']:10s} peak {r['peak_mib']:8.1f} MiB "
                  f"({base['peak_mib'] / r['peak_mib']:5.1f}x less than textbook)  "
                  f"step {r['seconds'] * 1e3:8.1f} ms ({r['seconds'] / base['seconds']:4.2f}x textbook, "
                  f"spread {r['spread']:.0%})", flush=True)
    return rows


# ---------------------------------------------------------------- accounting: predicted against measured
# Three tiny sizes per family: (model, its TrainingCost, a function returning the loss of one batch).
# tests/test_accounting.py checks each; `python -m bench.compute accounting` prints them as a table.

def _gpt(size):
    kw, B, T = [(dict(n_layer=1, n_head=2, n_embd=32, vocab_size=50), 4, 32),
                (dict(n_layer=2, n_head=4, n_embd=64, vocab_size=300), 2, 64),
                (dict(n_layer=2, n_head=4, n_embd=32, vocab_size=64), 2, 256)][size]
    config = GPTConfig(**kw, block_size=T)
    model = GPT(config)
    ids = torch.randint(0, config.vocab_size, (B, T))
    return model, gpt_estimate(config, B, T), lambda: model(ids, labels=ids).loss


def _bert(size):
    kw, B, T = [(dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=32, intermediate_size=64, vocab_size=50), 4, 32),
                (dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=256, vocab_size=300), 2, 64),
                (dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=128, vocab_size=100), 2, 256)][size]
    config = BertConfig(**kw, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=256)
    model = BertForMaskedLM(config)
    ids = torch.randint(0, config.vocab_size, (B, T))
    return model, bert_estimate(config, B, T), lambda: model(ids, labels=ids).loss


def _t5(size):
    kw, B, S, T = [(dict(num_layers=1, num_heads=2, d_model=32, d_kv=16, d_ff=64, vocab_size=50), 4, 32, 16),
                   (dict(num_layers=2, num_heads=4, d_model=64, d_kv=16, d_ff=128, vocab_size=300,
                         feed_forward_proj="gated-gelu"), 2, 64, 32),
                   (dict(num_layers=2, num_heads=2, d_model=32, d_kv=16, d_ff=64, vocab_size=100), 2, 128, 128)][size]
    config = T5Config(**kw, dropout_rate=0.0)
    model = T5ForConditionalGeneration(config)
    ids, labels = torch.randint(1, config.vocab_size, (B, S)), torch.randint(1, config.vocab_size, (B, T))
    return model, t5_estimate(config, B, S, T), lambda: model(ids, labels=labels).loss


ACCOUNTING_CASES = {"gpt": _gpt, "bert": _bert, "t5": _t5}


def predicted_and_measured(family: str, size: int) -> dict:
    """One AdamW training step of ACCOUNTING_CASES[family](size): the prediction and the measurement
    (FLOPs of the forward + backward by torch's profiler; peak = weights + AdamW state + the peak
    allocated during a step taken after the first, when the state exists)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, cost, loss = ACCOUNTING_CASES[family](size)
    optimizer = torch.optim.AdamW(model.parameters())

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()
    flops = profiled_flops(lambda: loss().backward())
    optimizer.zero_grad(set_to_none=True)
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if torch.is_tensor(t) and t.dim() > 0)
    return dict(family=family, size=size, parameters=cost.parameters, flops_predicted=cost.flops,
                flops_measured=flops, adamw_predicted=cost.adamw_state, adamw_measured=state,
                activations=cost.activation_bytes, gradients=cost.gradients, peak_predicted=cost.peak,
                peak_measured=cost.weights + state + peak_allocated_bytes(step))


def accounting() -> list[dict]:
    rows = [predicted_and_measured(family, size) for family in ACCOUNTING_CASES for size in range(3)]
    print("| model | parameters | FLOPs predicted | FLOPs profiler | ratio | peak predicted (MiB) | peak measured (MiB) | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['family']}-{r['size']} | {r['parameters']:,} | {r['flops_predicted']:,} | {r['flops_measured']:,} | "
              f"{r['flops_measured'] / r['flops_predicted']:.3f} | {r['peak_predicted'] / MIB:.2f} | "
              f"{r['peak_measured'] / MIB:.2f} | {r['peak_measured'] / r['peak_predicted']:.3f} |", flush=True)
    return rows


def checkpointing(n_layer, n_embd, n_head, block_size, batch_size, repeats, steps=1, clock="wall") -> list[dict]:
    """A GPT's training step (forward + backward) plain, with full and with selective checkpointing.
    clock: "wall" (time.perf_counter) or "cpu" (time.process_time: the CPU seconds of this process)."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size, vocab_size=256)
    models = {"plain": GPT(config)}
    for granularity in GRANULARITIES:  # "full", "selective": the same weights
        models[granularity] = GPT(config)
        models[granularity].load_state_dict(models["plain"].state_dict())
        models[granularity].gradient_checkpointing_enable({"granularity": granularity})
    ids = torch.randint(0, 256, (batch_size, block_size))
    rows = []
    kept = {}

    def forward(model):
        def run():
            kept["loss"] = model(ids, labels=ids).loss  # the graph (and what it keeps) stays alive
        return run

    def step(model):
        def run():
            model(ids, labels=ids).loss.backward()
            model.zero_grad(set_to_none=True)
        return run

    for name, model in models.items():
        _, activations = allocated_bytes(forward(model))
        kept.clear()
        rows.append(dict(impl=name, activations_mib=activations / MIB,
                         peak_mib=peak_allocated_bytes(step(model)) / MIB))
    def forward_only():  # what full recompute adds: one forward of the blocks (here of the whole model)
        with torch.no_grad():
            models["plain"](ids, labels=ids)

    times = interleaved({**{name: step(m) for name, m in models.items()}, "forward only": forward_only},
                        repeats=repeats, steps=steps, warmup=1,
                        clock={"wall": time.perf_counter, "cpu": time.process_time}[clock])
    for r in rows:
        r.update(seconds=times[r["impl"]].median, spread=times[r["impl"]].spread,
                 per_repeat_ms=[round(t * 1e3) for t in times[r["impl"]].per_repeat])
    plain = rows[0]
    print(f"GPT {n_layer} layers, n_embd {n_embd}, T {block_size}, batch {batch_size}, "
          f"{repeats} repeats of {steps} step(s), {clock} clock, medians:")
    for r in rows:
        print(f"  {r['impl']:10s} activations kept {r['activations_mib']:7.1f} MiB "
              f"({plain['activations_mib'] / r['activations_mib']:4.1f}x less)  step peak {r['peak_mib']:7.1f} MiB  "
              f"step {r['seconds'] * 1e3:7.0f} ms ({r['seconds'] / plain['seconds'] - 1:+.1%}, spread {r['spread']:.0%})",
              flush=True)
    for r in rows:
        print(f"  {r['impl']:10s} per repeat (ms): {r['per_repeat_ms']}")
    forward = times["forward only"]
    print(f"  the plain model's forward without autograd: {forward.median * 1e3:.0f} ms, "
          f"{forward.median / plain['seconds']:.0%} of a plain step (spread {forward.spread:.0%})")
    return rows


def load_config(path: str):
    """(family's estimate function, config) for a config.json or a folder holding one."""
    families = {"minigpt": (gpt_estimate, GPTConfig), "gpt2": (gpt_estimate, GPTConfig),
                "llama": (gpt_estimate, GPTConfig), "bert": (bert_estimate, BertConfig),
                "t5": (t5_estimate, T5Config)}
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    try:
        model_type = json.loads(read_text(file)).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"{file}: not a JSON object ({e}); pass a model's config.json") from None
    if model_type not in families:
        raise unknown_model_type(model_type, families, where=str(file))
    estimate, config_class = families[model_type]
    return estimate, config_class.from_json_file(file)


def costs(path: str, batch_size: int, seq_len: int, target_len, gradient_checkpointing: bool = False) -> str:
    estimate, config = load_config(path)
    if gradient_checkpointing and estimate is not gpt_estimate:
        raise UserError(f"--gradient_checkpointing: the checkpointed estimate is written for GPT only; "
                        f"{path} is a {config.model_type}")
    if target_len is not None and config.model_type != "t5":
        raise UserError(f"--target_len is the decoder length of an encoder-decoder (t5); {path} is a {config.model_type}")
    extra = {} if target_len is None else {"target_len": target_len}
    if gradient_checkpointing:
        extra["gradient_checkpointing"] = True
    return estimate(config, batch_size, seq_len, **extra).table()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("attention", help="textbook vs flash vs torch sdpa: memory and time")
    a.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    a.add_argument("--heads", type=int, default=4)
    a.add_argument("--head_dim", type=int, default=64)
    a.add_argument("--repeats", type=int, default=3)
    sub.add_parser("accounting", help="predicted against measured FLOPs and peak memory, three sizes per family")
    g = sub.add_parser("checkpointing", help="GPT step with and without gradient checkpointing")
    g.add_argument("--n_layer", type=int, default=12)
    g.add_argument("--n_embd", type=int, default=128)
    g.add_argument("--n_head", type=int, default=4)
    g.add_argument("--block_size", type=int, default=512)
    g.add_argument("--batch_size", type=int, default=1)
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--steps", type=int, default=1, help="steps per timed repeat")
    g.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or the CPU seconds of this process (less sensitive to other processes)")
    c = sub.add_parser("costs", help="predicted parameters, FLOPs and memory of a config")
    c.add_argument("config", help="a config.json, or a folder holding one")
    c.add_argument("--batch_size", type=int, default=8)
    c.add_argument("--seq_len", type=int, default=512)
    c.add_argument("--target_len", type=int, default=None, help="T5's target length (default seq_len)")
    c.add_argument("--gradient_checkpointing", action="store_true", help="the same step with checkpointing (GPT)")
    args = parser.parse_args(argv)
    if args.what == "costs":
        print(costs(args.config, args.batch_size, args.seq_len, args.target_len, args.gradient_checkpointing))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    print(f"threads {torch.get_num_threads()}, load average {open('/proc/loadavg').read().split()[:3]}")
    if args.what == "attention":
        attention(args.lengths, args.heads, args.head_dim, args.repeats)
    elif args.what == "accounting":
        accounting()
    elif args.what == "checkpointing":
        checkpointing(args.n_layer, args.n_embd, args.n_head, args.block_size, args.batch_size, args.repeats,
                      args.steps, args.clock)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
