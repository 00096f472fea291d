"""python -m minit5.finetune: train a T5 on source -> target pairs (translation), scored with corpus BLEU.

    python -m minit5.finetune --train_source_file multi30k/train.de --train_target_file multi30k/train.en \\
        --validation_source_file multi30k/val.de --validation_target_file multi30k/val.en \\
        --output_dir out/de-en --max_time 900
    python -m minit5.finetune --model_name_or_path out/t5 --train_file pairs.tsv \\
        --source_column de --target_column en --validation_file dev.tsv --output_dir out/de-en

Pairs come from a .tsv/.csv/.jsonl table (--train_file, --source_column, --target_column) or from
two parallel files, line for line (--train_source_file/--train_target_file; --source_file and
--target_file are the same flags for training). --model_name_or_path starts from a pretrained T5
(ours from minit5.pretrain, or a Hugging Face T5 folder) and its tokenizer; without it a small T5
starts from random weights with a SentencePiece tokenizer trained on the training sources and targets.
Flags follow transformers' run_translation.py (--source_prefix, --max_source_length,
--max_target_length, --num_beams, --max_train_samples, --max_eval_samples, --predict_with_generate is
always on) plus every TrainingArguments field. Writes the model and tokenizer, eval_results.json
(eval_loss, eval_bleu), test_results.json with a test set, generated_predictions.txt, log.jsonl.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from common.cli.training import (FLAG_NOTE, add_training_flags, parse_config_overrides, time_budget_callbacks,
                                 train_and_save, training_arguments, write_json)
from common.data.switches import WithSwitches
from common.errors import ConfigError, run_cli
from common.hub.pretrained import check_tokenizer_fits_model
from common.nn.sampling import generation_mode
from common.train.device import set_seed
from common.train.trainer import Trainer
from minit5.config import T5Config
from minit5.data import DataCollatorForSeq2Seq, Seq2SeqDataset, read_pairs, translate_texts
from minit5.metrics import corpus_bleu
from minit5.model import T5ForConditionalGeneration
from minit5.pretrain import SMALL_T5, TRAINING_SWITCHES
from minit5.tokenizer import T5Tokenizer

RECIPE = dict(learning_rate=1e-3, per_device_train_batch_size=32, per_device_eval_batch_size=64, logging_steps=50,
              save_strategy="no", warmup_ratio=0.05, weight_decay=0.0, num_train_epochs=3.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minit5.finetune", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a T5 on source -> target pairs and score it with corpus BLEU.",
        epilog="Example (Multi30k German -> English from scratch, 15 minutes):\n"
               "  python -m minit5.finetune --train_source_file train.de --train_target_file train.en "
               "--validation_source_file val.de --validation_target_file val.en --output_dir out/de-en "
               "--max_time 900\n" + FLAG_NOTE)
    group = parser.add_argument_group("model and data")
    add = group.add_argument
    add("--model_name_or_path", "--model-name-or-path", default=None,
        help="A T5 folder (ours or Hugging Face's) to start from; default: a small T5 from random weights.")
    add("--tokenizer_name", "--tokenizer-name", default=None,
        help="A T5 tokenizer folder; default: the model's, or one trained on the training pairs.")
    add("--config_overrides", "--config-overrides", default="",
        help=f"T5Config fields of a model from scratch, e.g. 'd_model=128,num_layers=2' (defaults: {SMALL_T5}).")
    add("--vocab_size", "--vocab-size", type=int, default=8000,
        help="Size of a tokenizer trained here, the 100 sentinels included (default: %(default)s).")
    for split, required in (("train", True), ("validation", False), ("test", False)):
        add(f"--{split}_file", f"--{split}-file", default=None,
            help=f"{split} pairs: a .tsv/.csv/.jsonl with --source_column and --target_column.")
        names = [f"--{split}_source_file", f"--{split}-source-file"] + (["--source_file", "--source-file"] if split == "train" else [])
        add(*names, dest=f"{split}_source_file", default=None, help=f"{split} sources, one per line (with --{split}_target_file).")
        names = [f"--{split}_target_file", f"--{split}-target-file"] + (["--target_file", "--target-file"] if split == "train" else [])
        add(*names, dest=f"{split}_target_file", default=None, help=f"{split} targets, line i translating source line i.")
    add("--source_column", "--source-column", default="source", help="Column of the sources (default: %(default)s).")
    add("--target_column", "--target-column", default="target", help="Column of the targets (default: %(default)s).")
    add("--source_prefix", "--source-prefix", default="",
        help="Text put before every source, e.g. 'translate German to English: ' (default: none).")
    add("--max_source_length", "--max-source-length", type=int, default=128, help="Source tokens kept, eos included.")
    add("--max_target_length", "--max-target-length", type=int, default=128,
        help="Target tokens kept in training, eos included; also the longest generated target.")
    add("--num_beams", "--num-beams", type=int, default=1,
        help="Beams for the BLEU evaluation (1 = greedy, default: %(default)s).")
    add("--max_train_samples", "--max-train-samples", type=int, default=None, help="Train on the first N pairs only.")
    add("--max_eval_samples", "--max-eval-samples", type=int, default=None, help="Evaluate the first N pairs only.")
    add("--encoding", default="utf-8", help="Encoding of the data files (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    return parser


def split_pairs(opts, split: str):
    table, source, target = (getattr(opts, f"{split}_file"), getattr(opts, f"{split}_source_file"),
                             getattr(opts, f"{split}_target_file"))
    if table is None and source is None and target is None:
        return None
    return read_pairs(table, source, target, opts.source_column, opts.target_column, opts.encoding, split)


def first(pairs, n: Optional[int], flag: str):
    if n is None or pairs is None:
        return pairs
    if n < 1:
        raise ConfigError(f"{flag} must be >= 1, got {n}")
    return pairs[:n]


def load_tokenizer_and_model(opts, train_pairs, seed: int, replace_model: Optional[Callable] = None):
    folder = opts.tokenizer_name or opts.model_name_or_path
    if folder:
        tokenizer = T5Tokenizer.from_pretrained(folder)
    else:
        print(f"minit5.finetune: training a SentencePiece tokenizer ({opts.vocab_size} ids) on the training pairs",
              file=sys.stderr)
        tokenizer = T5Tokenizer.train([text for pair in train_pairs for text in pair], opts.vocab_size)
    if opts.model_name_or_path:
        model = T5ForConditionalGeneration.from_pretrained(opts.model_name_or_path)
        model.train()
    else:
        overrides = {**SMALL_T5, **parse_config_overrides(opts.config_overrides, T5Config)}
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(T5Config(**{**overrides, "vocab_size": len(tokenizer)}))
    if replace_model is not None:
        model = replace_model(model)
    check_tokenizer_fits_model(tokenizer, model.config.vocab_size, "the model")
    return tokenizer, model


def training_collator(model, collator):
    """Our T5 gets the training switches with every batch (common/data/switches.py); a replaced model
    (transformers' T5 in bench/t5_translation.py) has no such forward argument and gets the bare batches."""
    return WithSwitches(collator, **TRAINING_SWITCHES) if isinstance(model, T5ForConditionalGeneration) else collator


def score(model, tokenizer, pairs, opts, prefix: str) -> tuple[dict, list[str]]:
    """BLEU of the model's translations of the sources against the targets, and the translations.
    Translated in eval mode (no dropout) whatever model.generate does itself: ours switches to it,
    transformers' generate (bench/t5_translation.py) does not."""
    start = time.perf_counter()
    with generation_mode(model):
        hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs],
                                     batch_size=opts.per_device_eval_batch_size,
                                     max_source_length=opts.max_source_length, max_new_tokens=opts.max_target_length,
                                     num_beams=opts.num_beams, source_prefix=opts.source_prefix)
    bleu = corpus_bleu(hypotheses, [t for _, t in pairs])
    return {f"{prefix}_bleu": bleu, f"{prefix}_generation_seconds": time.perf_counter() - start}, hypotheses


