"""python -m minibert.finetune: fine-tune a BERT on labeled data (classification, NER or extractive QA).

    python -m minibert.finetune --task classification --model_name_or_path out/bert \\
        --train_file sst2/train.tsv --validation_file sst2/dev.tsv --output_dir out/sst2 --max_train_samples 1000
    python -m minibert.finetune --task ner --model_name_or_path <MiniLM folder> \\
        --train_file conll2003/train.txt --validation_file conll2003/valid.txt --test_file conll2003/test.txt ...

--model_name_or_path is a folder with config.json, the weights and a tokenizer: one of ours (from
minibert.pretrain or an earlier fine-tuning) or a Hugging Face BERT folder. The encoder's weights
are loaded; a head the checkpoint does not have (a pretraining checkpoint has MLM/NSP heads, not a
classifier) starts from random weights, which one line says. --from_scratch keeps only the config
and the tokenizer: every weight random (the baseline that shows what pretraining is worth).

The heads and metrics are in minibert/tasks.py. Flags follow transformers' run_glue.py / run_ner.py
/ run_qa.py (--train_file, --validation_file, --test_file, --text_column_name,
--text_pair_column_name, --label_column_name, --max_seq_length, --max_train_samples,
--max_eval_samples, --doc_stride, ...) plus every TrainingArguments field (--learning_rate,
--num_train_epochs, --per_device_train_batch_size, --seed, --max_time, ...).

Writes to --output_dir: the model (config.json with the label names, model.safetensors), its
tokenizer, eval_results.json (eval_loss and eval_accuracy; eval_precision/recall/f1 for ner;
eval_exact_match/eval_f1 for qa), test_results.json with --test_file, train_results.json, log.jsonl.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.hub.pretrained import (check_tokenizer_fits_model, load_state_dict, prepare_compressed_model,
                                   resolve_model_folder)
from common.errors import ConfigError, run_cli
from common.train.device import set_seed
from common.text.auto import load_tokenizer
from common.train.trainer import Trainer
from minibert import BertConfig
from common.cli.training import (FLAG_NOTE, add_lora_flags, add_training_flags, apply_lora_flags,
                                 time_budget_callbacks, train_and_save, training_arguments, write_json)
from minibert.tasks import TASKS

# TrainingArguments defaults of this tool: run_glue's (learning rate 5e-5, 3 epochs, batch 8), but
# no checkpoints during training (the final model is always saved; --save_strategy steps for them).
RECIPE = dict(per_device_eval_batch_size=64, logging_steps=50, save_strategy="no", warmup_ratio=0.1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minibert.finetune", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a BERT (ours or a Hugging Face folder) for classification, NER or extractive QA.",
        epilog="Example (SST-2 from a pretrained checkpoint):\n"
               "  python -m minibert.finetune --task classification --model_name_or_path out/bert "
               "--train_file train.tsv --validation_file dev.tsv --output_dir out/sst2 --max_train_samples 1000\n"
               "File formats: classification .tsv/.csv (tab, comma or semicolon, detected) or .jsonl with a header; ner CoNLL (`WORD ... TAG` lines, "
               "blank line between sentences); qa SQuAD JSON.\n" + FLAG_NOTE)
    group = parser.add_argument_group("task, model and data")
    add = group.add_argument
    add("--task", required=True, choices=sorted(TASKS),
        help="classification: one label per text (pair); ner: one tag per word; qa: an answer span in a context.")
    add("--model_name_or_path", "--model-name-or-path", required=True,
        help="A folder with config.json, weights and a tokenizer (ours, or a Hugging Face BERT folder).")
    add("--from_scratch", "--from-scratch", action="store_true",
        help="Use only the config and tokenizer of --model_name_or_path; start every weight at random.")
    add("--ignore_mismatched_sizes", "--ignore-mismatched-sizes", action="store_true",
        help="Re-initialise checkpoint weights whose shape differs (e.g. a classifier with another number of labels).")
    add("--classifier_pooling", "--classifier-pooling", choices=("cls", "mean"), default=None,
        help="classification: the classifier reads the pooler on [CLS] (BERT's) or on the mean of the last "
             "hidden states (better from an MLM-only checkpoint, whose [CLS] output was never trained). "
             "Default: the checkpoint's config.json, else cls.")
    add_data_flags(group)
    add_training_flags(parser, RECIPE)
    add_lora_flags(parser, "query,value", "the task's head: classifier, qa_outputs for qa")
    return parser


def add_data_flags(group) -> None:
    """The data flags of minibert.finetune (also minibert.distill's): files, columns, lengths, limits."""
    add = group.add_argument
    add("--tokenizer_name", "--tokenizer-name", default=None,
        help="A tokenizer folder, when it is not the one in --model_name_or_path.")
    add("--train_file", "--train-file", required=True, help="The labeled training file.")
    add("--validation_file", "--validation-file", required=True, help="Labeled file for eval_results.json.")
    add("--test_file", "--test-file", default=None,
        help="Optional labeled file scored once at the end into test_results.json (test_loss, test_f1, ...).")
    add("--text_column_name", "--text-column-name", default="sentence",
        help="classification: the column with the text (default: %(default)s, as GLUE SST-2).")
    add("--text_pair_column_name", "--text-pair-column-name", default=None,
        help="classification: the column with the second text of a pair (default: none).")
    add("--label_column_name", "--label-column-name", default="label",
        help="classification: the column with the label (default: %(default)s).")
    add("--delimiter", default=None,
        help="classification .csv/.tsv: the field delimiter (tab, comma, semicolon or the character); "
             "default: detected from the header line, whatever the extension.")
    add("--max_seq_length", "--max-seq-length", type=int, default=None,
        help="Tokens per example, special tokens included; longer ones are cut (default: 128, 384 for qa, or the model's max_position_embeddings if smaller).")
    add("--doc_stride", "--doc-stride", type=int, default=128,
        help="qa: tokens shared by consecutive windows of a long context (default: %(default)s).")
    add("--max_query_length", "--max-query-length", type=int, default=64,
        help="qa: the question is cut to this many tokens (default: %(default)s).")
    add("--max_train_samples", "--max-train-samples", type=int, default=None,
        help="Train on the first this many training examples only.")
    add("--max_eval_samples", "--max-eval-samples", type=int, default=None,
        help="Evaluate on the first this many validation examples only.")
    add("--encoding", default="utf-8", help="Encoding of the data files (default: %(default)s).")


def first(examples: list, n: Optional[int], flag: str) -> list:
    if n is None:
        return examples
    if n < 1:
        raise ConfigError(f"{flag} must be >= 1, got {n}")
    return examples[:n]


def load_model(opts, task, seed: int):
    """The task's head on the encoder of --model_name_or_path (or all random with --from_scratch);
    prints one line saying what was loaded and what starts from random weights."""
    folder = resolve_model_folder(opts.model_name_or_path)
    labels = {}
    if task.id2label is not None:
        id2label = task.id2label
        labels = dict(num_labels=len(id2label), id2label=id2label,
                      label2id={label: i for i, label in id2label.items()})
    if getattr(opts, "classifier_pooling", None) is not None:
        if opts.task != "classification":
            raise ConfigError(f"--classifier_pooling is for --task classification, not {opts.task}; drop the flag")
        labels["classifier_pooling"] = opts.classifier_pooling
    config = BertConfig.from_pretrained(folder, **labels)
    if config.extra.get("quantization_config"):
        raise ConfigError(f"{folder} is an int8 folder (quantization_config in config.json); fine-tune the float "
                          "model it was quantized from, then quantize the result")
    torch.manual_seed(seed)  # the head's initial weights follow --seed
    model = task.model_class(config)
    prepare_compressed_model(model, config)  # a pruned folder: its heads removed before the weights load
    if opts.from_scratch:
        print(f"minibert.finetune: --from_scratch: the config and tokenizer of {folder}, every weight random",
              file=sys.stderr)
        return model
    state_dict = task.model_class.convert_state_dict(load_state_dict(folder), config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # replaced by the one line below
        missing, unexpected = model.load_pretrained_state_dict(
            state_dict, source=str(folder), ignore_mismatched_sizes=opts.ignore_mismatched_sizes)
    model.train()
    encoder_missing = [k for k in missing if k.startswith("bert.") and ".pooler." not in k]
    if encoder_missing:
        raise ConfigError(f"{folder}: {len(encoder_missing)} encoder weights are missing (e.g. {encoder_missing[0]}); "
                          "is this a BERT checkpoint? Use --from_scratch to train from random weights")
    new = ", ".join(sorted({k.rsplit(".", 1)[0] for k in missing})) or "none"
    print(f"minibert.finetune: encoder loaded from {folder}; {task.head} is new (random): {new}; "
          f"{len(unexpected)} checkpoint weights unused (e.g. pretraining heads)", file=sys.stderr)
    return model


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: tokenizer, model, head, data
    if opts.delimiter is not None and opts.task != "classification":
        raise ConfigError(f"--delimiter is for --task classification files, not --task {opts.task}; drop it")
    task = TASKS[opts.task](opts)
    train_examples = first(task.load(opts.train_file), opts.max_train_samples, "--max_train_samples")
    eval_examples = first(task.load(opts.validation_file), opts.max_eval_samples, "--max_eval_samples")
    test_examples = task.load(opts.test_file) if opts.test_file else None

    tokenizer = load_tokenizer(opts.tokenizer_name or opts.model_name_or_path)
    model = load_model(opts, task, args.seed)
    if opts.max_seq_length is None:
        opts.max_seq_length = min(384 if opts.task == "qa" else 128, model.config.max_position_embeddings)
    check_tokenizer_fits_model(tokenizer, model.config.vocab_size, f"the model in {opts.model_name_or_path}")
    if opts.max_seq_length > model.config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {opts.max_seq_length} exceeds the model's max_position_embeddings "
                          f"({model.config.max_position_embeddings}); use --max_seq_length "
                          f"{model.config.max_position_embeddings} or less")
    train_set = task.dataset(tokenizer, train_examples)
    eval_set = task.dataset(tokenizer, eval_examples)
    if opts.lora_modules_to_save is None:  # the new head is random: it must learn
        opts.lora_modules_to_save = "qa_outputs" if opts.task == "qa" else "classifier"
    lora = apply_lora_flags(model, opts, "minibert.finetune", base_model_name_or_path=opts.model_name_or_path)
    print(f"minibert.finetune: {opts.task}, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"{len(train_examples):,} training and {len(eval_examples):,} validation examples"
          + (f", labels {task.label_list}" if task.id2label is not None and len(task.label_list) <= 20 else ""),
          file=sys.stderr)

    trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer,
                      data_collator=task.collator(tokenizer), compute_metrics=task.compute_metrics(),
                      callbacks=time_budget_callbacks(args, opts))
    result = train_and_save(trainer, args.output_dir, lora, train_samples=len(train_examples))
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    runtime = result.metrics["train_runtime"]
    metrics = task.evaluate(trainer, eval_set, eval_examples, "eval")
    results = {k: v for k, v in metrics.items() if not k.endswith(("_per_second", "_runtime"))}
    results.update(eval_samples=len(eval_examples), train_steps=result.global_step, train_runtime=runtime)
    write_json(output_dir / "eval_results.json", results)
    print("  ".join(f"{k} {v:.4f}" for k, v in sorted(results.items())
                    if k.startswith("eval_") and k != "eval_samples"))
    if test_examples is not None:
        test = task.evaluate(trainer, task.dataset(tokenizer, test_examples), test_examples, "test")
        test = {k: v for k, v in test.items() if not k.endswith(("_per_second", "_runtime"))}
        test["test_samples"] = len(test_examples)
        write_json(output_dir / "test_results.json", test)
        print("  ".join(f"{k} {v:.4f}" for k, v in sorted(test.items()) if k != "test_samples"))
    print(f"model and tokenizer saved to {output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
