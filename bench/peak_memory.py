"""Row 4: peak memory of a training step, each model in a fresh process.

The peak resident set size (VmHWM, the most physical memory the process ever held) is a
high-water mark, so each measurement needs its own process: `python -m bench.peak_memory
{gpt,bert} {ours,transformers}` imports the same libraries (torch, transformers, ours) whichever
model it runs, builds the model and the batches, records maxrss, runs a few training steps and
records maxrss again. We report both the whole process's peak and the growth during training
(activations, gradients, optimizer state), which is what the model implementation decides.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys

import torch


def maxrss_mib() -> float:
    """Peak RSS of this process in MiB: VmHWM of /proc/self/status on Linux, ru_maxrss elsewhere.

    Linux keeps ru_maxrss across fork + exec, so a child started by a big parent would report the
    parent's peak; VmHWM belongs to the new program's memory and starts afresh at exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024


def measure(row: str, impl: str, quick: bool, steps: int = 3) -> dict:
    import transformers  # noqa: F401 - both runs import the same libraries

    from bench import bert_pretrain, gpt_train
    from bench.data import bert_batches, gpt_batches
    from minibert import BertConfig, BertForPreTraining
    from minigpt import GPT, GPTConfig

    # Ours is built from its config, not copied from a transformers model: that model would
    # otherwise count in our peak. The weights' values do not change the memory.
    if row == "gpt":
        size = gpt_train.QUICK if quick else gpt_train.FULL
        batches = gpt_batches(2, size["batch_size"], size["block_size"], size["vocab_size"])
        if impl == "transformers":
            model, forward = gpt_train.hf_gpt2(size), gpt_train.hf_loss
        else:
            config = GPTConfig(n_layer=size["n_layer"], n_head=size["n_head"], n_embd=size["n_embd"],
                               block_size=size["block_size"], vocab_size=size["vocab_size"], dropout=0.0)
            model, forward = GPT(config), gpt_train.ours_loss
    else:
        size = bert_pretrain.QUICK if quick else bert_pretrain.FULL
        batches = bert_batches(2, size["batch_size"], size["seq_len"], size["vocab_size"])
        if impl == "transformers":
            model = bert_pretrain.hf_bert(size)
        else:
            config = BertConfig(**{k: size[k] for k in bert_pretrain.MODEL_KEYS},
                                max_position_embeddings=max(512, size["seq_len"]))
            model = BertForPreTraining(config)
            model.masked_only = True  # bert_pretrain.pretraining_loss passes mlm_logits_at_masked_only=True
        forward = bert_pretrain.pretraining_loss
    step = gpt_train.train_step(model, batches, forward)
    before = maxrss_mib()
    for _ in range(steps):
        step()
    after = maxrss_mib()
    return dict(row=row, impl=impl, peak_mib=after, before_mib=before, growth_mib=after - before)


def in_subprocess(row: str, impl: str, quick: bool) -> dict:
    """Run `measure` in a fresh interpreter (same threads) and return its JSON result."""
    command = [sys.executable, "-m", "bench.peak_memory", row, impl,
               "--threads", str(torch.get_num_threads())]
    if quick:
        command.append("--quick")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=("gpt", "bert"))
    parser.add_argument("impl", choices=("ours", "transformers"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.row, args.impl, args.quick)))


if __name__ == "__main__":
    main()
