"""python -m minit5.translate: a trained T5 writes a target for each line of a file (or of stdin).

    python -m minit5.translate --model_name_or_path out/de-en --input_file test.de --output_file test.en
    echo "Ein Hund rennt." | python -m minit5.translate --model_name_or_path out/de-en --num_beams 4

One output line per input line, in order. --num_beams 1 is greedy decoding; --do_sample draws with
--temperature/--top_k/--top_p. The generation options are transformers' generate() arguments
(common/generation/config.py), --no_repeat_ngram_size and --repetition_penalty included. Each target
is at most min(--max_new_tokens, ceil(--max_length_ratio x source tokens) + 4) tokens long (a greedy
output that loops stops there). --stream prints each target as it is written (one source at a time,
greedy or sampling).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from common.cli.args import parse_bool
from common.errors import ConfigError, run_cli
from common.generation.streamers import TextStreamer
from minit5.data import read_lines, translate_texts
from minit5.model import T5ForConditionalGeneration
from minit5.tokenizer import T5Tokenizer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minit5.translate", allow_abbrev=False,
                                     description="Translate each line of a file (or stdin) with a trained T5.")
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True, help="A T5 folder with its tokenizer.")
    add("--input_file", "--input-file", default=None, help="One source per line (default: stdin).")
    add("--output_file", "--output-file", default=None, help="Where the targets go (default: stdout).")
    add("--source_prefix", "--source-prefix", default="", help="Text put before every source (as in training).")
    add("--max_source_length", "--max-source-length", type=int, default=128)
    add("--max_new_tokens", "--max-new-tokens", type=int, default=128, help="Longest target (default: %(default)s).")
    add("--max_length_ratio", "--max-length-ratio", type=float, default=2.0,
        help="Targets at most ceil(ratio x source tokens) + 4 tokens (default: %(default)s; 0 = off).")
    add("--num_beams", "--num-beams", type=int, default=1, help="1 = greedy (default), more = beam search.")
    add("--no_repeat_ngram_size", "--no-repeat-ngram-size", type=int, default=0,
        help="Never repeat an n-gram of this size (default: 0, off).")
    add("--repetition_penalty", "--repetition-penalty", type=float, default=1.0,
        help="Logit of a token already written: z / r if z > 0 else z r (default: 1.0, off).")
    add("--stream", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}",
        help="Print each target as it is written (stdout only, one source at a time, num_beams 1).")
    add("--length_penalty", "--length-penalty", type=float, default=1.0,
        help="Beam scores are log P / length^length_penalty (default: %(default)s).")
    add("--early_stopping", "--early-stopping", default="false", choices=("true", "false", "never"))
    add("--do_sample", "--do-sample", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}")
    add("--temperature", type=float, default=1.0)
    add("--top_k", "--top-k", type=int, default=None)
    add("--top_p", "--top-p", type=float, default=None)
    add("--seed", type=int, default=None, help="Makes sampling reproducible.")
    add("--batch_size", "--batch-size", type=int, default=32)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.batch_size < 1:
        raise ConfigError(f"--batch_size must be >= 1, got {opts.batch_size}")
    if opts.max_length_ratio < 0:
        raise ConfigError(f"--max_length_ratio must be >= 0 (0 = off), got {opts.max_length_ratio}")
    if opts.stream and (opts.output_file or opts.num_beams > 1):
        raise ConfigError("--stream prints to stdout one greedy or sampled target at a time: drop --output_file "
                          "and use --num_beams 1")
    model = T5ForConditionalGeneration.from_pretrained(opts.model_name_or_path)
    tokenizer = T5Tokenizer.from_pretrained(opts.model_name_or_path)
    lines = read_lines(opts.input_file) if opts.input_file else sys.stdin.read().splitlines()
    early = {"true": True, "false": False}.get(opts.early_stopping, opts.early_stopping)
    streamer_for = None
    if opts.stream:
        def streamer_for(i):
            return TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                on_text=lambda text, end: sys.stdout.write(text + ("\n" if end else "")) and None)
    outputs = translate_texts(model, tokenizer, lines, batch_size=1 if opts.stream else opts.batch_size,
                              max_length_ratio=opts.max_length_ratio or None, streamer_for=streamer_for,
                              no_repeat_ngram_size=opts.no_repeat_ngram_size,
                              repetition_penalty=opts.repetition_penalty,
                              max_source_length=opts.max_source_length, max_new_tokens=opts.max_new_tokens,
                              num_beams=opts.num_beams, source_prefix=opts.source_prefix,
                              length_penalty=opts.length_penalty, early_stopping=early, do_sample=opts.do_sample,
                              temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, seed=opts.seed)
    text = "\n".join(outputs) + ("\n" if outputs else "")
    if opts.stream:
        sys.stdout.flush()
    elif opts.output_file:
        with open(opts.output_file, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
