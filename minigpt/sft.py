"""python -m minigpt.sft: instruction tuning (supervised fine-tuning) of a GPT on chat data.

    python -m minigpt.sft --model_name_or_path out/base --train_file ../shared/data/instructions/instruction-data.json \\
        --output_dir out/sft --max_time 300
    python -m minigpt.chat --model_name_or_path out/sft

The template, the records and the labels are common/data/instructions.py: each conversation becomes
role markers, content tokens and <|end|> tokens, and the loss is L = -(1/n_A) sum over the n_A
assistant tokens of log p(x_t | x_<t) (the prompt is given, never predicted). The four template
tokens are new: the embedding table (tied to the LM head) grows by four rows, drawn like GPT-2's
initial embeddings, N(0, initializer_range^2).

--train_file: a .json array of Alpaca records (instruction, input, output) or {"messages": [...]}
objects, or a .jsonl file of them. Without --validation_file the last --validation_split_percentage
percent of the records are held out. --packing concatenates conversations into full windows instead
of padding each batch. --lora_r trains LoRA adapters instead of every weight (common/cli/training.py;
with LoRA the new embedding rows are trained in full: --lora_modules_to_save wte by default).
--from_scratch keeps the config and tokenizer of --model_name_or_path and starts from random weights
(the baseline that shows what pretraining buys instruction tuning).

Writes to --output_dir: the model (or the adapter), the tokenizer with chat_template.json,
eval_results.json (eval_loss over assistant tokens), train_results.json, log.jsonl.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

from common.cli.training import (FLAG_NOTE, add_lora_flags, add_training_flags, apply_lora_flags, perplexity,
                                 time_budget_callbacks, train_and_save, training_arguments, write_json)
from common.data.instructions import (ChatTokenizer, DataCollatorForChat, InstructionDataset, encode_conversation,
                                      has_chat_template, load_instruction_file, pack_examples)
from common.errors import ConfigError, run_cli
from common.hub.pretrained import check_tokenizer_fits_model, resolve_model_folder
from common.nn.lora import merge_and_unload
from common.text.auto import load_tokenizer
from common.train.device import set_seed
from common.train.trainer import Trainer
from minigpt.config import GPTConfig
from minigpt.model import GPT

# TrainingArguments defaults of this tool: fine-tuning a small model (a smaller step than pretraining).
RECIPE = dict(learning_rate=1e-3, per_device_train_batch_size=16, per_device_eval_batch_size=32, warmup_steps=20,
              lr_scheduler_type="linear", weight_decay=0.0, num_train_epochs=3.0, logging_steps=20,
              save_strategy="no")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.sft", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Instruction-tune a GPT: the loss on the assistant's tokens of chat-formatted records.",
        epilog="Example:\n  python -m minigpt.sft --model_name_or_path out/base --train_file instruction-data.json "
               "--output_dir out/sft --max_time 300\n" + FLAG_NOTE)
    group = parser.add_argument_group("model and data")
    add = group.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True,
        help="A GPT folder (from minigpt.train, or an earlier minigpt.sft) with its tokenizer.")
    add("--from_scratch", "--from-scratch", action="store_true",
        help="Use only the config and tokenizer of --model_name_or_path; every weight random.")
    add("--train_file", "--train-file", required=True,
        help="Alpaca records (.json array) or {\"messages\": [...]} conversations (.json array or .jsonl).")
    add("--validation_file", "--validation-file", default=None, help="Records for eval_results.json.")
    add("--validation_split_percentage", "--validation-split-percentage", type=float, default=5.0,
        help="Without --validation_file: hold out the last this percent of the records (default: %(default)s).")
    add("--max_seq_length", "--max-seq-length", type=int, default=None,
        help="Longest conversation in tokens (default and maximum: the model's block_size).")
    add("--drop_long_examples", "--drop-long-examples", action="store_true",
        help="Skip conversations longer than --max_seq_length (counted in one line) instead of stopping.")
    add("--packing", action="store_true",
        help="Concatenate conversations into windows of --max_seq_length tokens instead of padding batches.")
    add("--max_train_samples", "--max-train-samples", type=int, default=None, help="Use the first N records only.")
    add("--encoding", default="utf-8", help="Encoding of the data files (default: %(default)s).")
    add_training_flags(parser, RECIPE)
    add_lora_flags(parser, "query,key,value,out_proj,c_fc,c_proj", "wte when the template's tokens are new")
    return parser


def grow_token_embeddings(model: GPT, vocab_size: int) -> int:
    """Give the (tied) embedding table vocab_size rows: old rows kept, new rows ~ N(0, sigma^2) as at
    initialisation. Returns the number of rows added."""
    old = model.transformer.wte
    added = vocab_size - old.num_embeddings
    if added <= 0:
        return 0
    new = nn.Embedding(vocab_size, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[:old.num_embeddings] = old.weight
        nn.init.normal_(new.weight[old.num_embeddings:], std=model.config.initializer_range)
    model.transformer.wte = new
    if model.config.tie_word_embeddings:
        model.lm_head = nn.Linear(old.embedding_dim, vocab_size, bias=False)
    else:
        head = nn.Linear(old.embedding_dim, vocab_size, bias=False)
        with torch.no_grad():
            head.weight[:old.num_embeddings] = model.lm_head.weight
            nn.init.normal_(head.weight[old.num_embeddings:], std=model.config.initializer_range)
        model.lm_head = head
    model.config.vocab_size = vocab_size
    model.tie_weights()
    return added


def load_model(opts, seed: int):
    """(model, chat tokenizer, rows added to the embeddings)."""
    folder = resolve_model_folder(opts.model_name_or_path)
    base_tokenizer = load_tokenizer(folder)
    tokenizer = (ChatTokenizer.from_folder(folder, base_tokenizer) if has_chat_template(folder)
                 else ChatTokenizer(base_tokenizer))
    if opts.from_scratch:
        torch.manual_seed(seed)
        model = GPT(GPTConfig.from_pretrained(folder))
    else:
        model = merge_and_unload(GPT.from_pretrained(folder))  # an adapter folder: tune the merged model
    check_tokenizer_fits_model(base_tokenizer, model.config.vocab_size, f"the model in {folder}")
    torch.manual_seed(seed)
    added = grow_token_embeddings(model, len(tokenizer))
    model.config.eos_token_id = tokenizer.end_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    return model, tokenizer, added


def split_records(opts, records, load=load_instruction_file):
    """(training records, validation records): --max_train_samples first, then --validation_file (read
    with `load`) or the last --validation_split_percentage percent held out."""
    if opts.max_train_samples is not None:
        if opts.max_train_samples < 1:
            raise ConfigError(f"--max_train_samples must be >= 1, got {opts.max_train_samples}")
        records = records[:opts.max_train_samples]
    if opts.validation_file is not None:
        return records, load(opts.validation_file, opts.encoding)
    if not 0 <= opts.validation_split_percentage < 100:
        raise ConfigError(f"--validation_split_percentage must be in [0, 100), got {opts.validation_split_percentage}")
    n_eval = int(round(len(records) * opts.validation_split_percentage / 100))
    return records[:len(records) - n_eval], records[len(records) - n_eval:]


def build_datasets(opts, tokenizer, max_length):
    train_records, eval_records = split_records(opts, load_instruction_file(opts.train_file, opts.encoding))
    train_set = InstructionDataset(tokenizer, train_records, max_length, opts.drop_long_examples)
    eval_set = InstructionDataset(tokenizer, eval_records, max_length, opts.drop_long_examples) if eval_records else None
    dropped = train_set.dropped + (eval_set.dropped if eval_set else 0)
    if dropped:
        print(f"minigpt.sft: --drop_long_examples: skipped {dropped} conversations longer than {max_length} tokens",
              file=sys.stderr)
    if len(train_set) == 0:
        raise ConfigError(f"{opts.train_file}: no training conversation fits in {max_length} tokens")
    return train_set, eval_set, eval_records


def answer(model, tokenizer, messages, max_new_tokens: int = 64, **sampling) -> str:
    """The assistant's next turn for a conversation (greedy unless sampling says otherwise)."""
    ids = encode_conversation(tokenizer, messages, for_generation=True)[-model.config.block_size:]
    device = next(model.parameters()).device
    out = model.generate(torch.tensor([ids], device=device), max_new_tokens, eos_token_id=tokenizer.end_id,
                         **sampling)[0, len(ids):].tolist()
    if tokenizer.end_id in out:
        out = out[:out.index(tokenizer.end_id)]
    return tokenizer.decode(out, skip_special_tokens=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = build_parser().parse_args(argv)
    args = training_arguments(opts)
    set_seed(args.seed)  # before anything draws a random number: model, template rows, LoRA, data
    model, tokenizer, added = load_model(opts, args.seed)
    max_length = opts.max_seq_length or model.config.block_size
    if max_length > model.config.block_size:
        raise ConfigError(f"--max_seq_length {max_length} exceeds the model's block_size {model.config.block_size}; "
                          f"use {model.config.block_size} or less")
    train_set, eval_set, eval_records = build_datasets(opts, tokenizer, max_length)
    if opts.lora_modules_to_save is None:
        opts.lora_modules_to_save = "wte" if added else ""
    print(f"minigpt.sft: GPT of {model.num_parameters() / 1e6:.2f}M parameters ({'random weights' if opts.from_scratch else 'pretrained'}), "
          f"{added} template tokens added; {len(train_set)} training and {len(eval_set) if eval_set else 0} "
          f"validation conversations, at most {max_length} tokens{', packed' if opts.packing else ''}", file=sys.stderr)
    lora = apply_lora_flags(model, opts, "minigpt.sft", base_model_name_or_path=opts.model_name_or_path)
    train_data = pack_examples(train_set.examples, max_length) if opts.packing else train_set
    trainer = Trainer(model, args, train_dataset=train_data, eval_dataset=eval_set, tokenizer=tokenizer,
                      data_collator=DataCollatorForChat(tokenizer.pad_token_id),
                      callbacks=time_budget_callbacks(args, opts))
    result = train_and_save(trainer, args.output_dir, lora, train_conversations=len(train_set))
    if result is None:
        return 0
    output_dir = Path(args.output_dir)
    runtime = result.metrics["train_runtime"]
    if eval_set is not None:
        metrics = trainer.evaluate(eval_set)
        results = {"eval_loss": metrics["eval_loss"], "perplexity": perplexity(metrics["eval_loss"]),
                   "eval_conversations": len(eval_set), "train_steps": result.global_step, "train_runtime": runtime}
        write_json(output_dir / "eval_results.json", results)
        print(f"eval_loss {results['eval_loss']:.4f} (assistant tokens)  perplexity {results['perplexity']:.3f}")
        merge_and_unload(model)  # generation's packed decode step reads plain Linear weights
        messages = eval_records[0][0]
        prompt = messages[:max(i for i, m in enumerate(messages) if m["role"] == "assistant")]
        print(f"sample: {prompt[-1]['content'][:200]!r} -> {answer(model, tokenizer, prompt)!r}")
    print(f"model and tokenizer saved to {output_dir}; chat with: python -m minigpt.chat --model_name_or_path "
          f"{output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
