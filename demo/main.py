"""`make demo`: the story of pretrained language models, end to end, in a few minutes on a CPU.

    python -m demo                       # the built-in corpus and labeled task (about 3-4 min, 2 cores)
    python -m demo --data my_text.txt    # the same story on your own text
    python -m demo --quick               # tiny sizes, seconds (what the tests run)

1. Pretraining. A small BERT reads unlabeled text as sentence pairs [CLS] A [SEP] B [SEP] and
   learns two things at once: to fill in masked words (MLM) and to tell whether B really followed
   A (NSP). Watch the held-out MLM loss fall from ln(V) (guessing among V words) and the NSP
   accuracy rise from 0.5 (a coin).
2. Fine-tuning with few labels. The same classifier is trained on a few hundred labeled sentences
   twice: on top of the pretrained encoder, and from random weights. The built-in task ("is the
   character pleased?") only shows half of the adjectives in its labeled examples; the pretrained
   model has met the others in the corpus, next to words of the same mood, and gets them right.
   The gap between the two dev accuracies is what pretraining bought.
3. A GPT learns the same text left to right, predicting each next word; its validation
   perplexity exp(loss) is "how many words it hesitates between", and it writes continuations of
   a few prompts, greedy (always the likeliest word) and sampled (temperature 0.8, seeded).

Everything lands in the results folder (default results/demo): summary.md and summary.json (the
table printed at the end), curves.png and one picture per stage (with matplotlib), the models
(bert_pretrained/, gpt/; load them with from_pretrained), each run's log.jsonl, and the data.

Your own text (--data FILE): one sentence per line, a blank line between documents (a file
without blank lines is cut into documents of --lines_per_document lines, and the demo says so).
The corpus is split into training and held-out documents, SentencePiece tokenizers are trained
on it, and BERT and GPT are pretrained on it with the same sizes as the built-in demo. Plain
text has no labels, so fine-tuning needs yours: --train_file and --validation_file (TSV
`sentence<TAB>label`, or CSV / JSONL with those columns). Without them the fine-tuning stage is
skipped, and the demo says so: the built-in task's words do not occur in your text, so
pretraining on your text could not help it, and its accuracy would say nothing about your text.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from demo import corpus as demo_data
from demo.inputs import (DemoCorpus, builtin_corpus, builtin_tokenizers, count_tokens, user_corpus,
                                user_tokenizers)
from demo.report import print_summary, save_plots, write_summary
from demo.stages import FULL, QUICK, DemoSizes, finetune_compare, pretrain_bert, timed, train_gpt
from common.errors import ConfigError, DataError, run_cli
from common.data.labeled import ClassificationExample, build_label_list, load_classification_file

BUILTIN_PROMPTS = ("Once there was a baker named", "One day, she went to the harbor and",
                   "First, he thought the soup was")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--data", default=None, help="your own text file (default: the built-in corpus)")
    parser.add_argument("--train_file", default=None,
                        help="with --data: labeled training sentences (TSV/CSV/JSONL, columns sentence and label)")
    parser.add_argument("--validation_file", default=None, help="with --train_file: labeled sentences to measure on")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --data, --train_file and --validation_file (default utf-8)")
    parser.add_argument("--lines_per_document", type=int, default=8,
                        help="with --data: lines per document when the file has no blank lines (default 8)")
    parser.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the sampling")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds, numbers mean nothing")
    parser.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()),
                        help="CPU threads for torch (default: 2, or fewer if torch would use fewer); models "
                             "this small gain nothing from more, and on a busy machine 1 is fastest")
    args = parser.parse_args(argv)
    if (args.train_file is None) != (args.validation_file is None):
        raise ConfigError("--train_file and --validation_file go together: give both, or neither")
    if args.train_file is not None and args.data is None:
        raise ConfigError("--train_file needs --data: the built-in corpus's word vocabulary cannot read "
                          "your labeled sentences; give the text they come from with --data")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.lines_per_document < 2:
        raise ConfigError(f"--lines_per_document must be >= 2 (NSP needs pairs of lines), got {args.lines_per_document}")
    return args


def labeled_task(args: argparse.Namespace, sizes: DemoSizes):
    """(train, dev, description) for stage 2, or None when there are no labels to fine-tune on."""
    if args.data is None:
        task = demo_data.generate_labeled_task(sizes.n_train, sizes.n_dev, seed=args.seed)
        train, dev = ([ClassificationExample(s, None, label) for s, label in task[split]] for split in ("train", "dev"))
        return train, dev, (f"built-in task 'is the character pleased?': {len(train)} labels, "
                            f"{len(dev)} dev sentences (the labels use half of the adjectives)")
    if args.train_file is None:
        return None
    train = load_classification_file(args.train_file, encoding=args.encoding)
    dev = load_classification_file(args.validation_file, label_list=build_label_list([e.label for e in train]),
                                   encoding=args.encoding)
    return train, dev, f"your task: {len(train)} labels from {args.train_file}, {len(dev)} from {args.validation_file}"


def user_prompts(corpus: DemoCorpus, num_prompts: int = 3, num_words: int = 4) -> list[str]:
    """The first words of held-out sentences: from different documents, distinct, and preferably
    at least `num_words` long (a line like "KATHARINA:" says little)."""
    sentences = [doc[i] for i in range(max(map(len, corpus.heldout_documents)))
                 for doc in corpus.heldout_documents if i < len(doc)]  # every document's 1st line, then 2nd, ...
    long_first = sorted(sentences, key=lambda s: len(s.split()) < num_words)  # stable: keeps that order
    prompts = []
    for sentence in long_first:
        prompt = " ".join(sentence.split()[:num_words])
        if prompt not in prompts:
            prompts.append(prompt)
        if len(prompts) == num_prompts:
            break
    return prompts


def stage_header(number: int, title: str) -> None:
    print(f"\n[{number}/3] {title}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    out = Path(args.out)
    start, cpu_start = time.monotonic(), time.process_time()
    summary = {"data": args.data or "built-in", "seed": args.seed, "quick": args.quick, "results_dir": str(out.resolve()),
               "torch_threads": args.threads, "notes": [], "stages": {}}

    if args.data is None:
        corpus = builtin_corpus(out / "data", sizes.num_documents, sizes.heldout_documents, args.seed)
        bert_tokenizer, gpt_tokenizer = builtin_tokenizers()
        prompts = list(BUILTIN_PROMPTS)
    else:
        corpus = user_corpus(args.data, out / "data", args.lines_per_document, args.encoding)
        bert_tokenizer, gpt_tokenizer, note = user_tokenizers(corpus, sizes.spm_vocab_size)
        corpus.notes += [note] if note else []
        heldout_tokens = count_tokens(gpt_tokenizer, corpus.heldout_documents)
        if heldout_tokens < sizes.gpt_block_size:
            raise DataError(f"--data {args.data}: the held-out documents hold {heldout_tokens} tokens, fewer than "
                            f"one GPT block of {sizes.gpt_block_size}; give more text")
        prompts = user_prompts(corpus)
    task = labeled_task(args, sizes)
    skipped = ("fine-tuning skipped: your text has no labels; pass --train_file and --validation_file "
               "to compare pretrained and scratch on your own task (see --help)")
    if task is None:
        corpus.notes.append(skipped)
    summary["notes"] = corpus.notes
    summary["data_seconds"] = time.monotonic() - start
    for note in corpus.notes:
        print(note)

    stage_header(1, f"pretraining BERT (MLM + NSP) on {corpus.num_sentences} sentences, {sizes.pretrain_steps} steps")
    summary["stages"]["pretraining"] = timed(pretrain_bert, corpus, bert_tokenizer, sizes, out, args.seed)

    if task is None:
        stage_header(2, "fine-tuning: skipped (no labels)")
        summary["stages"]["finetuning"] = {"skipped": skipped}
    else:
        train, dev, description = task
        stage_header(2, f"fine-tuning, pretrained vs from scratch: {description}")
        summary["stages"]["finetuning"] = {"task": description, **timed(
            finetune_compare, out / "bert_pretrained", bert_tokenizer, train, dev, sizes, out, args.seed)}

    stage_header(3, f"training a GPT on the same text, {sizes.gpt_steps} steps, then sampling")
    summary["stages"]["gpt"] = timed(train_gpt, corpus, gpt_tokenizer, sizes, out, args.seed, prompts)

    summary["total_seconds"] = time.monotonic() - start
    summary["total_cpu_seconds"] = time.process_time() - cpu_start
    summary["plots"] = save_plots(summary, out)
    write_summary(summary, out)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    run_cli(main)
