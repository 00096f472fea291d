"""What pretraining buys instruction tuning: answer a question about a story given in the prompt.

    python -m demo.story_qa write --output_dir out/story_qa          # stories.txt, train.json, test.json
    python -m minigpt.train --train_file out/story_qa/stories.txt --output_dir out/story_qa/base ...
    python -m minigpt.sft --model_name_or_path out/story_qa/base --train_file out/story_qa/train.json ...
    python -m minigpt.sft --model_name_or_path out/story_qa/base --from_scratch ...     # the baseline
    python -m demo.story_qa evaluate --model_name_or_path out/story_qa/sft --test_file out/story_qa/test.json

The stories are the demo's (demo/corpus.py). A record's prompt is the opening of a story (its first
two sentences) and a question whose answer is written in it: the hero's job, or where the hero
went. The answer must be copied out of the prompt, so the test stories (another seed) hold names,
jobs and places in combinations the tuning never saw. Exact match: the greedy answer up to <|end|>
equals the expected words. The figures are in docs/results/lora_sft.md.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Optional, Sequence

from common.errors import run_cli
from demo.corpus import generate_corpus

OPENINGS = (re.compile(r"^(?P<name>\w+) was an? (?P<job>[\w ]+?) who lived near (?P<place>the [\w ]+)\.$"),
            re.compile(r"^Once there was an? (?P<job>[\w ]+?) named (?P<name>\w+)\.$"))
WENT = re.compile(r"\b(?:went|walked|came) to (?P<where>the [\w ]+?)(?: to |\.| and )")


def story_questions(story: list[str]) -> list[dict]:
    """Alpaca records (instruction = the opening + a question, output = the answer) for one story."""
    match = next((m for p in OPENINGS if (m := p.match(story[0]))), None)
    if match is None or len(story) < 2:
        return []
    context = " ".join(story[:2])
    # Worded with the stories' own characters (no "?", "'" or ":"), so a character tokenizer of the stories
    # can spell every prompt.
    name, records = match["name"], [{"instruction": f"{context}\nthe job of {match['name']}",
                                     "input": "", "output": match["job"]}]
    went = WENT.search(story[1])
    if went:
        records.append({"instruction": f"{context}\nwhere {name} went", "input": "", "output": went["where"]})
    return records


def write(output_dir: Path, num_stories: int, num_train: int, num_test: int) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    stories = generate_corpus(num_stories, seed=0)
    (output_dir / "stories.txt").write_text("\n\n".join(" ".join(s) for s in stories) + "\n", encoding="utf-8")
    for name, seed, n in (("train.json", 1, num_train), ("test.json", 2, num_test)):
        records = [r for s in generate_corpus(n, seed=seed) for r in story_questions(s)]
        random.Random(seed).shuffle(records)
        (output_dir / name).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        print(f"{output_dir / name}: {len(records)} questions")


def evaluate(model_name_or_path: str, test_file: str, limit: Optional[int]) -> dict:
    from common.data.instructions import ChatTokenizer, load_instruction_file
    from minigpt.chat import load_chat_model
    from minigpt.sft import answer

    model, tokenizer, _ = load_chat_model(model_name_or_path, use_cpu=True)
    conversations = load_instruction_file(test_file)[:limit]
    correct = sum(answer(model, tokenizer, m[:1], max_new_tokens=24) == m[1]["content"] for m, _ in conversations)
    return {"exact_match": correct / len(conversations), "questions": len(conversations)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.story_qa", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write stories.txt (pretraining), train.json and test.json (questions)")
    w.add_argument("--output_dir", required=True)
    w.add_argument("--num_stories", type=int, default=4000)
    w.add_argument("--num_train", type=int, default=1500, help="stories to ask about for tuning")
    w.add_argument("--num_test", type=int, default=150, help="held-out stories to ask about")
    e = sub.add_parser("evaluate", help="exact match of a tuned model's greedy answers")
    e.add_argument("--model_name_or_path", required=True)
    e.add_argument("--test_file", required=True)
    e.add_argument("--limit", type=int, default=None)
    opts = parser.parse_args(argv)
    if opts.command == "write":
        write(Path(opts.output_dir), opts.num_stories, opts.num_train, opts.num_test)
    else:
        result = evaluate(opts.model_name_or_path, opts.test_file, opts.limit)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