def main(argv: Optional[Sequence[str]] = None, replace_model: Optional[Callable] = None) -> int:
    """The tool. replace_model(model) -> the model to train instead of our T5, given ours as built or
    loaded here (config and weights): bench/t5_translation.py puts transformers' T5 with the same
    weights in its place, so everything else (data, Trainer, evaluation, files) is this code."""
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: tokenizer, model, data
    train_pairs = first(split_pairs(opts, "train"), opts.max_train_samples, "--max_train_samples")
    if train_pairs is None:
        raise ConfigError("no training data: pass --train_file (with --source_column/--target_column) or "
                          "--train_source_file and --train_target_file")
    eval_pairs = first(split_pairs(opts, "validation"), opts.max_eval_samples, "--max_eval_samples")
    test_pairs = split_pairs(opts, "test")
    tokenizer, model = load_tokenizer_and_model(opts, train_pairs, args.seed, replace_model)
    dataset = lambda pairs: Seq2SeqDataset(tokenizer, pairs, opts.max_source_length, opts.max_target_length,  # noqa: E731
                                           opts.source_prefix)
    train_set = dataset(train_pairs)
    eval_set = dataset(eval_pairs) if eval_pairs else None
    print(f"minit5.finetune: {model.num_parameters() / 1e6:.2f}M parameters, {len(train_pairs):,} training pairs"
          + (f", {len(eval_pairs):,} validation pairs" if eval_pairs else ""), file=sys.stderr)
    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer,
                      data_collator=training_collator(model, DataCollatorForSeq2Seq(tokenizer.pad_token_id)),
                      callbacks=time_budget_callbacks(args, opts))
    result = train_and_save(trainer, args.output_dir, train_samples=len(train_pairs))
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    for prefix, pairs, data in (("eval", eval_pairs, eval_set), ("test", test_pairs, None)):
        if not pairs:
            continue
        metrics = trainer.evaluate(data if data is not None else dataset(pairs), metric_key_prefix=prefix)
        metrics = {k: v for k, v in metrics.items() if not k.endswith(("_per_second", "_runtime"))}
        bleu, hypotheses = score(model, tokenizer, pairs, opts, prefix)
        metrics.update(bleu, **{f"{prefix}_samples": len(pairs), "num_beams": opts.num_beams})
        write_json(output_dir / f"{prefix}_results.json", metrics)
        name = "generated_predictions.txt" if prefix == "test" or test_pairs is None else "eval_predictions.txt"
        (output_dir / name).write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
        print(f"{prefix}_loss {metrics[f'{prefix}_loss']:.4f}  {prefix}_bleu {metrics[f'{prefix}_bleu']:.2f}")
    print(f"model and tokenizer saved to {output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
