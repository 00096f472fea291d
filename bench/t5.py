"""T5 against transformers' T5ForConditionalGeneration on the same weights:

    step        one training step (forward, cross-entropy, backward, AdamW), same batches
    padded      the same step on batches shaped like Multi30k translation batches: sources and
                targets of real lengths, padded to the longest of the batch (labels -100 there);
                ours with forward's logits_at_labels_only=True (the LM head only where labels != -100,
                minit5/logits_at_labels.py) as the training tools run it, and ours without it
    generation  greedy decoding with the cache (self-attention KV cache, cross-attention K/V once)
    memory      peak RSS of a few training steps, each implementation in a fresh process

Both must agree before they are timed: the same loss on the first batch, the same greedy tokens.
Ratios are medians of interleaved repeats (bench/timing.py). Run: python -m bench.t5 [--quick]

Lengths of the padded row: pairs drawn (seeded) from Multi30k's train.de / train.en, found at
$BENCH_MULTI30K, data/multi30k or ../shared/data/multi30k (next to the repository). Nothing is
trained: a sentence of w whitespace words counts as ceil(1.3 w) subword tokens + eos (1.3 subwords
per word is an estimate for a SentencePiece vocabulary of 8000), cut at 128 (the tools'
--max_source_length and --max_target_length); the ids are random. Without the files, w ~
round(N(11.9, 3.8^2)) clipped to [1, 37] for both sides (train.en's word counts: mean 11.9, sd 3.8,
longest 37), and the report says so.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Optional

import torch

from bench.peak_memory import maxrss_mib
from bench.timing import interleaved, per_repeat_ms, ratio

FULL = dict(vocab_size=8000, d_model=256, d_kv=32, num_heads=8, d_ff=1024, num_layers=4, batch_size=16,
            source_length=32, target_length=32, new_tokens=48, generation_batch=8, padded_batch_size=32)
QUICK = dict(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, batch_size=4,
             source_length=8, target_length=8, new_tokens=6, generation_batch=2, padded_batch_size=4)
MODEL_KEYS = ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers")
ROOT = Path(__file__).resolve().parents[1]
SUBWORDS_PER_WORD = 1.3
MAX_LENGTH = 128
WORDS_MEAN, WORDS_SD, WORDS_MAX = 11.9, 3.8, 37  # Multi30k train.en, the fallback without the files


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


def multi30k_folder() -> Optional[Path]:
    """The first folder holding Multi30k's train.de and train.en, or None."""
    for candidate in (os.environ.get("BENCH_MULTI30K", ""), ROOT / "data" / "multi30k",
                      ROOT.parent / "shared" / "data" / "multi30k"):
        if candidate and (Path(candidate) / "train.de").is_file() and (Path(candidate) / "train.en").is_file():
            return Path(candidate)
    return None


def subword_length(words: int) -> int:
    """Tokens of a sentence of `words` whitespace words: ceil(1.3 w) subwords + eos, at most 128."""
    return min(MAX_LENGTH, math.ceil(SUBWORDS_PER_WORD * words) + 1)


def pair_lengths(count: int, seed: int = 0) -> tuple[list[tuple[int, int]], str]:
    """`count` (source length, target length) pairs, drawn with replacement, and where they came from."""
    g = torch.Generator().manual_seed(seed)
    folder = multi30k_folder()
    if folder is not None:
        words = [[len(line.split()) for line in (folder / name).read_text(encoding="utf-8").splitlines()]
                 for name in ("train.de", "train.en")]
        picks = torch.randint(0, min(map(len, words)), (count,), generator=g).tolist()
        lengths = [(subword_length(words[0][i]), subword_length(words[1][i])) for i in picks]
        return lengths, f"Multi30k pair lengths of {folder} (train.de -> train.en), {SUBWORDS_PER_WORD} subwords/word"
    draws = (torch.randn(count, 2, generator=g) * WORDS_SD + WORDS_MEAN).round().clamp(1, WORDS_MAX).long()
    lengths = [(subword_length(s), subword_length(t)) for s, t in draws.tolist()]
    return lengths, f"synthetic lengths (no Multi30k files): words ~ N({WORDS_MEAN}, {WORDS_SD}^2) in [1, {WORDS_MAX}]"


def padded_batches(size: dict, n: int = 4, seed: int = 0) -> tuple[list[dict], str]:
    """Batches as minit5.data.DataCollatorForSeq2Seq pads them: sources to the longest with pad 0 and
    attention_mask 0, labels to the longest target with -100. Random ids, real lengths."""
    B, V = size["padded_batch_size"], size["vocab_size"]
    lengths, source = pair_lengths(n * B, seed)
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for k in range(n):
        rows = lengths[k * B:(k + 1) * B]
        S, T = max(s for s, _ in rows), max(t for _, t in rows)
        x = torch.randint(2, V, (B, S), generator=g)
        y = torch.randint(2, V, (B, T), generator=g)
        mask = torch.zeros(B, S, dtype=torch.long)
        for row, (s, t) in enumerate(rows):
            mask[row, :s] = 1
            y[row, t:] = -100
        out.append(dict(input_ids=x.masked_fill(mask == 0, 0), attention_mask=mask, labels=y))
    return out, source


def padding_share(data: list[dict]) -> dict:
    """How much of the padded target positions the loss reads, and the batch shapes."""
    scored = sum(int((b["labels"] != -100).sum()) for b in data)
    positions = sum(b["labels"].numel() for b in data)
    return dict(scored_fraction=scored / positions, shapes=[dict(source=list(b["input_ids"].shape),
                                                                target=list(b["labels"].shape)) for b in data])


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
    padded = padded_step(size, quick, repeats)
    return dict(size=size, first_loss=dict(transformers=first[0], ours=first[1]), same_tokens=same,
                step=dict(target=1.5, ratio=ratio(steps["transformers"], steps["ours"]),
                          ms={k: t.median * 1e3 for k, t in steps.items()}, per_repeat_ms=per_repeat_ms(steps)),
                padded=padded,
                generation=dict(target=2.0, ratio=ratio(generation["transformers"], generation["ours"]),
                                ms={k: t.median * 1e3 for k, t in generation.items()},
                                per_repeat_ms=per_repeat_ms(generation)))


def padded_step(size: dict, quick: bool, repeats: int) -> dict:
    """The training step on Multi30k-shaped padded batches: transformers, ours with the head only at
    labels != -100 (as minit5.finetune trains), ours with the textbook head. Fresh models with the
    same weights on all three sides; their first losses are reported to be compared before the times."""
    hf, textbook = models(size)
    at_labels = copy.deepcopy(textbook)
    data, source = padded_batches(size)
    at_labels_data = [{**batch, "logits_at_labels_only": True} for batch in data]  # a forward argument
    with torch.no_grad():
        first = {name: model(**batch).loss.item() for name, model, batch in (
            ("transformers", hf, data[0]), ("ours", at_labels, at_labels_data[0]), ("ours_textbook_head", textbook, data[0]))}
    steps = interleaved({"transformers": train_step(hf, data), "ours": train_step(at_labels, at_labels_data),
                         "ours_textbook_head": train_step(textbook, data)},
                        repeats=1 if quick else repeats, steps=1 if quick else 3, warmup=1)
    return dict(lengths=source, batch_size=size["padded_batch_size"], **padding_share(data), first_loss=first,
                ratio=ratio(steps["transformers"], steps["ours"]),
                ratio_to_textbook_head=ratio(steps["ours_textbook_head"], steps["ours"]),
                ms={k: t.median * 1e3 for k, t in steps.items()}, per_repeat_ms=per_repeat_ms(steps))


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
