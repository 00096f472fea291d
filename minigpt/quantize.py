"""python -m minigpt.quantize: int8 post-training quantization of a GPT folder.

    python -m minigpt.quantize --model_name_or_path out/gpt --output_dir out/gpt-int8

Every Linear of the blocks becomes an Int8Linear (int8 weights, one float32 scale per output row;
each token's activations quantized at run time; common/nn/quantization.py) and the position table
stores int8 rows. The token table and the output layer are one tied matrix (tie_word_embeddings):
it stays in float, as does any module named in --modules_to_not_convert. The folder loads with
GPT.from_pretrained and runs under minigpt.sample like any other.
"""
from __future__ import annotations

from typing import Optional, Sequence

from common.cli.quantize import quantize_folder, quantize_parser
from common.errors import run_cli
from minigpt.model import GPT

PROG = "python -m minigpt.quantize"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quantize_parser(PROG, "Quantize a GPT folder to int8 (weights per output channel, activations "
                                   "per token at run time); tied embeddings stay in float.", "")
    quantize_folder(GPT, parser.parse_args(argv), PROG)
    return 0


if __name__ == "__main__":
    run_cli(main)
