"""python -m minigpt.train: train a GPT on a text file, report the validation loss, print a sample.

    python -m minigpt.train --train_file ../shared/data/tinyshakespeare.txt --output_dir out/shakespeare --max_time 60
    python -m minigpt.sample --model_name_or_path out/shakespeare --prompt "ROMEO:"

The model learns L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t)
over windows of block_size tokens
(minigpt/text_data.py); the validation loss is the same mean over the whole validation split, and
perplexity = exp(eval_loss). Flags are those of transformers' run_clm.py where the concept exists
(--train_file, --validation_file, --validation_split_percentage, --config_overrides, --block_size,
--max_eval_samples, --model_name_or_path) plus every TrainingArguments field (--learning_rate,
--max_time, --bf16, ...).

The defaults are a laptop recipe for a character-level file (see RECIPE and MODEL_DEFAULTS below,
and docs/results/minigpt.md for what they reach on tiny shakespeare in 60 s on 2 CPU cores). With
--max_time the learning rate decays over the time budget (common/train/time_budget.py), so the decay
ends when the time does, however fast the machine is.

Writes to --output_dir: config.json, model.safetensors, the tokenizer files, eval_results.json
(eval_loss, perplexity), train_results.json (with bf16 and bf16_reason: the precision the run trained
in, and why), log.jsonl (plot it with common/cli/plot_logs.py) and checkpoint-<step>/ folders
(resume with --resume_from_checkpoint latest).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Subset

from common.hub.pretrained import check_tokenizer_fits_model
from common.cli.training import (add_lora_flags, add_training_flags, apply_lora_flags, parse_config_overrides,
                                 perplexity, save_trained_model, time_budget_callbacks, training_arguments,
                                 write_json)
from common.data.language_modeling import read_nonempty_text
from common.train.device import autocast_context, pick_device, set_seed
from common.errors import ConfigError, run_cli
from common.nn.lora import merge_and_unload
from common.text.auto import BPETokenizer, CharTokenizer, SentencePieceTokenizer, load_tokenizer
from common.train.trainer import Trainer
from common.train.utils import TrainerCallback
from minigpt.config import GPTConfig
from minigpt.model import GPT
from minigpt.sample import sample_texts
from minigpt.text_data import TokenBlocks, encode_stream, split_train_validation

# The model of nanoGPT's CPU recipe for tiny shakespeare (4 layers, 4 heads, 128 wide, context 64,
# no dropout): small enough to take thousands of steps in a minute on 2 cores.
MODEL_DEFAULTS = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0)

# TrainingArguments defaults of this tool (the dataclass's own defaults suit fine-tuning).
# Measured on tiny shakespeare, 2 CPU cores: docs/results/minigpt.md.
RECIPE = dict(
    # optim: Muon for a new model (the hidden matrices; 2.24 -> 1.93 after 200 steps, minigpt.md),
    # AdamW when fine-tuning (--model_name_or_path, --lora_r): see main()
    muon_learning_rate=0.05,  # 0.02 gave 2.03 at 200 steps
    learning_rate=6e-3,  # AdamW's (embeddings, head, norms); a 0.8M model takes a far larger step than a 100M one
    per_device_train_batch_size=32,  # in a fixed time, more small steps beat fewer large ones (here)
    per_device_eval_batch_size=64,
    warmup_steps=50,
    lr_scheduler_type="linear",  # decay to 0 in a straight line: 0.01-0.02 lower loss than cosine here
    adam_beta2=0.99,  # nanoGPT's choice for small batches: the second moment follows the gradients faster
    weight_decay=0.1,
    num_train_epochs=10.0,
    logging_steps=100,
    save_steps=1000,
)
# The default of --bf16 (choose_bf16) and of --optim (main). Not a
# string, because argparse would pass a string default through the flag's converter.
AUTO = object()
SENTENCEPIECE_VOCAB_SIZE = 2000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.train", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a GPT on a text file, report the validation loss, print a sample. "
                    "The defaults are a laptop recipe for a character-level file.",
        epilog="Example (tiny shakespeare, about a minute on a laptop):\n"
               "  python -m minigpt.train --train_file tinyshakespeare.txt --output_dir out/shakespeare --max_time 60\n"
               "Every flag also accepts dashes (--train-file). --debug shows the traceback of an error.")
    data = parser.add_argument_group("data and model")
    add = data.add_argument
    add("--train_file", "--train-file", required=True, help="A UTF-8 text file to train on.")
    add("--validation_file", "--validation-file", default=None,
        help="A separate text file for the validation loss (then --validation_split_percentage is ignored).")
    add("--validation_split_percentage", "--validation-split-percentage", type=float, default=10.0,
        help="Without --validation_file: keep the LAST this percent of --train_file (contiguous) for "
             "validation; 0 keeps none (default: %(default)s).")
    add("--tokenizer", choices=("char", "sentencepiece", "bpe"), default="char",
        help="char: one token per character (vocabulary = the characters of the text); sentencepiece: "
             "subword pieces learned from the training split (line breaks become spaces); bpe: GPT-2's "
             "byte-level BPE (common/text/bpe.py) learned from the training split (default: %(default)s).")
    add("--vocab_size", "--vocab-size", type=int, default=None,
        help=f"Vocabulary to learn with --tokenizer sentencepiece or bpe (default: {SENTENCEPIECE_VOCAB_SIZE}; "
             "a bpe vocabulary counts its 256 bytes and <|endoftext|>).")
    add("--config_overrides", "--config-overrides", default="",
        help="GPTConfig fields as 'key=value,...', e.g. \"n_layer=6,n_head=6,n_embd=192,dropout=0.1\" "
             f"(defaults: {','.join(f'{k}={v}' for k, v in MODEL_DEFAULTS.items())}).")
    add("--block_size", "--block-size", type=int, default=None,
        help="Tokens per training window = the model's context (default: the block_size of the config).")
    add("--model_name_or_path", "--model-name-or-path", default=None,
        help="Continue training a saved model folder (its tokenizer too) instead of starting from scratch.")
    add("--max_eval_samples", "--max-eval-samples", type=int, default=None,
        help="Evaluations DURING training (--eval_strategy) use only this many windows, evenly spread; "
             "the final evaluation always uses the whole validation split.")
    add("--encoding", default="utf-8", help="Encoding of the text files (default: %(default)s).")
    add("--sample_tokens", "--sample-tokens", type=int, default=300,
        help="Characters/tokens of text to sample at the end, 0 for none (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    add_lora_flags(parser, "query,value")
    for action in parser._actions:
        if action.dest == "optim":
            action.default = AUTO
            action.help = ("muon or adamw_torch_fused / adamw_torch (default: muon for a new model, AdamW when "
                           "continuing a saved one or training LoRA adapters).")
        if action.dest == "bf16":
            action.default = AUTO
            action.help = ("Run forward and loss under torch.autocast(bfloat16); weights stay float32 "
                           "(default: on a bf16 GPU; on a CPU with native bfloat16 (AVX512-BF16 or AMX) on when "
                           "a timed step of this model is >= 1.1x faster with it (choose_bf16), else off).")
    return parser


# ---------------------------------------------------------------- pieces


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 matrix products run in hardware (else autocast would slow training down)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    return False


BF16_MARGIN = 1.1  # bf16 must be this much faster than float32 to be chosen: a near tie stays float32


def step_seconds(model: GPT, batch_size: int, block_size: int, device: torch.device, repeats: int = 3) -> dict:
    """Median seconds of one forward + backward at the training shape, in float32 and under bf16
    autocast, interleaved (so a load change hits both alike). Leaves no trace: the global RNG is
    restored, the gradients are removed, the weights are not stepped."""
    times = {False: [], True: []}
    with torch.random.fork_rng(devices=[]):
        ids = torch.randint(0, model.config.vocab_size, (batch_size, block_size), device=device)
        for bf16 in (False, True, False, True):  # warm both paths before timing
            with autocast_context(device, bf16):
                model(input_ids=ids, labels=ids).loss.backward()
        for _ in range(repeats):
            for bf16 in (False, True):
                start = time.perf_counter()
                with autocast_context(device, bf16):
                    model(input_ids=ids, labels=ids).loss.backward()
                times[bf16].append(time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return {"float32": statistics.median(times[False]), "bf16": statistics.median(times[True])}


def choose_bf16(model: GPT, batch_size: int, block_size: int, device: torch.device) -> tuple[bool, str]:
    """The default of --bf16: (on?, why). Off without native bfloat16 (native_bf16); on a bf16 GPU;
    on a CPU, measured (step_seconds): whether the bf16 kernels beat float32 depends on the CPU (AMX,
    AVX512-BF16 alone) and on the model's size, and a small model can lose to autocast's casts."""
    if not native_bf16(device):
        return False, "no native bfloat16 on this device"
    if device.type != "cpu":
        return True, f"native bfloat16 on {device.type}"
    seconds = step_seconds(model, batch_size, block_size, device)
    speedup = seconds["float32"] / max(seconds["bf16"], 1e-12)
    chosen = speedup >= BF16_MARGIN
    return chosen, (f"measured {seconds['float32'] * 1e3:.0f} ms per step in float32, {seconds['bf16'] * 1e3:.0f} ms "
                    f"under bf16 ({speedup:.2f}x; chosen at >= {BF16_MARGIN}x; pass --bf16 true/false to fix it)")


def warn_if_cpu_busy(device: torch.device) -> None:
    """torch's CPU threads wait for each other at every operation; when other processes already
    keep the cores busy, those waits can make training 10x slower or worse (measured: 20-50x
    with 2 threads on 2 shared cores). One thread then loses far less."""
    if device.type != "cpu" or not hasattr(os, "getloadavg") or torch.get_num_threads() < 2:
        return
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load >= cores:
        print(f"warning: the CPU is busy (load average {load:.1f} on {cores} cores): torch's "
              f"{torch.get_num_threads()} threads will wait for each other and training can be many times slower; "
              "on a shared machine try OMP_NUM_THREADS=1", file=sys.stderr)


def build_tokenizer(kind: str, train_text: str, validation_text: str, vocab_size: Optional[int]):
    """char: the characters of train + validation text (a character seen only in validation still
    gets an id; its embedding just stays untrained). sentencepiece, bpe: learned from the train split only."""
    if kind == "char":
        if vocab_size is not None:
            raise ConfigError("--vocab_size applies to --tokenizer sentencepiece or bpe; a char tokenizer's vocabulary "
                              "is the set of characters of the text")
        return CharTokenizer.from_text(train_text + validation_text)
    if kind == "bpe":
        return BPETokenizer.train([train_text], vocab_size or SENTENCEPIECE_VOCAB_SIZE)
    return SentencePieceTokenizer.train([train_text], vocab_size or SENTENCEPIECE_VOCAB_SIZE,
                                        special_tokens_style="gpt")


def build_model(opts, tokenizer) -> GPT:
    """A fresh GPT with MODEL_DEFAULTS + --config_overrides + --block_size, sized to the tokenizer."""
    overrides = parse_config_overrides(opts.config_overrides, GPTConfig)
    if opts.block_size is not None:
        if overrides.get("block_size", opts.block_size) != opts.block_size:
            raise ConfigError(f"--block_size {opts.block_size} and --config_overrides block_size="
                              f"{overrides['block_size']} disagree; give one of them")
        overrides["block_size"] = opts.block_size
    fields = {**MODEL_DEFAULTS, "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id, **overrides}
    config = GPTConfig(**fields)
    check_tokenizer_fits_model(tokenizer, config.vocab_size, "--config_overrides")
    return GPT(config)


def load_texts(opts) -> tuple[str, str]:
    text = read_nonempty_text(opts.train_file, opts.encoding, "--train_file")
    if opts.validation_file is not None:
        return text, read_nonempty_text(opts.validation_file, opts.encoding, "--validation_file")
    return split_train_validation(text, opts.validation_split_percentage)


def evenly_spread(dataset, n: Optional[int]):
    """n windows at evenly spaced positions of the dataset (all of it when n is None or large)."""
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ConfigError(f"--max_eval_samples must be >= 1, got {n}")
    return Subset(dataset, [i * len(dataset) // n for i in range(n)])


class TokensAtStart(TrainerCallback):
    """Remembers how many tokens a resumed run had already seen, for this call's tokens/s."""

    tokens = 0

    def on_train_begin(self, trainer) -> None:
        self.tokens = trainer.state.num_input_tokens_seen


