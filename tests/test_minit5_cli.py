"""The T5 command-line tools (python -m minit5.pretrain / finetune / translate), BLEU and the tokenizer.

Runs are tiny (a 1-layer, 16-wide T5, a few steps on text the test writes): they check what the
tools read, write and compute, not how well a recipe learns (docs/results/minit5.md measures that).
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from common.errors import DataError, run_cli
from minit5.finetune import main as finetune_main
from minit5.metrics import corpus_bleu, tokenize_13a
from minit5.model import T5ForConditionalGeneration
from minit5.pretrain import main as pretrain_main
from minit5.tokenizer import T5Tokenizer
from minit5.translate import main as translate_main

TINY = ["--config_overrides", "d_model=16,d_kv=4,num_heads=4,d_ff=32,num_layers=1,dropout_rate=0.0",
        "--per_device_train_batch_size", "4", "--max_steps", "3", "--use_cpu", "--disable_tqdm", "true",
        "--save_strategy", "no", "--seed", "3", "--vocab_size", "160"]
GERMAN = ["ein hund rennt im park .", "eine katze schläft auf dem sofa .", "zwei kinder spielen im sand .",
          "ein mann liest eine zeitung .", "eine frau trinkt kaffee ."]
ENGLISH = ["a dog runs in the park .", "a cat sleeps on the sofa .", "two children play in the sand .",
           "a man reads a newspaper .", "a woman drinks coffee ."]
MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def parallel(tmp_path, n=40):
    de, en = tmp_path / "train.de", tmp_path / "train.en"
    de.write_text("\n".join(GERMAN[i % 5] for i in range(n)) + "\n", encoding="utf-8")
    en.write_text("\n".join(ENGLISH[i % 5] for i in range(n)) + "\n", encoding="utf-8")
    return de, en


def test_pretrain_trains_a_tokenizer_with_sentinels_and_saves_a_loadable_t5(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(GERMAN + ENGLISH) * 6 + "\n", encoding="utf-8")
    out = tmp_path / "t5"
    assert pretrain_main(["--train_file", str(text), "--validation_file", str(text), "--output_dir", str(out),
                          "--max_seq_length", "16", *TINY]) == 0
    tokenizer = T5Tokenizer.from_pretrained(out)
    model = T5ForConditionalGeneration.from_pretrained(out)
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer.sentinel_id(0) == len(tokenizer) - 1 and tokenizer.sentinel_id(1) == len(tokenizer) - 2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1) == (model.config.pad_token_id,
                                                                          model.config.eos_token_id)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_loss"] > 0 and results["perplexity"] > 1


def test_finetune_from_parallel_files_writes_bleu_and_translate_reads_file_and_stdin(tmp_path, monkeypatch, capsys):
    de, en = parallel(tmp_path)
    out = tmp_path / "de-en"
    assert finetune_main(["--source_file", str(de), "--target_file", str(en), "--validation_source_file", str(de),
                          "--validation_target_file", str(en), "--max_eval_samples", "5", "--output_dir", str(out),
                          "--max_target_length", "12", *TINY]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    predictions = (out / "generated_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert len(predictions) == 5
    assert results["eval_bleu"] == pytest.approx(corpus_bleu(predictions, ENGLISH), abs=1e-9)
    output = tmp_path / "out.en"
    assert translate_main(["--model_name_or_path", str(out), "--input_file", str(de), "--output_file", str(output),
                           "--max_new_tokens", "6", "--num_beams", "2"]) == 0
    assert len(output.read_text(encoding="utf-8").splitlines()) == 40
    monkeypatch.setattr("sys.stdin", io.StringIO("ein hund rennt .\neine katze .\n"))
    capsys.readouterr()
    assert translate_main(["--model_name_or_path", str(out), "--max_new_tokens", "6"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_finetune_reads_a_table_with_source_and_target_columns_from_a_pretrained_model(tmp_path):
    de, en = parallel(tmp_path, 20)
    pretrained = tmp_path / "t5"
    pretrain_main(["--train_file", str(de), "--output_dir", str(pretrained), "--max_seq_length", "16", *TINY])
    table = tmp_path / "pairs.tsv"
    table.write_text("de\ten\n" + "".join(f"{g}\t{e}\n" for g, e in zip(GERMAN, ENGLISH)), encoding="utf-8")
    out = tmp_path / "tuned"
    args = [a for a in TINY if a not in ("--config_overrides",) and "d_model" not in a]
    assert finetune_main(["--model_name_or_path", str(pretrained), "--train_file", str(table), "--source_column", "de",
                          "--target_column", "en", "--validation_file", str(table), "--output_dir", str(out),
                          "--max_target_length", "8", *args]) == 0
    assert T5Tokenizer.from_pretrained(out).get_vocab() == T5Tokenizer.from_pretrained(pretrained).get_vocab()
    assert "eval_bleu" in json.loads((out / "eval_results.json").read_text())


def test_parallel_files_of_different_lengths_are_one_error_naming_both(tmp_path, capsys):
    de, en = parallel(tmp_path)
    en.write_text("\n".join(ENGLISH) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(finetune_main, ["--source_file", str(de), "--target_file", str(en), "--output_dir",
                                str(tmp_path / "x"), *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "40 lines" in err and "5" in err and str(en) in err, err


def test_tokenizer_sentinels_count_down_and_survive_tokenization(tmp_path):
    tokenizer = T5Tokenizer.train(GERMAN * 4, 140)
    ids = tokenizer("ein <extra_id_0> im park <extra_id_1>")["input_ids"]
    assert tokenizer.sentinel_id(0) in ids and tokenizer.sentinel_id(1) in ids and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(len(tokenizer) - 1) == "<extra_id_0>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "ein im park"
    tokenizer.save_pretrained(tmp_path)
    assert T5Tokenizer.from_pretrained(tmp_path)("ein hund")["input_ids"] == tokenizer("ein hund")["input_ids"]


def noisy(sentences, seed=0):
    """System-like outputs: words dropped, neighbours swapped, a few words replaced."""
    rng = random.Random(seed)
    out = []
    for s in sentences:
        words = [w for w in s.split() if rng.random() > 0.15]
        if len(words) > 2 and rng.random() < 0.3:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(w if rng.random() > 0.1 else "thing" for w in words))
    return out


def test_bleu_equals_sacrebleu_on_multi30k():
    sacrebleu = pytest.importorskip("sacrebleu")
    if not (MULTI30K / "test_2016_flickr.en").is_file():
        pytest.skip(f"Multi30k is not in {MULTI30K} (see ../shared/data/README)")
    references = (MULTI30K / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    for seed in (0, 1):
        hypotheses = noisy(references, seed)
        ours, theirs = corpus_bleu(hypotheses, references), sacrebleu.corpus_bleu(hypotheses, [references]).score
        assert abs(ours - theirs) <= 0.01, f"BLEU {ours:.4f} vs sacrebleu {theirs:.4f}"


def test_bleu_equals_sacrebleu_on_punctuation_numbers_short_outputs_and_two_references():
    sacrebleu = pytest.importorskip("sacrebleu")
    hypotheses = ["The cat, 3.5 kg-heavy (ok) sat.", "a b c", "x", "", "Hello &amp; bye!"]
    first = ["The cat (3.5 kg) sat & slept.", "a b d e", "y", "nothing here", "Hello & goodbye!"]
    second = ["A cat sat.", "a b c", "x y z", "no", "Hello and bye!"]
    for refs in ([first], [first, second]):
        ours = corpus_bleu(hypotheses, refs if len(refs) > 1 else refs[0])
        theirs = sacrebleu.corpus_bleu(hypotheses, refs).score
        assert abs(ours - theirs) <= 0.01, f"BLEU {ours:.4f} vs sacrebleu {theirs:.4f} with {len(refs)} references"
    assert corpus_bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    assert tokenize_13a("It costs 1,000.50 dollars, ok?") == ["It", "costs", "1,000.50", "dollars", ",", "ok", "?"]


def test_translate_streams_the_same_targets_and_bounds_them_by_the_source(tmp_path, monkeypatch, capsys):
    from minit5.data import target_budget
    assert [target_budget(128, s, 2.0) for s in (3, 10, 100)] == [10, 24, 128], "min(max_new, ceil(r S) + 4)"
    assert target_budget(50, 1000, None) == 50
    de, en = parallel(tmp_path, n=10)
    out = tmp_path / "de-en"
    assert finetune_main(["--source_file", str(de), "--target_file", str(en), "--output_dir", str(out),
                          "--max_target_length", "12", *TINY]) == 0
    lines = "ein hund rennt .\neine katze .\n"
    flags = ["--model_name_or_path", str(out), "--max_new_tokens", "30", "--no_repeat_ngram_size", "2"]
    results = {}
    for stream in ("false", "true"):
        monkeypatch.setattr("sys.stdin", io.StringIO(lines))
        capsys.readouterr()
        assert translate_main([*flags, "--stream", stream]) == 0
        results[stream] = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert results["true"] == results["false"] and len(results["true"]) == 2, results
    tokenizer = T5Tokenizer.from_pretrained(out)
    for line in results["false"]:
        assert len(tokenizer.encode(line, add_special_tokens=False)) <= 2 * 6 + 4, f"not bounded by the source: {line!r}"
