"""Text for growing induction heads: lines of a random segment written twice, "qxmwe...qxmwe...".

The first copy is noise that no model can predict; in the second copy every next character is the
one that followed the current character in the first copy. A model can only lower the loss on the
repeat by finding the earlier occurrence of the current token and copying what came after it: the
induction mechanism (Olsson et al. 2022). With the char tokenizer of minigpt.train every letter is
one token.

    python -m interpret.induction_data --output repeats.txt --lines 20000 --length 20
"""
from __future__ import annotations

import argparse
import random
import string
from typing import Optional, Sequence

from common.errors import UsageError, run_cli, write_then_rename


def repeated_random_lines(lines: int, length: int, alphabet: str = string.ascii_lowercase,
                          seed: int = 0) -> list[str]:
    """`lines` strings s + s, s drawn uniformly from `alphabet`, len(s) = length."""
    if lines < 1 or length < 1 or not alphabet:
        raise UsageError(f"need lines >= 1, length >= 1 and a non-empty alphabet; got lines={lines}, "
                         f"length={length}, alphabet={alphabet!r}")
    rng = random.Random(seed)
    return [(s := "".join(rng.choice(alphabet) for _ in range(length))) + s for _ in range(lines)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret.induction_data", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="the text file to write (one repeated line per row)")
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--length", type=int, default=20, help="characters of the random segment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text = "\n".join(repeated_random_lines(args.lines, args.length, seed=args.seed)) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_then_rename([(args.output + ".tmp", args.output)], lambda: write(args.output + ".tmp"))
    print(f"wrote {args.lines} lines of 2 x {args.length} characters to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
