"""python -m interpret --model_name_or_path DIR --text TEXT --output page.html

Writes the offline attention page of interpret/page.py for a BERT, GPT or T5 folder."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from common.errors import UserError, run_cli, write_then_rename
from interpret.page import attention_data, load, render_html


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret", description=__doc__.split("\n")[2])
    parser.add_argument("--model_name_or_path", "--model-name-or-path", required=True,
                        help="a model folder: ours (minigpt, minibert, minit5) or Hugging Face's (GPT-2, Llama, BERT, T5)")
    parser.add_argument("--text", required=True, help="the text to show the attention of (T5: the encoder's input)")
    parser.add_argument("--target", default=None,
                        help="T5 only: the decoder's text (default: the model's greedy output, 20 tokens at most)")
    parser.add_argument("--output", required=True, help="the HTML file to write")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; name a file such as {output / 'attention.html'}")
    if not output.parent.is_dir():
        raise UserError(f"--output {output}: the folder {output.parent} does not exist; create it first "
                        f"(mkdir -p {output.parent})")
    kind, model, tokenizer = load(args.model_name_or_path)
    if args.target is not None and kind != "t5":
        raise UserError(f"--target is for T5 (encoder-decoder) folders; {args.model_name_or_path} is a {kind} model")
    data = attention_data(kind, model, tokenizer, args.text, args.target)
    html = render_html(data, Path(args.model_name_or_path).resolve().name)
    tmp = f"{output}.tmp"

    def write() -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(html)
    write_then_rename([(tmp, str(output))], write)
    layers, heads = len(data["attentions"]), len(data["attentions"][0])
    print(f"wrote {output} ({os.path.getsize(output) / 1024:.0f} KB): {kind}, {len(data['tokens'])} tokens, "
          f"{layers} layers x {heads} heads; open it in any browser, no network needed")
    return 0


if __name__ == "__main__":
    run_cli(main)
