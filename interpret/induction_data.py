"""Text for growing induction heads: lines of a random segment written twice, "qxmwe...qxmwe...".

The first copy is noise that no model can predict; in the second copy every next character is the
one that followed the current character in the first copy. A model can only lower the loss on the
repeat by finding the earlier occurrence of the current token and copying what came after it: the
induction mechanism (Olsson et al. 2022). With the char tokenizer of minigpt.train every letter is
one token. The segment's length varies from line to line (--min_length .. --length): with one fixed
length a head that always looks back that many positions would copy just as well, which is a
positional trick, not induction.

    python -m interpret.induction_data --output repeats.txt --lines 20000 --min_length 8 --length 30
"""
from __future__ import annotations

import argparse
import random
import string
from typing import Optional, Sequence

from common.errors import UsageError, run_cli, write_then_rename


def repeated_random_lines(lines: int, length: int, alphabet: str = string.ascii_lowercase,
                          seed: int = 0, min_length: Optional[int] = None) -> list[str]:
    """`lines` strings s + s, s drawn uniformly from `alphabet`, len(s) uniform in
    [min_length, length] (min_length None: always `length`)."""
    min_length = length if min_length is None else min_length
    if lines < 1 or not 1 <= min_length <= length or not alphabet:
        raise UsageError(f"need lines >= 1, 1 <= min_length <= length and a non-empty alphabet; got lines={lines}, "
                         f"min_length={min_length}, length={length}, alphabet={alphabet!r}")
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(min_length, length)))
        out.append(s + s)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interpret.induction_data", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="the text file to write (one repeated line per row)")
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--length", type=int, default=30, help="most characters of the random segment")
    parser.add_argument("--min_length", type=int, default=8, help="fewest characters of the random segment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text = "\n".join(repeated_random_lines(args.lines, args.length, seed=args.seed,
                                            min_length=args.min_length)) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_then_rename([(args.output + ".tmp", args.output)], lambda: write(args.output + ".tmp"))
    print(f"wrote {args.lines} lines of 2 x {args.min_length}..{args.length} characters to {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
