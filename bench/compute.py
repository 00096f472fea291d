"""What training costs, measured: attention memory and time, activation checkpointing.

    python -m bench.compute attention [--lengths 512 1024 2048] [--heads 4] [--head_dim 64]
    python -m bench.compute checkpointing [--n_layer 12] [--block_size 512] [--batch_size 1]

attention: forward + backward of causal self-attention at each length T, three ways: the textbook
path (common/nn/attention.py), the tiled online softmax (common/nn/flash_attention.py) and torch's
fused kernel (F.scaled_dot_product_attention, through sdpa_attention). Memory is the peak of the
bytes allocated during the step (common/train/measure.py, torch's profiler); time is the median
of interleaved repeats (bench/timing.py), so all three see the same load.
checkpointing: one training step (forward, backward) of a GPT with and without
gradient_checkpointing_enable(): peak allocated bytes and median step time.
Figures and the commands that made them: docs/results/compute.md.
"""
from __future__ import annotations

import argparse
import os

import torch

from bench.timing import interleaved
from common.errors import run_cli
from common.nn.attention import scaled_dot_product_attention, sdpa_attention
from common.nn.flash_attention import flash_attention
from common.nn.masks import causal_mask
from common.train.measure import peak_allocated_bytes

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compute", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("attention", help="textbook vs flash vs torch sdpa: memory and time")
    a.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048])
    a.add_argument("--heads", type=int, default=4)
    a.add_argument("--head_dim", type=int, default=64)
    a.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    print(f"threads {torch.get_num_threads()}, load average {open('/proc/loadavg').read().split()[:3]}")
    if args.what == "attention":
        attention(args.lengths, args.heads, args.head_dim, args.repeats)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    run_cli(main)
