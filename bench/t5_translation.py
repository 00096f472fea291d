"""python -m bench.t5_translation: minit5.finetune with transformers' T5 in place of ours (issue 17's other arm).

    python -m bench.t5_translation <the flags of python -m minit5.finetune>
    python -m bench.t5_translation --source_file multi30k/train.de --target_file multi30k/train.en \\
        --validation_source_file multi30k/val.de --validation_target_file multi30k/val.en \\
        --output_dir out/de-en-transformers --max_time 900

This is minit5.finetune's main, not a copy of it: the same argument parser and recipe, the same
SentencePiece tokenizer trained on the training pairs, datasets, collator, Trainer and
TrainingArguments, seed, time-budget schedule, evaluation (eval/test loss from Trainer.evaluate,
translations by minit5.data.translate_texts, corpus BLEU) and output files. One thing changes, through
finetune's replace_model seam: the model is transformers.T5ForConditionalGeneration built from the
same T5Config fields (SMALL_T5 + --config_overrides, vocab_size = len(tokenizer), ids pad = 0,
eos = 1, decoder start = 0), eager attention, and loaded with OUR model's initial state dict. So for a
given seed both arms start from identical weights and see identical batches; with dropout 0 their
losses agree to float rounding (tests/test_t5_translation_bench.py). What differs is only the code
of the forward, backward and generate.

Generation: translate_texts calls model.generate(input_ids, attention_mask=..., max_new_tokens=...,
num_beams=...). transformers' generate takes everything else from model.generation_config, which is
set here to what ours does: do_sample=False (greedy, or beam search with num_beams > 1),
length_penalty 1.0 and early_stopping False for beams, eos 1 (a row ends at </s>), pad 0 (fills the
rows that ended), decoder start 0, no other logits processor. minit5.finetune.score runs it in eval
mode (transformers' generate does not switch dropout off itself).

Every *_results.json this run writes gets "implementation": "transformers" and the transformers
version. transformers 5 always ties T5's lm_head to the embedding (tie_word_embeddings=false only
drops the d_model^-0.5 rescale), so an untied config is refused rather than compared unfairly.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from common.cli.training import write_json
from common.errors import ConfigError, run_cli
from minit5.finetune import build_parser, main as finetune_main

IMPLEMENTATION = "transformers"
RESULT_FILES = ("train_results.json", "eval_results.json", "test_results.json")


def transformers_config(config):
    """transformers.T5Config with every field of our T5Config (their names are the same), eager attention."""
    import transformers

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init and f.name != "extra"}
    return transformers.T5Config(**fields, attn_implementation="eager")


def to_transformers(model):
    """transformers' T5ForConditionalGeneration with `model`'s config and weights (exact copies), its mode,
    and a generation_config that decodes as ours does (module docstring)."""
    import transformers

    with torch.random.fork_rng():  # its own random init must not move the RNG that finetune seeded
        theirs = transformers.T5ForConditionalGeneration(transformers_config(model.config))
    tied = theirs.lm_head.weight is theirs.shared.weight
    if tied != model.config.tie_word_embeddings:
        raise ConfigError(f"--config_overrides: tie_word_embeddings={model.config.tie_word_embeddings} but "
                          f"transformers {transformers.__version__} builds T5 with lm_head "
                          f"{'tied to' if tied else 'separate from'} the embedding; the two arms would not be "
                          "the same model. Compare with tie_word_embeddings=true")
    ours = model.state_dict()
    theirs.load_state_dict(ours, strict=False)
    mismatch = [k for k, v in theirs.state_dict().items() if k not in ours or not torch.equal(v, ours[k])]
    extra = [k for k in ours if k not in theirs.state_dict()]
    if mismatch or extra:
        raise ConfigError(f"transformers' T5 does not take minit5's weights: {len(mismatch)} of its tensors not "
                          f"copied (e.g. {mismatch[:1]}), {len(extra)} of ours unused (e.g. {extra[:1]})")
    theirs.train(model.training)
    c = model.config
    theirs.generation_config.update(do_sample=False, num_beams=1, length_penalty=1.0, early_stopping=False,
                                    eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
                                    decoder_start_token_id=c.decoder_start_token_id)
    print(f"bench.t5_translation: transformers {transformers.__version__} T5ForConditionalGeneration (eager "
          "attention), started from minit5's initial weights", file=sys.stderr)
    return theirs


def mark_results(output_dir, since: float) -> None:
    """Add the implementation to each *_results.json written by this run (modified after `since`)."""
    import transformers

    for name in RESULT_FILES:
        path = Path(output_dir) / name
        if path.is_file() and path.stat().st_mtime >= since:
            values = json.loads(path.read_text(encoding="utf-8"))
            values.update(implementation=IMPLEMENTATION, transformers_version=transformers.__version__)
            write_json(path, values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    since = time.time() - 1.0  # file times may be rounded to the second
    code = finetune_main(argv, replace_model=to_transformers)
    if code == 0:
        mark_results(build_parser().parse_args(argv).output_dir, since)
    return code


if __name__ == "__main__":
    run_cli(main)
