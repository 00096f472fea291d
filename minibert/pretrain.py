"""python -m minibert.pretrain: pretrain a BERT on unlabeled text (masked LM, optionally + next-sentence prediction).

    python -m minibert.pretrain --train_file sentences.txt --line_by_line --vocab_size 8000 \\
        --output_dir out/bert --max_time 600
    python -m minibert.finetune --task classification --model_name_or_path out/bert ...

Without --nsp: BertForMaskedLM learns L_MLM = -(1/|I|) sum_{i in I} log p(x_i | x~) on
[CLS] line [SEP] examples (--line_by_line) or on the whole file cut into blocks of --max_seq_length
tokens; x~ the corrupted input, I = the positions the collator selected (--mlm_probability, then 80% [MASK] / 10% random /
10% unchanged, common/data/language_modeling.py:DataCollatorForLanguageModeling).
With --nsp: BertForPreTraining on [CLS] A [SEP] B [SEP] pairs (one sentence per line, a blank line
between documents; common/data/language_modeling.py:TextDatasetForNextSentencePrediction) learns
L = L_MLM + L_NSP, L_NSP = -log p(IsNext/NotNext | [CLS]).

The tokenizer is --tokenizer_name (a saved tokenizer folder) or a SentencePiece model with BERT's
special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) trained here on --train_file with --vocab_size
pieces. Flags follow transformers' run_mlm.py (--train_file, --validation_file,
--validation_split_percentage, --max_seq_length, --line_by_line, --mlm_probability,
--config_overrides, --tokenizer_name, --model_name_or_path) plus every TrainingArguments field.

Writes to --output_dir: config.json, model.safetensors, the tokenizer files, eval_results.json
(eval_loss, perplexity = exp(MLM loss); with --nsp also eval_mlm_accuracy, eval_nsp_accuracy),
train_results.json, log.jsonl and checkpoint-<step>/ folders (--resume_from_checkpoint latest).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from common.hub.pretrained import check_tokenizer_fits_model
from common.data.language_modeling import (DataCollatorForLanguageModeling, GroupedTextDataset, LineByLineTextDataset,
                         TextDatasetForNextSentencePrediction, read_nonempty_text)
from minibert.metrics import evaluate_pretraining
from common.errors import ConfigError
from common.errors import run_cli
from common.data.switches import WithSwitches
from common.train.device import set_seed
from common.text.auto import SentencePieceTokenizer, load_tokenizer
from common.train.trainer import Trainer
from minibert import BertConfig, BertForMaskedLM, BertForPreTraining
from common.cli.training import (FLAG_NOTE, add_training_flags, parse_config_overrides, perplexity,
                                 time_budget_callbacks, train_and_save, training_arguments, write_json)

# A small BERT for a CPU: 4 layers of width 256 (BERT-mini's shape; about 5M parameters + the embeddings).
MODEL_DEFAULTS = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                      max_position_embeddings=512)
# What this tool passes to forward with every batch (common/data/switches.py), never saved in the model:
# the same loss and gradients, the last layer and the MLM head only where the loss reads (minibert/masked_only.py).
TRAINING_SWITCHES = dict(mlm_logits_at_masked_only=True)
# TrainingArguments defaults of this tool: a small model from scratch takes a larger step than
# BERT-base's 1e-4; checkpoints every 1000 steps, the newest two kept.
RECIPE = dict(learning_rate=5e-4, per_device_train_batch_size=32, per_device_eval_batch_size=64, weight_decay=0.01,
              warmup_ratio=0.05, num_train_epochs=1.0, logging_steps=100, save_steps=1000, save_total_limit=2)
DEFAULT_VOCAB_SIZE = 8000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minibert.pretrain", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Pretrain a BERT on unlabeled text: masked LM, and with --nsp next-sentence prediction too.",
        epilog="Example (10 minutes on a laptop CPU):\n"
               "  python -m minibert.pretrain --train_file sentences.txt --line_by_line --vocab_size 8000 "
               "--output_dir out/bert --max_time 600\n" + FLAG_NOTE)
    data = parser.add_argument_group("data, tokenizer and model")
    add = data.add_argument
    add("--train_file", "--train-file", required=True,
        help="A UTF-8 text file. Without --nsp: any text (one example per line with --line_by_line). With --nsp: "
             "one sentence per line, a blank line between documents.")
    add("--validation_file", "--validation-file", default=None,
        help="A text file of the same kind for eval_loss (then --validation_split_percentage is ignored).")
    add("--validation_split_percentage", "--validation-split-percentage", type=float, default=5.0,
        help="Without --validation_file: keep the LAST this percent of the lines of --train_file for validation; "
             "0 keeps none (default: %(default)s).")
    add("--tokenizer_name", "--tokenizer-name", default=None,
        help="A folder with a saved tokenizer (vocab.txt or a SentencePiece *.model) to use as is.")
    add("--vocab_size", "--vocab-size", type=int, default=None,
        help=f"Without --tokenizer_name: train a SentencePiece tokenizer of this many pieces on --train_file "
             f"(default: {DEFAULT_VOCAB_SIZE}).")
    add("--tokenizer_type", "--tokenizer-type", choices=("unigram", "bpe"), default="unigram",
        help="SentencePiece algorithm for the trained tokenizer (default: %(default)s).")
    add("--do_lower_case", "--do-lower-case", action="store_true",
        help="The trained tokenizer folds case (like bert-base-uncased).")
    add("--character_coverage", "--character-coverage", type=float, default=1.0,
        help="Share of the training text's characters the trained tokenizer keeps as pieces; the rarest rest "
             "become [UNK]. 1.0 keeps every character (an alphabet); SentencePiece advises 0.9995 for Chinese "
             "or Japanese, whose thousands of characters include many seen once (default: %(default)s).")
    add("--model_name_or_path", "--model-name-or-path", default=None,
        help="Continue pretraining a saved model folder (ours or a Hugging Face BERT folder) and its tokenizer.")
    add("--config_overrides", "--config-overrides", default="",
        help="BertConfig fields as 'key=value,...', e.g. \"hidden_size=128,num_hidden_layers=2,"
             "num_attention_heads=2,intermediate_size=512\" (defaults: "
             f"{','.join(f'{k}={v}' for k, v in MODEL_DEFAULTS.items())}).")
    add("--max_seq_length", "--max-seq-length", type=int, default=128,
        help="Tokens per example (a line, a block, or an NSP pair), special tokens included (default: %(default)s).")
    add("--line_by_line", "--line-by-line", action="store_true",
        help="One example per non-empty line ([CLS] line [SEP]) instead of the file cut into blocks.")
    add("--mlm_probability", "--mlm-probability", type=float, default=0.15,
        help="Share of tokens selected for the MLM loss (default: %(default)s).")
    add("--nsp", action="store_true",
        help="Also next-sentence prediction: BertForPreTraining on [CLS] A [SEP] B [SEP] pairs (50%% IsNext).")
    add("--nsp_probability", "--nsp-probability", type=float, default=0.5,
        help="With --nsp: probability that B is a random other document's segment (NotNext) (default: %(default)s).")
    add("--short_seq_probability", "--short-seq-probability", type=float, default=0.1,
        help="With --nsp: probability of a shorter target length for a pair (default: %(default)s).")
    add("--encoding", default="utf-8", help="Encoding of the text files (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    return parser


# ---------------------------------------------------------------- pieces


def split_lines(text: str, percentage: float) -> tuple[str, str]:
    """The first (100 - percentage)% of the lines and the last percentage%, each as text."""
    if not 0.0 <= percentage < 100.0:
        raise ConfigError(f"--validation_split_percentage must be in [0, 100), got {percentage}")
    lines = text.splitlines()
    n_validation = int(len(lines) * percentage / 100.0)
    cut = len(lines) - n_validation
    return "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:]) + ("\n" if n_validation else "")


def build_tokenizer(opts, train_file):
    if not 0.0 < opts.character_coverage <= 1.0:
        raise ConfigError(f"--character_coverage must be in (0, 1], got {opts.character_coverage}")
    if opts.model_name_or_path is not None or opts.tokenizer_name is not None:
        if opts.vocab_size is not None:
            raise ConfigError("--vocab_size trains a NEW tokenizer; with --tokenizer_name / --model_name_or_path "
                              "the saved one is used (drop --vocab_size)")
        return load_tokenizer(opts.tokenizer_name or opts.model_name_or_path)
    print(f"minibert.pretrain: training a SentencePiece {opts.tokenizer_type} tokenizer on {train_file}",
          file=sys.stderr)
    return SentencePieceTokenizer.train(str(train_file), opts.vocab_size or DEFAULT_VOCAB_SIZE,
                                        model_type=opts.tokenizer_type, special_tokens_style="bert",
                                        do_lower_case=opts.do_lower_case,
                                        character_coverage=opts.character_coverage)


def build_model(opts, tokenizer, overrides: dict):
    model_class = BertForPreTraining if opts.nsp else BertForMaskedLM
    if opts.model_name_or_path is not None:
        if opts.config_overrides:
            raise ConfigError("--config_overrides shapes a NEW model; with --model_name_or_path the saved config is used")
        model = model_class.from_pretrained(opts.model_name_or_path)
        model.train()
    else:
        model = model_class(BertConfig(**{**MODEL_DEFAULTS, "vocab_size": len(tokenizer),
                                          "pad_token_id": tokenizer.pad_token_id, **overrides}))
    check_tokenizer_fits_model(tokenizer, model.config.vocab_size, "--config_overrides")
    if opts.max_seq_length > model.config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {opts.max_seq_length} exceeds the model's max_position_embeddings "
                          f"({model.config.max_position_embeddings}); lower it or raise max_position_embeddings")
    return model


def build_dataset(opts, tokenizer, path, seed: int):
    if opts.nsp:
        return TextDatasetForNextSentencePrediction(tokenizer, path, opts.max_seq_length, opts.nsp_probability,
                                                    opts.short_seq_probability, seed=seed, encoding=opts.encoding)
    dataset_class = LineByLineTextDataset if opts.line_by_line else GroupedTextDataset
    return dataset_class(tokenizer, path, opts.max_seq_length, encoding=opts.encoding)


def prepare_files(opts, folder: Path) -> tuple[Path, Optional[Path]]:
    """(train file, validation file or None); a split of --train_file is written into `folder`."""
    if opts.validation_file is not None:
        read_nonempty_text(opts.validation_file, opts.encoding, "--validation_file")
        return Path(opts.train_file), Path(opts.validation_file)
    text = read_nonempty_text(opts.train_file, opts.encoding, "--train_file")
    if opts.validation_split_percentage == 0:
        return Path(opts.train_file), None
    train_text, validation_text = split_lines(text, opts.validation_split_percentage)
    if not validation_text.strip() or not train_text.strip():
        raise ConfigError(f"--validation_split_percentage {opts.validation_split_percentage} of {opts.train_file} "
                          "leaves an empty split; give --validation_file, a longer file, or 0")
    documents = [chunk for chunk in re.split(r"\n\s*\n", validation_text) if chunk.strip()]
    if opts.nsp and opts.nsp_probability > 0 and len(documents) < 2:
        raise ConfigError(f"--validation_split_percentage {opts.validation_split_percentage} keeps {len(documents)} "
                          f"document of {opts.train_file} for validation; --nsp needs >= 2 (NotNext pairs): raise "
                          "the percentage or give --validation_file")
    (folder / "train.txt").write_text(train_text, encoding="utf-8")
    (folder / "validation.txt").write_text(validation_text, encoding="utf-8")
    return folder / "train.txt", folder / "validation.txt"


def final_evaluation(trainer: Trainer, opts, tokenizer, eval_set, seed: int) -> dict:
    """eval_loss over the whole validation set with masks drawn from `seed` (the same every call)."""
    def collator():
        return WithSwitches(DataCollatorForLanguageModeling(tokenizer, mlm_probability=opts.mlm_probability, seed=seed),
                            **TRAINING_SWITCHES)
    trainer.data_collator = collator()
    metrics = trainer.evaluate(eval_set)
    results = {"eval_loss": metrics["eval_loss"], "eval_samples": len(eval_set)}
    if opts.nsp:
        scores = evaluate_pretraining(trainer.model, eval_set, collator, trainer.args.per_device_eval_batch_size)
        results.update(eval_mlm_loss=scores["heldout_mlm_loss"], eval_mlm_accuracy=scores["heldout_mlm_accuracy"],
                       eval_nsp_accuracy=scores["heldout_nsp_accuracy"])
        results["perplexity"] = perplexity(scores["heldout_mlm_loss"])
    else:
        results["perplexity"] = perplexity(metrics["eval_loss"])
    return results


# ---------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: tokenizer, model, head, data
    overrides = parse_config_overrides(opts.config_overrides, BertConfig)  # bad values fail before any work
    with tempfile.TemporaryDirectory(prefix="minibert_pretrain_") as scratch:
        train_file, validation_file = prepare_files(opts, Path(scratch))
        tokenizer = build_tokenizer(opts, train_file)
        model = build_model(opts, tokenizer, overrides)
        train_set = build_dataset(opts, tokenizer, train_file, args.seed)
        eval_set = build_dataset(opts, tokenizer, validation_file, args.seed + 1) if validation_file else None
    c = model.config
    print(f"minibert.pretrain: {type(model).__name__} of {model.num_parameters() / 1e6:.2f}M parameters (layers "
          f"{c.num_hidden_layers}, width {c.hidden_size}, heads {c.num_attention_heads}), {type(tokenizer).__name__} of "
          f"{len(tokenizer)} tokens; {len(train_set):,} training and {len(eval_set) if eval_set else 0:,} validation "
          f"{'pairs' if opts.nsp else 'examples'} of <= {opts.max_seq_length} tokens", file=sys.stderr)

    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer,
                      data_collator=WithSwitches(DataCollatorForLanguageModeling(
                          tokenizer, mlm_probability=opts.mlm_probability, seed=args.seed), **TRAINING_SWITCHES),
                      callbacks=time_budget_callbacks(args, opts))
    result = train_and_save(trainer, args.output_dir, train_samples=len(train_set))
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    if eval_set is None:
        print("no validation data (--validation_split_percentage 0 and no --validation_file): "
              "eval_results.json not written", file=sys.stderr)
    else:
        results = final_evaluation(trainer, opts, tokenizer, eval_set, args.seed)
        results.update(train_steps=result.global_step, train_runtime=result.metrics["train_runtime"])
        write_json(output_dir / "eval_results.json", results)
        print(f"eval_loss {results['eval_loss']:.4f}  perplexity {results['perplexity']:.2f}  "
              f"({result.global_step} steps, {result.metrics['train_runtime']:.0f} s)")
    print(f"model and tokenizer saved to {output_dir}; fine-tune with: python -m minibert.finetune --task "
          f"classification --model_name_or_path {output_dir} ...", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
