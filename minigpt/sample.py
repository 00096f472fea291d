"""python -m minigpt.sample: continue a prompt with a trained GPT and print the text.

    python -m minigpt.sample --model_name_or_path out/shakespeare --prompt "ROMEO:" --seed 1
    python -m minigpt.sample --model_name_or_path out/shakespeare --prompt "ROMEO:" --greedy
    python -m minigpt.sample --model_name_or_path gpt2_folder --prompt "The quick brown" --greedy
    python -m minigpt.sample --model_name_or_path gpt2_folder --prompt_ids 464 2068 7586 --greedy

The folder is one written by `minigpt.train` (config.json, model.safetensors and the tokenizer
files), or a Hugging Face GPT-2 folder (its Conv1D weights are converted on load; its vocab.json +
merges.txt are read by common/text/bpe.py, GPT-2's byte-level BPE), or a Hugging Face Llama folder
(model_type "llama": loaded into the Llama shape of GPTConfig; a tokenizer.model is read as
SentencePiece). --prompt_ids gives the prompt as token ids (the output is then ids, and text when a
tokenizer is found).

Each new token is x_{t+1} ~ softmax(filter(z / temperature)) with the top-k / top-p filters of
minigpt.generate, or argmax z with --greedy. --seed makes sampling repeat exactly.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.hub.config import in_vocab_token_id
from common.hub.pretrained import check_tokenizer_fits_model, resolve_model_folder
from common.cli.args import parse_bool
from common.train.device import pick_device
from common.errors import CheckpointError, UserError, run_cli
from common.nn.lora import merge_and_unload
from common.text.auto import load_tokenizer
from minigpt.model import GPT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.sample", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Continue a prompt with a GPT saved by minigpt.train (or a Hugging Face GPT-2 or Llama folder).",
        epilog="Flags accept dashes too (--max-new-tokens). --debug shows the traceback of an error.")
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True,
        help="Folder with config.json + model.safetensors (+ tokenizer files), e.g. the --output_dir of minigpt.train.")
    add("--tokenizer_name", "--tokenizer-name", default=None,
        help="Folder to load the tokenizer from, when it is not the model folder (default: the model folder).")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="",
                        help="Text to continue. Empty (the default): start from the end-of-text token, or a newline "
                             "for a character model.")
    prompt.add_argument("--prompt_ids", "--prompt-ids", type=int, nargs="+", default=None,
                        help="The prompt as token ids (for a model without one of our tokenizers); "
                             "output is printed as ids, and as text too when a tokenizer is found.")
    add("--max_new_tokens", "--max-new-tokens", type=int, default=200, help="Tokens to add (default: %(default)s).")
    add("--temperature", type=float, default=0.8,
        help="Divide the logits by this before sampling: < 1 sharper, > 1 flatter (default: %(default)s).")
    add("--top_k", "--top-k", type=int, default=None,
        help="Sample among the k most likely tokens only (default: all).")
    add("--top_p", "--top-p", type=float, default=None,
        help="Nucleus sampling: the smallest set of tokens whose probability reaches p (default: off).")
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--do_sample", "--do-sample", type=parse_bool, nargs="?", const=True, default=True,
                          metavar="{true,false}", help="Sample the next token (default); false = greedy.")
    decoding.add_argument("--greedy", dest="do_sample", action="store_const", const=False,
                          help="Always take the most likely token (same as --do_sample false).")
    add("--num_return_sequences", "--num-return-sequences", type=int, default=1,
        help="Continuations of the prompt to generate, in one batch (default: %(default)s).")
    add("--seed", type=int, default=None, help="Seed of the sampler: the same seed gives the same text.")
    add("--use_cpu", "--use-cpu", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}",
        help="Run on the CPU even when a GPU is available.")
    return parser


def load_model_and_tokenizer(model_name_or_path, tokenizer_name=None, need_tokenizer: bool = True):
    """(GPT in eval mode, tokenizer or None). A missing tokenizer is an error only if need_tokenizer."""
    folder = resolve_model_folder(model_name_or_path)
    model = merge_and_unload(GPT.from_pretrained(folder))  # a LoRA adapter folder: B A folded into W
    model.eval()
    tokenizer_folder = Path(tokenizer_name) if tokenizer_name else folder
    try:
        tokenizer = load_tokenizer(tokenizer_folder)
    except CheckpointError as e:
        if not need_tokenizer:
            return model, None
        raise CheckpointError(f"{e} (or pass the prompt as --prompt_ids)") from None
    check_tokenizer_fits_model(tokenizer, model.config.vocab_size, f"the model in {folder}")
    return model, tokenizer


def prompt_to_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of the prompt; an empty prompt starts from the end-of-text token or a newline."""
    if prompt:
        return tokenizer.encode(prompt, add_special_tokens=False)
    if tokenizer.eos_token_id is not None:
        return [tokenizer.eos_token_id]
    newline = tokenizer.get_vocab().get("\n")
    if newline is not None:
        return [newline]
    raise UserError("--prompt is empty and this tokenizer has neither an end-of-text token nor a newline "
                    "to start from; give a --prompt")


def check_sampling_flags(args) -> None:
    if args.max_new_tokens < 0:
        raise UserError(f"--max_new_tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_return_sequences < 1:
        raise UserError(f"--num_return_sequences must be >= 1, got {args.num_return_sequences}")


def generate_ids(model, prompt_ids: Sequence[int], max_new_tokens: int, do_sample: bool = True,
                 temperature: float = 0.8, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 seed: Optional[int] = None, num_return_sequences: int = 1,
                 eos_token_id: Optional[int] = None) -> list[list[int]]:
    """num_return_sequences continuations of one prompt (prompt included), generated as one batch."""
    vocab_size = model.config.vocab_size
    bad = [i for i in prompt_ids if not 0 <= i < vocab_size]
    if bad:
        raise UserError(f"prompt token id(s) {bad[:5]} outside the model's vocabulary [0, {vocab_size})")
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(prompt_ids)] * num_return_sequences, dtype=torch.long, device=device)  # (B, T0)
    output = model.generate(input_ids, max_new_tokens, do_sample=do_sample, temperature=temperature,
                            top_k=top_k, top_p=top_p, eos_token_id=eos_token_id, seed=seed if do_sample else None)
    return output.tolist()


def sample_texts(model, tokenizer, prompt: str = "", max_new_tokens: int = 200, **kwargs) -> list[str]:
    """Prompt + continuation, decoded (special tokens left out)."""
    ids = generate_ids(model, prompt_to_ids(tokenizer, prompt), max_new_tokens,
                       eos_token_id=tokenizer.eos_token_id, **kwargs)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in ids]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_sampling_flags(args)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, args.tokenizer_name,
                                                need_tokenizer=args.prompt_ids is None)
    model.to(pick_device(args.use_cpu))
    options = dict(do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   seed=args.seed, num_return_sequences=args.num_return_sequences)
    if args.prompt_ids is None:
        outputs = sample_texts(model, tokenizer, args.prompt, args.max_new_tokens, **options)
    else:
        eos = tokenizer.eos_token_id if tokenizer is not None else in_vocab_token_id(model.config, "eos_token_id")
        rows = generate_ids(model, args.prompt_ids, args.max_new_tokens, eos_token_id=eos, **options)
        outputs = [" ".join(map(str, row)) + (f"\n{tokenizer.decode(row)}" if tokenizer is not None else "")
                   for row in rows]
    for i, text in enumerate(outputs):
        if len(outputs) > 1:
            print(f"===== sample {i + 1}/{len(outputs)} =====")
        print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
