"""T5 against transformers' T5ForConditionalGeneration on the same weights:

    step        one training step (forward, cross-entropy, backward, AdamW), same batches
    generation  greedy decoding with the cache (self-attention KV cache, cross-attention K/V once)
    memory      peak RSS of a few training steps, each implementation in a fresh process

Both must agree before they are timed: the same loss on the first batch, the same greedy tokens.
Ratios are medians of interleaved repeats (bench/timing.py). Run: python -m bench.t5 [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import torch

from bench.peak_memory import maxrss_mib
from bench.timing import interleaved, per_repeat_ms, ratio

FULL = dict(vocab_size=8000, d_model=256, d_kv=32, num_heads=8, d_ff=1024, num_layers=4, batch_size=16,
            source_length=32, target_length=32, new_tokens=48, generation_batch=8)
QUICK = dict(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, batch_size=4,
             source_length=8, target_length=8, new_tokens=6, generation_batch=2)
MODEL_KEYS = ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers")


def models(size: dict, seed: int = 0):
    """transformers' model (eager attention, no dropout, seeded random weights) and ours with its weights."""
    import transformers

    from minit5.config import T5Config
    from minit5.model import T5ForConditionalGeneration

    kw = {k: size[k] for k in MODEL_KEYS}
    torch.manual_seed(seed)
    hf = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**kw, dropout_rate=0.0, decoder_start_token_id=0, attn_implementation="eager"))
    ours = T5ForConditionalGeneration(T5Config(**kw, dropout_rate=0.0))
    ours.load_pretrained_state_dict(hf.state_dict())
    return hf, ours


def batches(size: dict, n: int = 4, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(2, size["vocab_size"], (size["batch_size"], size["source_length"]), generator=g)
        y = torch.randint(2, size["vocab_size"], (size["batch_size"], size["target_length"]), generator=g)
        out.append(dict(input_ids=x, attention_mask=torch.ones_like(x), labels=y))
    return out


def train_step(model, data: list[dict]):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    state = {"i": 0}

    def step():
        batch = data[state["i"] % len(data)]
        state["i"] += 1
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def run(quick: bool = False, repeats: int = 5) -> dict:
    size = QUICK if quick else FULL
    hf, ours = models(size)
    data = batches(size)
    with torch.no_grad():
        first = (hf(**data[0]).loss.item(), ours(**data[0]).loss.item())
    g = torch.Generator().manual_seed(1)
    source = torch.randint(2, size["vocab_size"], (size["generation_batch"], size["source_length"]), generator=g)
    new = size["new_tokens"]

    def hf_generate():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hf.generate(input_ids=source, attention_mask=torch.ones_like(source), max_new_tokens=new,
                               min_new_tokens=new, do_sample=False, num_beams=1, use_cache=True)

    def ours_generate():  # eos_token_id=-1: never stops early, as min_new_tokens for transformers
        return ours.generate(source, max_new_tokens=new, eos_token_id=-1)

    hf.eval(), ours.eval()
    same = torch.equal(hf_generate(), ours_generate())
    generation = interleaved({"transformers": hf_generate, "ours": ours_generate},
                             repeats=1 if quick else repeats, steps=1, warmup=1)
    steps = interleaved({"transformers": train_step(hf, data), "ours": train_step(ours, data)},
                        repeats=1 if quick else repeats, steps=1 if quick else 3, warmup=1)
    return dict(size=size, first_loss=dict(transformers=first[0], ours=first[1]), same_tokens=same,
                step=dict(target=1.5, ratio=ratio(steps["transformers"], steps["ours"]),
                          ms={k: t.median * 1e3 for k, t in steps.items()}, per_repeat_ms=per_repeat_ms(steps)),
                generation=dict(target=2.0, ratio=ratio(generation["transformers"], generation["ours"]),
                                ms={k: t.median * 1e3 for k, t in generation.items()},
                                per_repeat_ms=per_repeat_ms(generation)))


def measure_memory(impl: str, quick: bool, steps: int = 3) -> dict:
    """Peak RSS around a few training steps of one implementation (call in a fresh process)."""
    size = QUICK if quick else FULL
    hf, ours = models(size)
    model = hf if impl == "transformers" else ours
    del hf, ours
    step = train_step(model, batches(size))
    before = maxrss_mib()
    for _ in range(steps):
        step()
    after = maxrss_mib()
    return dict(impl=impl, peak_mib=after, growth_mib=after - before)


def memory(quick: bool = False) -> dict:
    out = {}
    for impl in ("transformers", "ours"):
        command = [sys.executable, "-m", "bench.t5", "--memory", impl, "--threads", str(torch.get_num_threads())]
        result = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True, check=True)
        out[impl] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.t5", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", choices=("ours", "transformers"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    opts = parser.parse_args(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if opts.memory:
        print(json.dumps(measure_memory(opts.memory, opts.quick)))
        return 0
    result = run(opts.quick, opts.repeats)
    result["memory"] = memory(opts.quick)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
