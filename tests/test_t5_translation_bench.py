"""bench/t5_translation.py: minit5.finetune with transformers' T5 in place of ours, everything else shared.

The two arms run on the same flags (a tiny T5 without dropout, 40 steps at a high learning rate so
that the greedy translations are words rather than empty lines, a small tokenizer, a few dozen
generated pairs). Same seed -> same tokenizer, same initial weights (the bench copies ours into
transformers' model), same batches: so the loss of every step, the eval loss and the greedy
translations must agree up to float rounding. If the bench let transformers initialise its own
weights, or decoded with other settings (sampling, another eos, dropout left on), they would differ.
"""
from __future__ import annotations

import itertools
import json

import pytest

transformers = pytest.importorskip("transformers")

from bench.t5_translation import main as bench_main  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from minit5.finetune import build_parser, main as finetune_main, score, split_pairs  # noqa: E402
from minit5.model import T5ForConditionalGeneration  # noqa: E402
from minit5.tokenizer import T5Tokenizer  # noqa: E402

SUBJECTS = [("ein hund", "a dog"), ("eine katze", "a cat"), ("ein mann", "a man"), ("eine frau", "a woman")]
VERBS = [("rennt", "runs"), ("schläft", "sleeps"), ("sitzt", "sits")]
PLACES = [("im park", "in the park"), ("auf dem sofa", "on the sofa"), ("am strand", "on the beach")]
TINY = ["--config_overrides", "d_model=16,d_kv=4,num_heads=4,d_ff=32,num_layers=1,dropout_rate=0.0",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--max_steps", "40",
        "--learning_rate", "1e-2", "--warmup_ratio", "0", "--logging_steps", "1", "--use_cpu",
        "--disable_tqdm", "true", "--seed", "3", "--vocab_size", "160", "--max_target_length", "10",
        "--max_eval_samples", "8"]


def write_pairs(tmp_path):
    """36 generated German -> English pairs, as parallel files: train, validation and test."""
    pairs = [(f"{s} {v} {p} .", f"{se} {ve} {pe} .") for (s, se), (v, ve), (p, pe)
             in itertools.product(SUBJECTS, VERBS, PLACES)]
    flags = []
    for split, rows in (("train", pairs), ("validation", pairs[::3]), ("test", pairs[1::4])):
        for side, lang in ((0, "de"), (1, "en")):
            path = tmp_path / f"{split}.{lang}"
            path.write_text("\n".join(row[side] for row in rows) + "\n", encoding="utf-8")
            flags += [f"--{split}_{'source' if side == 0 else 'target'}_file", str(path)]
    return flags


def step_losses(folder) -> list[float]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.slow
def test_both_arms_start_from_the_same_weights_and_write_the_same_results(tmp_path):
    flags = write_pairs(tmp_path) + TINY
    ours, theirs = tmp_path / "ours", tmp_path / "transformers"
    assert finetune_main(flags + ["--output_dir", str(ours)]) == 0
    assert bench_main(flags + ["--output_dir", str(theirs)]) == 0

    for split in ("eval", "test"):
        a, b = (json.loads((folder / f"{split}_results.json").read_text()) for folder in (ours, theirs))
        assert f"{split}_bleu" in a and f"{split}_bleu" in b, f"{split}_results.json lacks {split}_bleu: {a}, {b}"
        assert b["implementation"] == "transformers" and "implementation" not in a, \
            f"only the bench's results name their implementation: ours {a.get('implementation')}, bench {b}"
        assert abs(a[f"{split}_loss"] - b[f"{split}_loss"]) < 1e-4, \
            f"{split}_loss after the same 40 steps: ours {a[f'{split}_loss']:.6f}, transformers {b[f'{split}_loss']:.6f}"
    assert "transformers" == json.loads((theirs / "train_results.json").read_text())["implementation"]

    a, b = step_losses(ours), step_losses(theirs)
    assert len(a) == len(b) == 40, f"one logged loss per step expected, got {len(a)} and {len(b)}"
    assert abs(a[0] - b[0]) < 1e-5, \
        f"first-step loss (same weights, same batch, no update yet): ours {a[0]:.7f}, transformers {b[0]:.7f}"
    worst = max(range(40), key=lambda i: abs(a[i] - b[i]))
    assert abs(a[worst] - b[worst]) < 1e-4, \
        f"losses diverge at step {worst + 1}: ours {a[worst]:.6f}, transformers {b[worst]:.6f}"
    predictions = [(folder / "generated_predictions.txt").read_text(encoding="utf-8") for folder in (ours, theirs)]
    assert predictions[0].strip(), "the trained model translates every test source to an empty line: the " \
                                   "comparison of translations below would prove nothing"
    assert predictions[0] == predictions[1], \
        f"greedy translations differ (generation settings not ours?):\n{predictions[0]}\nvs\n{predictions[1]}"

    # The saved folders load (transformers' save_pretrained), and score() translates without dropout
    # even when the model is left in training mode with dropout 0.5 (transformers' generate does not
    # switch to eval mode by itself).
    opts = build_parser().parse_args(flags + ["--output_dir", str(ours)])
    pairs = split_pairs(opts, "test")
    tokenizer = T5Tokenizer.from_pretrained(theirs)
    for model in (T5ForConditionalGeneration.from_pretrained(ours, dropout_rate=0.5),
                  transformers.T5ForConditionalGeneration.from_pretrained(theirs, dropout_rate=0.5)):
        model.train()
        _, hypotheses = score(model, tokenizer, pairs, opts, "test")
        assert "\n".join(hypotheses) + "\n" == predictions[0], \
            f"{type(model).__module__}: translations of a reloaded model in training mode with dropout 0.5 " \
            f"differ from the saved run's:\n{hypotheses}\nvs\n{predictions[0]}"


def test_an_untied_head_is_refused_since_transformers_5_always_ties_it(tmp_path):
    flags = write_pairs(tmp_path)[:4] + [a.replace("dropout_rate=0.0", "dropout_rate=0.0,tie_word_embeddings=false")
                                         for a in TINY]
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        bench_main(flags + ["--output_dir", str(tmp_path / "untied")])
