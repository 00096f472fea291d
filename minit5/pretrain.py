"""python -m minit5.pretrain: pretrain a T5 by span corruption on your text.

    python -m minit5.pretrain --train_file text.txt --output_dir out/t5 --max_time 300

The text is tokenized (a SentencePiece tokenizer with 100 <extra_id_N> sentinels is trained on it
unless --tokenizer_name gives one), concatenated and cut into blocks of the raw length whose
corrupted input is exactly --max_seq_length tokens (common/data/span_corruption.py,
compute_input_and_target_lengths); each batch drops --mlm_probability of the tokens in spans of mean
--mean_noise_span_length, each span a sentinel in the input and listed after it in the target.
Flags follow transformers' run_t5_mlm_flax.py (--train_file, --validation_file, --tokenizer_name,
--max_seq_length, --mlm_probability, --mean_noise_span_length, --config_overrides) plus every
TrainingArguments field. Writes the model, its tokenizer, train_results.json, eval_results.json
(with --validation_file), log.jsonl into --output_dir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from common.cli.training import (FLAG_NOTE, add_training_flags, parse_config_overrides, perplexity,
                                 time_budget_callbacks, train_and_save, training_arguments, write_json)
from common.data.switches import WithSwitches
from common.data.span_corruption import DataCollatorForSpanCorruption, compute_input_and_target_lengths
from common.errors import ConfigError, DataError, read_text, run_cli
from common.hub.pretrained import check_tokenizer_fits_model
from common.train.device import set_seed
from common.train.trainer import Trainer
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration
from minit5.tokenizer import T5Tokenizer

RECIPE = dict(learning_rate=1e-3, per_device_train_batch_size=32, per_device_eval_batch_size=64,
              logging_steps=50, save_strategy="no", warmup_ratio=0.05, weight_decay=0.0)
# A small T5 for a CPU (T5-small's shape, narrower): override any field with --config_overrides.
SMALL_T5 = dict(d_model=256, d_kv=32, num_heads=8, d_ff=1024, num_layers=4, dropout_rate=0.1)
# What the training tools pass to forward with every batch (common/data/switches.py), never saved in the
# model: the same loss and gradients, the LM head only at the positions the loss reads (minit5/logits_at_labels.py).
TRAINING_SWITCHES = dict(logits_at_labels_only=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minit5.pretrain", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain a T5 by span corruption (noise 15%, mean span 3) on a text file.",
        epilog="Example:\n  python -m minit5.pretrain --train_file text.txt --output_dir out/t5 --max_time 300\n" + FLAG_NOTE)
    group = parser.add_argument_group("model and data")
    add = group.add_argument
    add("--train_file", "--train-file", required=True, help="Plain text, one sentence or paragraph per line.")
    add("--validation_file", "--validation-file", default=None, help="Optional text for eval_results.json.")
    add("--tokenizer_name", "--tokenizer-name", default=None,
        help="A T5 tokenizer folder (spiece.model); default: train one on --train_file.")
    add("--model_name_or_path", "--model-name-or-path", default=None,
        help="Continue from this T5 folder instead of random weights.")
    add("--vocab_size", "--vocab-size", type=int, default=8000,
        help="Size of the trained tokenizer, the 100 sentinels included (default: %(default)s).")
    add("--config_overrides", "--config-overrides", default="",
        help=f"T5Config fields, e.g. 'd_model=128,num_layers=2' (defaults: {SMALL_T5}).")
    add("--max_seq_length", "--max-seq-length", type=int, default=128,
        help="Tokens of each corrupted input, eos included (default: %(default)s).")
    add("--mlm_probability", "--mlm-probability", type=float, default=0.15,
        help="Fraction of tokens dropped (T5's noise density, default: %(default)s).")
    add("--mean_noise_span_length", "--mean-noise-span-length", type=float, default=3.0,
        help="Mean length of a dropped span (default: %(default)s).")
    add("--max_train_samples", "--max-train-samples", type=int, default=None,
        help="Keep only this many training blocks.")
    add("--encoding", default="utf-8", help="Encoding of the text files (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    return parser


class TokenBlocks(Dataset):
    """All tokens of a text, one after another, cut into blocks of `length` (the last one shorter)."""

    def __init__(self, tokenizer, text: str, length: int, source: str):
        ids = [i for line in text.splitlines() if line.strip()
               for i in tokenizer.encode(line, add_special_tokens=False)]
        if not ids:
            raise DataError(f"{source} holds no text to pretrain on")
        self.blocks = [ids[i:i + length] for i in range(0, len(ids), length)]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]}


def build_tokenizer(opts, what: str):
    if opts.tokenizer_name:
        return T5Tokenizer.from_pretrained(opts.tokenizer_name)
    if getattr(opts, "model_name_or_path", None):
        return T5Tokenizer.from_pretrained(opts.model_name_or_path)
    print(f"{what}: training a SentencePiece tokenizer ({opts.vocab_size} ids with 100 sentinels)", file=sys.stderr)
    return None


def build_model(opts, tokenizer, seed: int) -> T5ForConditionalGeneration:
    if opts.model_name_or_path:
        model = T5ForConditionalGeneration.from_pretrained(opts.model_name_or_path)
        model.train()
        return model
    overrides = {**SMALL_T5, **parse_config_overrides(opts.config_overrides, T5Config)}
    config = T5Config(**{**overrides, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                         "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.pad_token_id})
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: tokenizer, model, data
    if not 0.0 < opts.mlm_probability < 1.0:
        raise ConfigError(f"--mlm_probability must be in (0, 1), got {opts.mlm_probability}")
    text = read_text(opts.train_file, encoding=opts.encoding, what="training text")
    tokenizer = build_tokenizer(opts, "minit5.pretrain") or T5Tokenizer.train([opts.train_file], opts.vocab_size)
    model = build_model(opts, tokenizer, args.seed)
    check_tokenizer_fits_model(tokenizer, model.config.vocab_size, "the model")
    raw_length, target_length = compute_input_and_target_lengths(opts.max_seq_length, opts.mlm_probability,
                                                                   opts.mean_noise_span_length)
    train_set = TokenBlocks(tokenizer, text, raw_length, opts.train_file)
    if opts.max_train_samples is not None:
        train_set.blocks = train_set.blocks[:opts.max_train_samples]
    eval_set = None
    if opts.validation_file:
        eval_set = TokenBlocks(tokenizer, read_text(opts.validation_file, encoding=opts.encoding, what="validation text"),
                               raw_length, opts.validation_file)
    collator = DataCollatorForSpanCorruption(tokenizer.sentinel_id(0), tokenizer.eos_token_id, tokenizer.pad_token_id,
                                             opts.mlm_probability, opts.mean_noise_span_length, seed=args.seed)
    print(f"minit5.pretrain: {model.num_parameters() / 1e6:.2f}M parameters, {len(train_set):,} blocks of "
          f"{raw_length} tokens -> inputs of {opts.max_seq_length}, targets of {target_length}", file=sys.stderr)
    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer,
                      data_collator=WithSwitches(collator, **TRAINING_SWITCHES), callbacks=time_budget_callbacks(args, opts))
    result = train_and_save(trainer, args.output_dir, train_samples=len(train_set))
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    if eval_set is not None:
        metrics = trainer.evaluate(eval_set)
        metrics["perplexity"] = perplexity(metrics["eval_loss"])
        write_json(output_dir / "eval_results.json", metrics)
        print(f"eval_loss {metrics['eval_loss']:.4f}  perplexity {metrics['perplexity']:.2f}")
    print(f"model and tokenizer saved to {output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