# ---------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    auto_bf16 = opts.bf16 is AUTO
    if auto_bf16:
        opts.bf16 = False  # decided below, once the model exists (choose_bf16)
    if opts.optim is AUTO:
        from_scratch = opts.model_name_or_path is None and opts.lora_r is None
        opts.optim = "muon" if from_scratch else "adamw_torch_fused"
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: tokenizer, model, head, data

    train_text, validation_text = load_texts(opts)
    if opts.model_name_or_path is not None:
        if opts.config_overrides or opts.vocab_size is not None:
            raise ConfigError("--config_overrides and --vocab_size shape a NEW model; with --model_name_or_path "
                              "the saved config and tokenizer are used")
        model, tokenizer = GPT.from_pretrained(opts.model_name_or_path), load_tokenizer(opts.model_name_or_path)
        check_tokenizer_fits_model(tokenizer, model.config.vocab_size, f"the model in {opts.model_name_or_path}")
        block_size = opts.block_size or model.config.block_size
        if block_size > model.config.block_size:
            raise ConfigError(f"--block_size {block_size} exceeds the context of the saved model "
                              f"({model.config.block_size}); use --block_size {model.config.block_size} or less")
    else:
        tokenizer = build_tokenizer(opts.tokenizer, train_text, validation_text, opts.vocab_size)
        model = build_model(opts, tokenizer)
        block_size = model.config.block_size

    train_set = TokenBlocks(encode_stream(tokenizer, train_text, "training text"), block_size,
                            random_offset=True, what="training text")
    eval_set = None
    if validation_text:
        eval_set = TokenBlocks(encode_stream(tokenizer, validation_text, "validation text"), block_size,
                               random_offset=False, what="validation text")
    bf16_reason = "--bf16 given"
    if auto_bf16:
        args.bf16, bf16_reason = choose_bf16(model, args.per_device_train_batch_size, block_size,
                                             pick_device(args.use_cpu))
    c = model.config
    print(f"minigpt.train: GPT of {model.num_parameters() / 1e6:.2f}M parameters (layers {c.n_layer}, heads {c.n_head}, "
          f"width {c.n_embd}, context {block_size}), {type(tokenizer).__name__} of {len(tokenizer)} tokens; "
          f"train {len(train_set.ids):,} tokens ({len(train_set):,} windows per epoch), validation "
          f"{len(eval_set.ids) if eval_set else 0:,} tokens; "
          f"bf16 autocast {'on' if args.bf16 else 'off'} ({bf16_reason})",
          file=sys.stderr)
    lora = apply_lora_flags(model, opts, "minigpt.train", base_model_name_or_path=opts.model_name_or_path)
    warn_if_cpu_busy(pick_device(args.use_cpu))

    start = TokensAtStart()
    callbacks = [start] + time_budget_callbacks(args, opts)
    trainer = Trainer(model, args, train_dataset=train_set,
                      eval_dataset=evenly_spread(eval_set, opts.max_eval_samples) if eval_set else None,
                      tokenizer=tokenizer, callbacks=callbacks)
    result = trainer.train()
    save_trained_model(trainer, lora, args.output_dir)
    if not trainer.ctx.is_main_process:
        return 0

    output_dir = Path(args.output_dir)
    runtime = result.metrics["train_runtime"]
    tokens_per_second = (trainer.state.num_input_tokens_seen - start.tokens) / max(runtime, 1e-9)  # this call
    write_json(output_dir / "train_results.json", {
        "train_loss": result.training_loss, "train_runtime": runtime, "train_steps": result.global_step,
        "train_tokens": trainer.state.num_input_tokens_seen, "stop_reason": result.metrics["stop_reason"],
        "train_tokens_per_second": tokens_per_second, "epoch": trainer.state.epoch,
        "bf16": args.bf16, "bf16_reason": bf16_reason})  # the precision the run trained in, and why (choose_bf16)
    if eval_set is not None:
        metrics = trainer.evaluate(eval_set)
        eval_results = {"eval_loss": metrics["eval_loss"], "perplexity": perplexity(metrics["eval_loss"]),
                        "eval_tokens": len(eval_set) * block_size, "eval_runtime": metrics["eval_runtime"],
                        "train_steps": result.global_step, "train_runtime": runtime}
        write_json(output_dir / "eval_results.json", eval_results)
        print(f"eval_loss {eval_results['eval_loss']:.4f}  perplexity {eval_results['perplexity']:.3f}  "
              f"({result.global_step} steps, {runtime:.1f} s, "
              f"{tokens_per_second:,.0f} tokens/s)")
    else:
        print("no validation text (--validation_split_percentage 0 and no --validation_file): "
              "eval_results.json not written", file=sys.stderr)
    print(f"model and tokenizer saved to {output_dir}; sample with: python -m minigpt.sample "
          f"--model_name_or_path {output_dir} --prompt \"...\"", file=sys.stderr)
    if opts.sample_tokens > 0:
        merge_and_unload(model)  # generation's packed decode step reads plain Linear weights
        print(sample_texts(model, tokenizer, "", opts.sample_tokens, seed=args.seed)[0])
    return 0


if __name__ == "__main__":
    run_cli(main)
