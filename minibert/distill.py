"""python -m minibert.distill: a smaller BERT learns a fine-tuned teacher's outputs (knowledge distillation).

    python -m minibert.distill --task classification --teacher_name_or_path out/sst2 \\
        --train_file sst2/train.tsv --validation_file sst2/dev.tsv --student_num_hidden_layers 3 \\
        --temperature 2 --alpha_ce 0.5 --alpha_task 0.5 --output_dir out/sst2-student

The loss (common/nn/distillation.py, trained by common/train/distillation.py):
    L = alpha_ce * T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + alpha_task * L_task + alpha_cos * L_cos
The student is the teacher's class and config with fewer layers (--student_num_hidden_layers);
--student_init teacher_layers (DistilBERT's rule, the default) copies every other teacher layer
(student layer i = teacher layer 2i) and everything outside the layers (embeddings, pooler, head);
--student_init scratch starts from random weights, and may then also be narrower
(--student_hidden_size, --student_num_attention_heads, --student_intermediate_size).
--alpha_ce 0 --alpha_task 1 is the same student fine-tuned without its teacher (the baseline).

Data and training flags are minibert.finetune's (--train_file, --max_seq_length, --max_train_samples,
--learning_rate, --max_time, ...); the student folder (config.json, model.safetensors, the teacher's
tokenizer, eval_results.json, train_results.json) loads like any other fine-tuned model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.cli.training import FLAG_NOTE, add_training_flags, time_budget_callbacks, train_and_save, \
    training_arguments, write_json
from common.errors import ConfigError, run_cli
from common.hub.pretrained import check_tokenizer_fits_model, resolve_model_folder
from common.nn.distillation import every_other_layer
from common.text.auto import load_tokenizer
from common.train.device import set_seed
from common.train.distillation import DistillationTrainer
from common.train.trainer import Trainer
from minibert.config import BertConfig
from minibert.finetune import RECIPE, add_data_flags, first
from minibert.tasks import TASKS

PROG = "python -m minibert.distill"
STUDENT_SIZES = ("hidden_size", "num_attention_heads", "intermediate_size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distil a fine-tuned BERT (the teacher) into a smaller student on labeled data.",
        epilog="Example (SST-2):\n  python -m minibert.distill --task classification --teacher_name_or_path out/sst2 "
               "--train_file train.tsv --validation_file dev.tsv --student_num_hidden_layers 3 --output_dir out/student\n"
               + FLAG_NOTE)
    group = parser.add_argument_group("task, teacher, student and data")
    add = group.add_argument
    add("--task", required=True, choices=("classification", "ner"),
        help="classification: one label per text (pair); ner: one tag per word (per-token distillation).")
    add("--teacher_name_or_path", "--teacher-name-or-path", required=True,
        help="The fine-tuned teacher folder (minibert.finetune's output): its head, labels and tokenizer.")
    add("--student_num_hidden_layers", "--student-num-hidden-layers", type=int, required=True,
        help="Layers of the student (at most the teacher's).")
    add("--student_init", "--student-init", choices=("teacher_layers", "scratch"), default="teacher_layers",
        help="teacher_layers: copy every other teacher layer and the rest of the teacher (DistilBERT); "
             "scratch: random weights (default: %(default)s).")
    for name in STUDENT_SIZES:
        add(f"--student_{name}", f"--student-{name.replace('_', '-')}", type=int, default=None,
            help=f"With --student_init scratch: the student's {name} (default: the teacher's; at most the teacher's).")
    group = parser.add_argument_group("distillation loss")
    add = group.add_argument
    add("--temperature", type=float, default=2.0, help="T of the soft targets (default: %(default)s).")
    add("--alpha_ce", "--alpha-ce", type=float, default=0.5,
        help="Weight of T^2 KL(teacher || student) (default: %(default)s).")
    add("--alpha_task", "--alpha-task", type=float, default=0.5,
        help="Weight of the student's loss on the labels (default: %(default)s).")
    add("--alpha_cos", "--alpha-cos", type=float, default=0.0,
        help="Weight of the cosine loss between the last hidden states (needs equal widths; default: %(default)s).")
    add_data_flags(parser.add_argument_group("data (as minibert.finetune)"))
    add_training_flags(parser, RECIPE)
    return parser


def check_loss_weights(opts) -> None:
    if opts.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {opts.temperature}")
    for flag in ("alpha_ce", "alpha_task", "alpha_cos"):
        if getattr(opts, flag) < 0:
            raise ConfigError(f"--{flag} must be >= 0, got {getattr(opts, flag)}")
    if opts.alpha_ce + opts.alpha_task + opts.alpha_cos == 0:
        raise ConfigError("--alpha_ce, --alpha_task and --alpha_cos are all 0: nothing to learn from")


def student_config(teacher_config: BertConfig, opts) -> BertConfig:
    """The teacher's config with the student's depth (and, from scratch, width); never larger."""
    values = {k: v for k, v in teacher_config.to_dict().items() if k not in ("pruned_heads", "quantization_config")}
    if opts.student_num_hidden_layers > teacher_config.num_hidden_layers or opts.student_num_hidden_layers < 1:
        raise ConfigError(f"--student_num_hidden_layers {opts.student_num_hidden_layers}: the teacher has "
                          f"{teacher_config.num_hidden_layers} layers; a student has 1 to "
                          f"{teacher_config.num_hidden_layers} (it is smaller than its teacher)")
    values["num_hidden_layers"] = opts.student_num_hidden_layers
    for name in STUDENT_SIZES:
        size = getattr(opts, f"student_{name}")
        if size is None:
            continue
        if size > getattr(teacher_config, name):
            raise ConfigError(f"--student_{name} {size} is wider than the teacher's {name} "
                              f"({getattr(teacher_config, name)}); a student is at most as wide as its teacher")
        if opts.student_init != "scratch" and size != getattr(teacher_config, name):
            raise ConfigError(f"--student_{name} {size} differs from the teacher's {getattr(teacher_config, name)}: "
                              "copied teacher layers keep the teacher's width; add --student_init scratch")
        values[name] = size
    if opts.alpha_cos and values["hidden_size"] != teacher_config.hidden_size:
        raise ConfigError("--alpha_cos compares hidden states, which needs the teacher's hidden_size; "
                          "drop --alpha_cos or --student_hidden_size")
    return BertConfig.from_dict(values)


def student_from_teacher(teacher, config: BertConfig, init: str, seed: int):
    """A model of the teacher's class with `config`; teacher_layers copies every weight outside the
    encoder layers and student layer i from teacher layer every_other_layer(...)[i]."""
    torch.manual_seed(seed)
    student = type(teacher)(config)
    if init == "scratch":
        return student
    layers = every_other_layer(teacher.config.num_hidden_layers, config.num_hidden_layers)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        parts = key.split(".")
        if "layer" in parts and parts[parts.index("layer") - 1] == "encoder":
            i = parts.index("layer") + 1
            parts[i] = str(layers[int(parts[i])])
        state[key] = source[".".join(parts)].clone()
    student.load_state_dict(state)
    print(f"{PROG}: student layers 0..{len(layers) - 1} copied from teacher layers {layers} "
          "(and the embeddings, pooler and head)", file=sys.stderr)
    return student


def check_teacher(teacher, task, folder, tokenizer, teacher_tokenizer) -> None:
    """The teacher must be a float, unpruned model of the task whose labels are the data's."""
    extra = teacher.config.extra
    if extra.get("quantization_config") or extra.get("pruned_heads"):
        raise ConfigError(f"{folder} is quantized or pruned; distil from the float teacher it was made from")
    teacher_labels = {int(i): str(label) for i, label in (teacher.config.id2label or {}).items()}
    if teacher_labels != task.id2label:
        raise ConfigError(f"the teacher in {folder} predicts the labels {sorted(teacher_labels.values())}, the "
                          f"training data has {sorted(task.id2label.values())}; distil on data of the task the "
                          "teacher was fine-tuned for (same label names)")
    if tokenizer is not teacher_tokenizer:
        vocab, teacher_vocab = tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
        if vocab != teacher_vocab:
            raise ConfigError(f"--tokenizer_name has {len(vocab)} tokens, the teacher's tokenizer in {folder} "
                              f"{len(teacher_vocab)} (or other ids): teacher and student must read the same "
                              "tokens; drop --tokenizer_name")


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    check_loss_weights(opts)
    args = training_arguments(opts)
    set_seed(args.seed)
    task = TASKS[opts.task](opts)
    train_examples = first(task.load(opts.train_file), opts.max_train_samples, "--max_train_samples")
    eval_examples = first(task.load(opts.validation_file), opts.max_eval_samples, "--max_eval_samples")
    folder = resolve_model_folder(opts.teacher_name_or_path)
    teacher = task.model_class.from_pretrained(folder)
    teacher_tokenizer = load_tokenizer(folder)
    tokenizer = load_tokenizer(opts.tokenizer_name) if opts.tokenizer_name else teacher_tokenizer
    check_teacher(teacher, task, folder, tokenizer, teacher_tokenizer)
    check_tokenizer_fits_model(tokenizer, teacher.config.vocab_size, f"the teacher in {folder}")
    config = student_config(teacher.config, opts)
    student = student_from_teacher(teacher, config, opts.student_init, args.seed)
    if opts.max_seq_length is None:
        opts.max_seq_length = min(128, config.max_position_embeddings)
    if opts.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"--max_seq_length {opts.max_seq_length} exceeds max_position_embeddings "
                          f"({config.max_position_embeddings}); use {config.max_position_embeddings} or less")
    train_set, eval_set = task.dataset(tokenizer, train_examples), task.dataset(tokenizer, eval_examples)
    print(f"{PROG}: teacher {teacher.num_parameters() / 1e6:.2f}M parameters ({teacher.config.num_hidden_layers} "
          f"layers), student {student.num_parameters() / 1e6:.2f}M ({config.num_hidden_layers} layers, "
          f"{opts.student_init}); T={opts.temperature:g} alpha_ce={opts.alpha_ce:g} alpha_task={opts.alpha_task:g} "
          f"alpha_cos={opts.alpha_cos:g}; {len(train_examples):,} training examples", file=sys.stderr)
    common = dict(train_dataset=train_set, eval_dataset=eval_set, tokenizer=tokenizer,
                  data_collator=task.collator(tokenizer), compute_metrics=task.compute_metrics(),
                  callbacks=time_budget_callbacks(args, opts))
    if opts.alpha_ce == 0 and opts.alpha_cos == 0:  # no teacher term: plain fine-tuning on the labels
        trainer = Trainer(student, args, **common)
    else:
        trainer = DistillationTrainer(student, args, teacher=teacher, temperature=opts.temperature,
                                      alpha_ce=opts.alpha_ce, alpha_task=opts.alpha_task,
                                      alpha_cos=opts.alpha_cos, **common)
    result = train_and_save(trainer, args.output_dir, None, train_samples=len(train_examples),
                            teacher=str(folder), temperature=opts.temperature, alpha_ce=opts.alpha_ce,
                            alpha_task=opts.alpha_task, alpha_cos=opts.alpha_cos, student_init=opts.student_init)
    if result is None:
        return 0
    metrics = task.evaluate(trainer, eval_set, eval_examples, "eval")
    results = {k: v for k, v in metrics.items() if not k.endswith(("_per_second", "_runtime"))}
    results.update(eval_samples=len(eval_examples), train_steps=result.global_step,
                   train_runtime=result.metrics["train_runtime"])
    write_json(Path(args.output_dir) / "eval_results.json", results)
    print("  ".join(f"{k} {v:.4f}" for k, v in sorted(results.items())
                    if k.startswith("eval_") and k != "eval_samples"))
    print(f"student and tokenizer saved to {args.output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
