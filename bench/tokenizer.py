"""Byte-level BPE, ours (common/text/bpe.py, pure Python) against the libraries, in one run:

    python -m bench.tokenizer            # about 15 minutes on 2 busy cores; figures in docs/results/tokenizers.md
    python -m bench.tokenizer --quick    # seconds: small slices, to see that it runs

Training: a vocabulary of 8,192 (256 bytes + merges + <|endoftext|>) on tiny shakespeare and on
10 MB of text, against Hugging Face `tokenizers` (Rust) BpeTrainer with the ByteLevel pre-tokenizer
(GPT-2's pattern, no prefix space) and the same vocabulary size. The 10 MB are the files of
../shared/data concatenated in the order of CORPUS_FILES (raw bytes, read as UTF-8), cut at
10,000,000 bytes. Time: medians of interleaved repeats (bench/timing.py). Memory: each side trains
once more in a fresh process that reports the growth of its peak RSS (VmHWM) during training, and
ours once more under tracemalloc (Python allocations only; tracemalloc cannot see Rust's).

Encoding: tiny shakespeare with GPT-2's real vocabulary (../shared/data/gpt2), each tokenizer's
cache emptied before every call (a first pass over the text), in MB of UTF-8 per second, against
    transformers' Python BPE   GPT-2's original Python code as transformers keeps it: since
                               transformers 5, GPT2Tokenizer is the Rust one, and the Python copy
                               lives on as ClvpTokenizer (used here with its English normalizer off)
    GPT2Tokenizer(Fast)        transformers 5's GPT2Tokenizer, which IS GPT2TokenizerFast (Rust)
    tiktoken                   tiktoken.Encoding built offline from the same ranks
All four must give the same ids (checked before timing).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Optional, Sequence

from bench.peak_memory import maxrss_mib
from bench.timing import interleaved, ratio

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CORPUS_FILES = ["tinyshakespeare.txt", "sst2/train.tsv", "multi30k/train.en", "multi30k/train.de",
                "conll2003/train.txt", "conll2003/valid.txt", "conll2003/test.txt",
                "instructions/instruction-data-with-preference.json"]
FULL = dict(vocab_size=8192, corpus_bytes=10_000_000, shakespeare_chars=None, train_repeats=3, big_repeats=1,
            encode_repeats=5)
QUICK = dict(vocab_size=600, corpus_bytes=200_000, shakespeare_chars=50_000, train_repeats=1, big_repeats=1,
             encode_repeats=1)


def corpus(data: Path, n_bytes: int) -> str:
    """The files of CORPUS_FILES, concatenated (a newline between), cut at n_bytes (at a character)."""
    parts = [(data / name).read_bytes() for name in CORPUS_FILES if (data / name).is_file()]
    return b"\n".join(parts)[:n_bytes].decode("utf-8", errors="ignore")


def shakespeare(data: Path, chars: Optional[int]) -> str:
    text = (data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    return text if chars is None else text[:chars]


# ---------------------------------------------------------------- the candidates
def train_ours(text: str, vocab_size: int):
    from common.text.bpe import BPETokenizer
    return BPETokenizer.train(text, vocab_size)


def train_hf(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def encoders(gpt2: Path) -> dict:
    """{name: (encode function, cache-clearing function)} for the four tokenizers of GPT-2's files."""
    import tiktoken
    import transformers

    from common.text.bpe import GPT2_PATTERN, BPETokenizer

    ours = BPETokenizer.from_pretrained(gpt2)
    vocab, merges = str(gpt2 / "vocab.json"), str(gpt2 / "merges.txt")
    python = transformers.ClvpTokenizer(vocab, merges, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    python._normalizer = lambda text: text  # GPT-2's code path exactly: no English number spelling
    rust = transformers.GPT2Tokenizer(vocab, merges)
    ranks = {bytes(ours.byte_decoder[c] for c in t): i for t, i in ours.get_vocab().items() if i != ours.eos_token_id}
    enc = tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": ours.eos_token_id})
    nothing = lambda: None  # noqa: E731 - the Rust tokenizers keep no cache to clear between calls
    return {"ours": (ours.encode, ours._cache.clear),
            "transformers Python BPE": (python.encode, python.cache.clear),
            "GPT2Tokenizer(Fast) (Rust)": (lambda t: rust.encode(t), nothing),
            "tiktoken (Rust)": (lambda t: enc.encode(t, allowed_special="all"), nothing)}


# ---------------------------------------------------------------- measurements
def child_memory(side: str, source: str, size: dict, data: Path) -> dict:
    """Run `python -m bench.tokenizer --child side:source` and read back its JSON line."""
    argv = [sys.executable, "-m", "bench.tokenizer", "--child", f"{side}:{source}", "--data", str(data)]
    if size is QUICK:
        argv.append("--quick")
    result = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_child(spec: str, size: dict, data: Path) -> dict:
    """In a fresh process: the peak-RSS growth of one training (and, for ours, tracemalloc's peak)."""
    side, source = spec.split(":")
    text = shakespeare(data, size["shakespeare_chars"]) if source == "shakespeare" else corpus(data, size["corpus_bytes"])
    train = train_ours if side == "ours" else train_hf
    import tokenizers  # noqa: F401 - both sides load the same libraries before the baseline
    import common.text.bpe  # noqa: F401
    before = maxrss_mib()
    train(text, size["vocab_size"])
    out = {"rss_growth_mib": maxrss_mib() - before}
    if side == "ours":
        tracemalloc.start()
        train(text, size["vocab_size"])
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out


def measure(size: dict, data: Path = DATA, memory: bool = True) -> dict:
    results: dict = {"training": {}, "encoding": {}}
    vocab_size = size["vocab_size"]
    texts = {"shakespeare": shakespeare(data, size["shakespeare_chars"]), "corpus": corpus(data, size["corpus_bytes"])}
    for source, text in texts.items():
        repeats = size["train_repeats"] if source == "shakespeare" else size["big_repeats"]
        timings = interleaved({"ours": lambda: train_ours(text, vocab_size), "tokenizers": lambda: train_hf(text, vocab_size)},
                              repeats=repeats, steps=1, warmup=0)
        row = {"mb": len(text.encode("utf-8")) / 1e6, "ours_s": timings["ours"].median,
               "tokenizers_s": timings["tokenizers"].median,
               "ours_over_tokenizers": 1 / ratio(timings["tokenizers"], timings["ours"])}
        if memory:
            for side in ("ours", "tokenizers"):
                row[f"memory_{side}"] = child_memory(side, source, size, data)
        results["training"][source] = row

    gpt2 = data / "gpt2"
    if (gpt2 / "merges.txt").is_file():
        text = texts["shakespeare"]
        candidates = encoders(gpt2)
        reference = candidates["ours"][0](text)
        for name, (encode, clear) in candidates.items():
            clear()
            if encode(text) != reference:
                raise AssertionError(f"{name} gives different ids on tiny shakespeare than ours")

        def cold(encode, clear):
            def run():
                clear()
                encode(text)
            return run

        timings = interleaved({name: cold(*pair) for name, pair in candidates.items()},
                              repeats=size["encode_repeats"], steps=1, warmup=1)
        mb = len(text.encode("utf-8")) / 1e6
        for name, t in timings.items():
            results["encoding"][name] = {"mb_per_s": mb / t.median, "seconds": t.median, "spread": t.spread,
                                         "ours_speedup": ratio(t, timings["ours"])}
    return results


def markdown(results: dict) -> str:
    lines = ["| text | MB | ours (s) | tokenizers (s) | ours / tokenizers | peak RSS growth ours / tokenizers (MiB) "
             "| tracemalloc peak ours (MiB) |", "|---|---|---|---|---|---|---|"]
    for source, row in results["training"].items():
        mem_o, mem_t = row.get("memory_ours", {}), row.get("memory_tokenizers", {})
        lines.append(f"| {source} | {row['mb']:.2f} | {row['ours_s']:.2f} | {row['tokenizers_s']:.2f} | "
                     f"{row['ours_over_tokenizers']:.2f}x | {mem_o.get('rss_growth_mib', float('nan')):.0f} / "
                     f"{mem_t.get('rss_growth_mib', float('nan')):.0f} | {mem_o.get('tracemalloc_peak_mib', float('nan')):.0f} |")
    if results["encoding"]:
        lines += ["", "| encoder (GPT-2 vocabulary, cold cache) | MB/s | seconds | ours is this many times faster |",
                  "|---|---|---|---|"]
        for name, row in results["encoding"].items():
            lines.append(f"| {name} | {row['mb_per_s']:.2f} | {row['seconds']:.3f} | {row['ours_speedup']:.2f}x |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slices: seconds, to check that it runs")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON")
    parser.add_argument("--no_memory", action="store_true", help="skip the fresh-process memory runs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.child:
        print(json.dumps(run_child(args.child, size, args.data)))
        return 0
    start = time.perf_counter()
    results = measure(size, args.data, memory=not args.no_memory)
    results["seconds"] = time.perf_counter() - start
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\n({results['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
