"""A task with checkable answers: addition and subtraction of 2-3 digit numbers, with a held-out split.

    python -m common.data.arithmetic --output_dir data/arithmetic --num_train 4000 --num_test 400 --seed 0

writes, from one seed,
    train.jsonl     {"prompt": "What is 123 + 45?", "answer": "168"}   problems for SFT and GRPO
    test.jsonl      the held-out problems: no (a, op, b) of it appears in train.jsonl, in any wording
    sft.jsonl       {"messages": [user: prompt, assistant: answer]} of the train problems (minigpt.sft)
    pretrain.txt    one solved train problem per line in plain text ("What is 123 plus 45? 168"):
                    minigpt.train's base model sees arithmetic and every wording, never the chat template

A problem is (a, op, b), a and b drawn uniformly from 10..999 (2 or 3 digits; --min_digits and
--max_digits change that), op + or -; its
prompt takes one of several wordings, with symbols ("What is 123 + 45?") or words ("What is 123
minus 45?", "Subtract 45 from 123."), and its answer is the integer a op b as text (negative for
some subtractions). The reward of minigpt.grpo compares the model's reply, stripped, with it.

load_problems reads any such JSONL file (records {"prompt": str, "answer": str or number}, other
keys kept for a custom reward); a record without "prompt" or "answer" is a DataError naming its line.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Optional, Sequence

from common.data.instructions import read_records
from common.errors import ConfigError, DataError, run_cli

WORDINGS = {
    "+": ("What is {a} + {b}?", "{a} + {b} =", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a}+{b}."),
    "-": ("What is {a} - {b}?", "{a} - {b} =", "What is {a} minus {b}?", "Subtract {b} from {a}.",
          "Compute {a}-{b}."),
}


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def number_range(min_digits: int, max_digits: int) -> tuple[int, int]:
    if not 1 <= min_digits <= max_digits <= 9:
        raise ConfigError(f"digits: need 1 <= --min_digits <= --max_digits <= 9, got {min_digits}, {max_digits}")
    return (10 ** (min_digits - 1) if min_digits > 1 else 0), 10 ** max_digits - 1


def draw_problems(count: int, rng: random.Random, exclude: frozenset = frozenset(),
                  digits: tuple[int, int] = (2, 3)) -> list[tuple[int, str, int]]:
    """`count` distinct (a, op, b) not in `exclude`, a and b with digits[0]..digits[1] digits."""
    low, high = number_range(*digits)
    seen, out = set(exclude), []
    if count > 2 * (high - low + 1) ** 2 - len(seen):
        raise ConfigError(f"cannot draw {count} distinct problems from the numbers {low}..{high}; ask for fewer "
                          "or allow more digits")
    while len(out) < count:
        problem = (rng.randint(low, high), rng.choice("+-"), rng.randint(low, high))
        if problem not in seen:
            seen.add(problem)
            out.append(problem)
    return out


def render(problem: tuple[int, str, int], rng: random.Random) -> dict:
    a, op, b = problem
    return {"prompt": rng.choice(WORDINGS[op]).format(a=a, b=b), "answer": str(solve(a, op, b))}


def make_splits(num_train: int, num_test: int, seed: int, digits: tuple[int, int] = (2, 3)) -> tuple[list, list]:
    """(train problems, test problems) as (a, op, b); the test ones are drawn first and excluded from train."""
    rng = random.Random(seed)
    test = draw_problems(num_test, rng, digits=digits)
    return draw_problems(num_train, rng, exclude=frozenset(test), digits=digits), test


def pretrain_line(record: dict) -> str:
    """'What is 123 plus 45? 168': the problem in its wording, then its answer, as plain text."""
    return f"{record['prompt']} {record['answer']}"


def load_problems(path, encoding: str = "utf-8") -> list[tuple[dict, str]]:
    """[(record, where)] of a problems file; each record has a text "prompt" and an "answer"."""
    out = []
    for record, where in read_records(path, encoding, "problems"):
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise DataError(f"{where}: no \"prompt\" text; each problem is {{\"prompt\": ..., \"answer\": ...}}")
        if "answer" not in record or record["answer"] is None or not str(record["answer"]).strip():
            raise DataError(f"{where}: no \"answer\"; the reward checks the model's reply against it, so every "
                            "problem needs one (remove the record or add its answer)")
        out.append((record, where))
    return out


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.data.arithmetic", allow_abbrev=False,
                                     description="Write addition/subtraction problems with a held-out split.")
    parser.add_argument("--output_dir", "--output-dir", required=True)
    parser.add_argument("--num_train", "--num-train", type=int, default=4000)
    parser.add_argument("--num_test", "--num-test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_digits", "--min-digits", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--max_digits", "--max-digits", type=int, default=3, help="(default: %(default)s)")
    opts = parser.parse_args(argv)
    if opts.num_train < 1 or opts.num_test < 1:
        raise ConfigError("--num_train and --num_test must be >= 1")
    train_problems, test_problems = make_splits(opts.num_train, opts.num_test, opts.seed,
                                                 (opts.min_digits, opts.max_digits))
    rng = random.Random(opts.seed + 1)  # the wordings
    train, test = [render(p, rng) for p in train_problems], [render(p, rng) for p in test_problems]
    out = Path(opts.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    write_jsonl(out / "sft.jsonl", [{"messages": [{"role": "user", "content": r["prompt"]},
                                                  {"role": "assistant", "content": r["answer"]}]} for r in train])
    (out / "pretrain.txt").write_text("".join(pretrain_line(r) + "\n" for r in train), encoding="utf-8")
    print(f"wrote {len(train)} training and {len(test)} held-out problems to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
