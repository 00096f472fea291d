"""python -m minigpt.chat: talk to an instruction-tuned GPT in the terminal.

    python -m minigpt.chat --model_name_or_path out/sft
    python -m minigpt.chat --model_name_or_path out/sft --greedy --max_new_tokens 100

The folder is one written by minigpt.sft (its chat_template.json says how turns are marked; see
common/data/instructions.py). Each reply is generated one token at a time and printed as it comes,
x_{t+1} ~ softmax(filter(z / temperature)) with the sampling flags of minigpt.sample, until the model
emits <|end|> or --max_new_tokens is reached. The model sees the whole conversation, which must fit
in its context (block_size tokens, the reply included): when it would not, the oldest turns are
dropped, and the chat says so. Commands: /reset forgets the conversation, /exit (or Ctrl-D) quits,
Ctrl-C stops a reply. --web serves the same chat as a local page instead (minigpt/chat_web.py).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from common.cli.args import parse_bool
from common.data.instructions import ChatTokenizer, encode_conversation, has_chat_template
from common.errors import CheckpointError, UserError, run_cli
from common.hub.pretrained import resolve_model_folder
from common.generation.streamers import TextStreamer
from common.train.device import pick_device
from minigpt.generate import generate
from minigpt.sample import check_sampling_flags, load_model_and_tokenizer

BANNER = "chatting with {folder} (context {block} tokens). /reset starts over, /exit or Ctrl-D quits."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.chat", allow_abbrev=False,
        description="Chat in the terminal with a GPT instruction-tuned by minigpt.sft.",
        epilog="Flags accept dashes too (--max-new-tokens). --debug shows the traceback of an error.")
    add = parser.add_argument
    add("--model_name_or_path", "--model-name-or-path", required=True, help="A folder written by minigpt.sft.")
    add("--system", default=None, help="A system turn placed before the conversation (kept when turns are dropped).")
    add("--max_new_tokens", "--max-new-tokens", type=int, default=128,
        help="Longest reply in tokens (default: %(default)s).")
    add("--temperature", type=float, default=0.8, help="Divide the logits by this before sampling (default: %(default)s).")
    add("--top_k", "--top-k", type=int, default=None, help="Sample among the k most likely tokens only.")
    add("--top_p", "--top-p", type=float, default=None, help="Nucleus sampling with mass p.")
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--do_sample", "--do-sample", type=parse_bool, nargs="?", const=True, default=True,
                          metavar="{true,false}", help="Sample the next token (default); false = greedy.")
    decoding.add_argument("--greedy", dest="do_sample", action="store_const", const=False,
                          help="Always take the most likely token.")
    add("--seed", type=int, default=None, help="Seed of the sampler: the same seed and inputs give the same replies.")
    add("--use_cpu", "--use-cpu", type=parse_bool, nargs="?", const=True, default=False, metavar="{true,false}",
        help="Run on the CPU even when a GPU is available.")
    add("--web", action="store_true",
        help="Serve a chat page on http://127.0.0.1:PORT/ instead of the terminal (minigpt/chat_web.py).")
    add("--port", type=int, default=8000, help="Port of --web, on 127.0.0.1 only (default: %(default)s; 0: any free one).")
    parser.set_defaults(num_return_sequences=1)
    return parser


class Conversation:
    """The turns so far, kept within the context: prompt + reply <= block_size tokens."""

    def __init__(self, tokenizer: ChatTokenizer, block_size: int, max_new_tokens: int, system: Optional[str]):
        self.tokenizer, self.block_size = tokenizer, block_size
        self.budget = block_size - min(max_new_tokens, block_size // 2)  # room left for the reply
        self.system = [{"role": "system", "content": system}] if system else []
        self.turns: list[dict] = []

    def prompt_ids(self) -> tuple[list[int], int]:
        """(ids of system + turns + <|assistant|>, number of old turns dropped to fit the budget)."""
        dropped = 0
        while True:
            ids = encode_conversation(self.tokenizer, self.system + self.turns, for_generation=True)
            if len(ids) <= self.budget or len(self.turns) <= 1:
                break
            self.turns.pop(0)  # the oldest turn goes first, with the reply to it
            dropped += 1
            while len(self.turns) > 1 and self.turns[0]["role"] == "assistant":
                self.turns.pop(0)
                dropped += 1
        if len(ids) > self.budget:
            self.turns.pop()
            raise UserError(f"your message takes {len(ids)} tokens, but the context holds {self.block_size} "
                            f"({self.block_size - self.budget} kept for the reply); write a shorter one")
        return ids, dropped


def stream_reply(model, tokenizer: ChatTokenizer, prompt: list[int], max_new_tokens: int, do_sample: bool,
                 temperature: float, top_k, top_p, generator, write) -> list[int]:
    """Generate up to max_new_tokens ids after the prompt through minigpt.generate (its KV cache and
    packed fast path), calling write(text) as the decoded text grows (common/generation/streamers.py:
    a character made of several tokens appears once it is complete). Stops at <|end|>; the reply
    and the prompt stay within block_size."""
    device = next(model.parameters()).device
    room = model.config.block_size - len(prompt)
    streamer = TextStreamer(tokenizer, skip_prompt=True, on_text=lambda text, end: write(text),
                            stop_ids=(tokenizer.end_id,), skip_special_tokens=True)
    out = generate(model, torch.tensor([prompt], device=device), min(max_new_tokens, room), do_sample=do_sample,
                   temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=tokenizer.end_id,
                   generator=generator, streamer=streamer)
    reply = out[0, len(prompt):].tolist()
    return reply[:reply.index(tokenizer.end_id)] if tokenizer.end_id in reply else reply


def load_chat_model(folder_name, use_cpu: bool):
    folder = resolve_model_folder(folder_name)
    if not has_chat_template(folder):
        raise CheckpointError(f"{folder} has no chat_template.json: it is not instruction-tuned; tune it first with "
                              f"python -m minigpt.sft --model_name_or_path {folder} ...")
    model, base = load_model_and_tokenizer(folder)
    tokenizer = ChatTokenizer.from_folder(folder, base)
    return model.to(pick_device(use_cpu)).eval(), tokenizer, folder


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_sampling_flags(args)
    model, tokenizer, folder = load_chat_model(args.model_name_or_path, args.use_cpu)
    if args.web:
        from minigpt.chat_web import serve
        settings = {k: getattr(args, k) for k in ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p")}
        return serve(model, tokenizer, settings, args.port, str(folder), args.system, args.seed)
    generator = torch.Generator(device=next(model.parameters()).device)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    conversation = Conversation(tokenizer, model.config.block_size, args.max_new_tokens, args.system)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()

    print(BANNER.format(folder=folder, block=model.config.block_size), flush=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:  # Ctrl-D
            print("\nbye", flush=True)
            return 0
        except KeyboardInterrupt:
            print("\n(Ctrl-C: type /exit or press Ctrl-D to quit)", flush=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            print("bye", flush=True)
            return 0
        if text == "/reset":
            conversation.turns.clear()
            print("(conversation cleared)", flush=True)
            continue
        conversation.turns.append({"role": "user", "content": line})
        try:
            prompt, dropped = conversation.prompt_ids()
        except UserError as e:
            print(f"({e})", flush=True)
            continue
        if dropped:
            print(f"(context full: dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} to stay within "
                  f"{model.config.block_size} tokens)", flush=True)
        write("assistant> ")
        try:
            reply = stream_reply(model, tokenizer, prompt, args.max_new_tokens, args.do_sample, args.temperature,
                                 args.top_k, args.top_p, generator, write)
        except KeyboardInterrupt:
            reply = []
            write(" (stopped)")
        write("\n")
        conversation.turns.append({"role": "assistant", "content": tokenizer.decode(reply, skip_special_tokens=True)})


if __name__ == "__main__":
    run_cli(main)
