"""Where the time goes: torch.profiler's table of one benchmark row, ours or transformers.

    python -m bench.profile gpt            # our GPT training step (row 1), 10 steps
    python -m bench.profile bert --impl transformers
    python -m bench.profile generate       # our greedy decoding of 64 tokens (row 3)

The table lists aten operators by self CPU time: matrix products (mm, addmm, bmm) are the useful
work; everything else (element-wise kernels, copies, the optimizer, dispatch) is overhead that a
faster implementation removes. docs/results/bench.md quotes these tables.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench import bert_pretrain, generation, gpt_train
from bench.data import bert_batches, gpt_batches


def workload(row: str, impl: str):
    """A zero-argument callable running the row once, already warmed up."""
    if row == "gpt":
        size = gpt_train.FULL
        batches = gpt_batches(4, size["batch_size"], size["block_size"], size["vocab_size"])
        hf = gpt_train.hf_gpt2(size)
        model, loss = ((hf, gpt_train.hf_loss) if impl == "transformers"
                       else (gpt_train.ours_from_hf(hf), gpt_train.ours_loss))
        run = gpt_train.train_step(model, batches, loss)
    elif row == "bert":
        size = bert_pretrain.FULL
        batches = bert_batches(2, size["batch_size"], size["seq_len"], size["vocab_size"])
        hf = bert_pretrain.hf_bert(size)
        model = hf if impl == "transformers" else bert_pretrain.ours_from_hf(hf)
        run = gpt_train.train_step(model, batches, bert_pretrain.pretraining_loss)
    else:
        hf = gpt_train.hf_gpt2(generation.FULL).eval()
        prompt = torch.randint(1, generation.FULL["vocab_size"], (1, generation.FULL["prompt"]))
        if impl == "transformers":
            def run():
                return generation.hf_generate(hf, prompt, 64)
        else:
            ours = gpt_train.ours_from_hf(hf).eval()

            def run():
                return generation.ours_generate(ours, prompt, 64)
    for _ in range(2):
        run()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=("gpt", "bert", "generate"))
    parser.add_argument("--impl", choices=("ours", "transformers"), default="ours")
    parser.add_argument("--repeats", type=int, default=None, help="calls profiled (default 10, bert 3, generate 1)")
    parser.add_argument("--rows", type=int, default=20, help="operators shown")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = workload(args.row, args.impl)
    repeats = args.repeats or {"gpt": 10, "bert": 3, "generate": 1}[args.row]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
