"""`make demo` (demo/main.py) end to end: --quick runs in seconds and leaves a complete summary;
--data runs the same story on a user's text; bad input is one line and exit status 2. The slow
test runs the real demo and checks its lesson: pretraining beats training from scratch."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from demo import main as demo

from demo import corpus as demo_data
from common.data.language_modeling import DataCollatorForLanguageModeling, TextDatasetForNextSentencePrediction
from demo.inputs import builtin_corpus, builtin_tokenizers, read_user_documents, split_heldout
from demo.report import print_summary, save_plots
from demo.stages import QUICK, bert_config, classifier_pair
from minibert.metrics import evaluate_pretraining
from common.errors import DataError, run_cli
from minibert import BertForPreTraining

ROOT = Path(__file__).resolve().parents[1]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
STAGES = ("pretraining", "finetuning", "gpt")


def run_demo(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "demo.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def numbers(value, path="summary"):
    """Every (path, number) inside nested dicts and lists."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")


def load_summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "results"
    result = run_demo("--quick", "--out", str(out))
    assert result.returncode == 0, f"demo --quick failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return out, result


# ---------------------------------------------------------------- --quick, built-in data


def test_quick_demo_writes_a_summary_with_every_stage_and_finite_numbers(quick_run):
    out, _ = quick_run
    summary = load_summary(out)
    assert set(STAGES) <= set(summary["stages"]), f"stages in summary.json: {sorted(summary['stages'])}"
    expected = {
        "pretraining": {"seconds", "cpu_seconds", "steps", "heldout_mlm_loss", "heldout_mlm_accuracy", "heldout_nsp_accuracy",
                        "heldout_mlm_loss_before", "heldout_nsp_accuracy_before", "curves"},
        "finetuning": {"seconds", "n_train", "n_dev", "pretrained_accuracy", "scratch_accuracy",
                       "pretrained_curve", "scratch_curve"},
        "gpt": {"seconds", "steps", "val_loss", "val_perplexity", "samples", "curves"},
    }
    for stage, keys in expected.items():
        missing = keys - set(summary["stages"][stage])
        assert not missing, f"summary.json stage {stage!r} lacks {sorted(missing)}"
    bad = [(path, value) for path, value in numbers(summary) if not math.isfinite(value)]
    assert not bad, f"non-finite numbers in summary.json: {bad[:5]}"
    for key in ("heldout_mlm_accuracy", "heldout_nsp_accuracy"):
        assert 0 <= summary["stages"]["pretraining"][key] <= 1, f"{key} = {summary['stages']['pretraining'][key]}"
    gpt = summary["stages"]["gpt"]
    assert gpt["val_perplexity"] == pytest.approx(math.exp(gpt["val_loss"])), "perplexity is not exp(val_loss)"


def test_quick_demo_pretraining_lowers_the_heldout_mlm_loss(quick_run):
    p = load_summary(quick_run[0])["stages"]["pretraining"]
    assert p["heldout_mlm_loss"] < p["heldout_mlm_loss_before"], (
        f"held-out MLM loss went {p['heldout_mlm_loss_before']:.3f} -> {p['heldout_mlm_loss']:.3f} in 20 steps")


def test_quick_demo_samples_continue_their_prompts(quick_run):
    samples = load_summary(quick_run[0])["stages"]["gpt"]["samples"]
    assert len(samples) == len(demo.BUILTIN_PROMPTS)
    for s in samples:
        for kind in ("greedy", "sampled"):
            # the word tokenizer lower-cases, and decoding glues punctuation to the word before it
            assert s[kind].startswith(s["prompt"].lower()), f"{kind} sample {s[kind]!r} does not start with its prompt"
            assert len(s[kind]) > len(s["prompt"]), f"{kind} sample added nothing to {s['prompt']!r}"


def test_quick_demo_prints_the_table_and_the_results_folder(quick_run):
    out, result = quick_run
    assert "summary" in result.stdout and "dev accuracy: pretrained" in result.stdout, result.stdout[-2000:]
    assert str(out.resolve()) in result.stdout.splitlines()[-1], f"last line: {result.stdout.splitlines()[-1]!r}"
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "| stage | time | result |" in md and "## GPT samples" in md, md[:500]
    for folder in ("bert_pretrained", "gpt"):
        assert (out / folder / "config.json").is_file() and (out / folder / "model.safetensors").is_file(), \
            f"{folder}/ lacks config.json or model.safetensors: {sorted(p.name for p in (out / folder).iterdir())}"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed: no plots to check")
def test_quick_demo_saves_the_curves(quick_run):
    out, _ = quick_run
    summary = load_summary(out)
    names = sorted(Path(p).name for p in summary["plots"])
    assert names == sorted(["curves.png", "pretraining.png", "finetuning.png", "gpt.png"]), names
    for name in names:
        head = (out / name).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG (starts with {head!r})"


def test_without_matplotlib_the_demo_skips_plots_and_says_so(quick_run, tmp_path, monkeypatch, capsys):
    summary = load_summary(quick_run[0])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert save_plots(summary, tmp_path) == [], "plots were made without matplotlib"
    print_summary({**summary, "plots": []})
    assert "plots skipped: matplotlib is not installed" in capsys.readouterr().out


# ---------------------------------------------------------------- the pieces the stages are made of


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """An untrained pretraining BERT (QUICK sizes), its tokenizer, held-out pairs and a saved copy."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    corpus = builtin_corpus(folder / "data", num_documents=10, heldout_documents=40, seed=3)
    tokenizer, _ = builtin_tokenizers()
    pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.heldout_file, QUICK.block_size, seed=1)
    torch.manual_seed(0)
    model = BertForPreTraining(bert_config(len(tokenizer), QUICK))
    model.save_pretrained(folder / "bert")
    return model, tokenizer, pairs, folder / "bert"


def test_heldout_scores_of_an_untrained_bert_are_chance_and_repeat_exactly(tiny_bert):
    model, tokenizer, pairs, _ = tiny_bert
    model.train()
    first = evaluate_pretraining(model, pairs, lambda: DataCollatorForLanguageModeling(tokenizer, seed=0))
    again = evaluate_pretraining(model, pairs, lambda: DataCollatorForLanguageModeling(tokenizer, seed=0))
    assert first == again, f"the same masks gave other scores: {first} vs {again}"
    assert model.training, "evaluate_pretraining left the model in eval mode"
    chance = math.log(len(tokenizer))
    assert abs(first["heldout_mlm_loss"] - chance) < 0.1, (
        f"untrained MLM loss {first['heldout_mlm_loss']:.3f}, expected about ln V = {chance:.3f}")
    assert first["heldout_mlm_accuracy"] < 0.05, f"untrained MLM accuracy {first['heldout_mlm_accuracy']:.3f}"
    assert 0.3 < first["heldout_nsp_accuracy"] < 0.7, f"untrained NSP accuracy {first['heldout_nsp_accuracy']:.3f}"


def test_pretrained_and_scratch_classifiers_differ_only_in_the_encoder(tiny_bert):
    model, _, _, folder = tiny_bert
    models = classifier_pair(folder, {0: "0", 1: "1"}, seed=7)
    pretrained, scratch = models["pretrained"].state_dict(), models["scratch"].state_dict()
    assert sorted(pretrained) == sorted(scratch)
    for key in ("classifier.weight", "classifier.bias"):
        assert torch.equal(pretrained[key], scratch[key]), f"{key} starts differently in the two runs"
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(pretrained[embeddings], model.state_dict()[embeddings]), "the pretrained encoder was not loaded"
    assert not torch.equal(scratch[embeddings], pretrained[embeddings]), "the scratch model got the pretrained encoder"


# ---------------------------------------------------------------- --data: the user's own text


def write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_text_without_blank_lines_and_with_labels(tmp_path):
    stories = demo_data.generate_corpus(40, seed=5)
    flat = write_lines(tmp_path / "flat.txt", [s for doc in stories for s in doc])  # no blank lines
    task = demo_data.generate_labeled_task(40, 30, seed=5)
    for split, rows in task.items():
        write_lines(tmp_path / f"{split}.tsv", ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in rows])
    out = tmp_path / "results"
    result = run_demo("--quick", "--data", str(flat), "--train_file", str(tmp_path / "train.tsv"),
                      "--validation_file", str(tmp_path / "dev.tsv"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = load_summary(out)
    assert summary["data"] == str(flat)
    assert any("no blank lines" in note for note in summary["notes"]), summary["notes"]
    f = summary["stages"]["finetuning"]
    assert f["n_train"] == 40 and f["n_dev"] == 30, f"fine-tuned on {f['n_train']} / measured on {f['n_dev']}"
    assert 0 <= f["pretrained_accuracy"] <= 1 and 0 <= f["scratch_accuracy"] <= 1
    assert (out / "bert_pretrained" / "tokenizer.model").is_file(), "no SentencePiece model saved with the BERT"
    prompts = [s["prompt"] for s in summary["stages"]["gpt"]["samples"]]
    assert len(prompts) == 3 and len(set(prompts)) == 3, f"prompts from the held-out text: {prompts}"


def test_user_text_without_labels_skips_fine_tuning_and_reruns_into_an_old_results_folder(tmp_path):
    stories = demo_data.write_corpus(tmp_path / "stories.txt", num_documents=40, seed=6)
    out = tmp_path / "results"
    (out / "bert_pretraining" / "checkpoint-5").mkdir(parents=True)  # what an earlier run leaves behind
    write_lines(out / "bert_pretraining" / "log.jsonl", ['{"step": 5, "loss": 1.0}'])
    result = run_demo("--quick", "--data", str(stories), "--out", str(out))
    assert result.returncode == 0, f"a run into an old results folder failed:\n{result.stderr[-3000:]}"
    summary = load_summary(out)
    assert "skipped" in summary["stages"]["finetuning"], summary["stages"]["finetuning"]
    assert "fine-tuning skipped" in result.stdout, result.stdout[-2000:]
    assert not any("no blank lines" in note for note in summary["notes"]), summary["notes"]


def test_documents_of_n_lines_when_the_file_has_no_blank_lines(tmp_path):
    path = write_lines(tmp_path / "t.txt", [f"line {i}" for i in range(20)])
    documents, notes = read_user_documents(path, lines_per_document=6)
    assert [len(d) for d in documents] == [6, 6, 6, 2], [len(d) for d in documents]
    assert len(notes) == 1 and "every 6 lines" in notes[0], notes


def test_encoding_reads_a_latin1_file_that_utf8_refuses(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("\n".join(f"caf\u00e9 {i}" for i in range(8)).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt: byte 3 \(line 1\) is not valid utf-8"):
        read_user_documents(path, lines_per_document=2)
    documents, _ = read_user_documents(path, lines_per_document=2, encoding="latin-1")
    assert documents[0] == ["caf\u00e9 0", "caf\u00e9 1"], documents[0]


def test_blank_lines_separate_documents_and_the_last_tenth_is_held_out(tmp_path):
    lines = []
    for d in range(30):
        lines += [f"doc {d} sentence {i}" for i in range(3)] + ["", ""]
    documents, notes = read_user_documents(write_lines(tmp_path / "t.txt", lines), lines_per_document=8)
    assert len(documents) == 30 and not notes, (len(documents), notes)
    train, heldout = split_heldout(documents)
    assert (len(train), len(heldout)) == (27, 3) and heldout[-1][0] == "doc 29 sentence 0"


# ---------------------------------------------------------------- bad input: one line, exit 2


def bad_inputs(tmp_path: Path) -> dict:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n", encoding="utf-8")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"hello\x00world\n" * 10)
    tiny = write_lines(tmp_path / "tiny.txt", ["one", "two", "", "three"])
    return {"missing": tmp_path / "nope.txt", "empty": empty, "binary": binary, "nul bytes": nul,
            "too little text": tiny, "a folder": tmp_path}


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "nul bytes", "too little text", "a folder"])
def test_bad_data_is_one_line_naming_the_file_and_exit_2(case, tmp_path, capsys):
    path = bad_inputs(tmp_path)[case]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(demo.main, ["--data", str(path), "--quick", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, f"{case}: exit status {exit_info.value.code}, stderr {err!r}"
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err, f"{case}: stderr is {err!r}"
    assert str(path) in error_lines[0], f"{case}: the error does not name {path}: {error_lines[0]!r}"
    assert not (tmp_path / "out" / "summary.json").exists(), f"{case}: a summary was written anyway"


def test_a_binary_file_names_its_first_byte_that_is_not_utf8_in_a_subprocess(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = run_demo("--quick", "--data", str(binary), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2, f"exit {result.returncode}: {result.stderr!r}"
    assert result.stderr.startswith(f"error: {binary}: byte 128 (line 2) is not valid utf-8"), result.stderr


@pytest.mark.parametrize("argv, fragment", [
    (["--train_file", "t.tsv", "--validation_file", "d.tsv"], "--train_file needs --data"),
    (["--data", "x.txt", "--train_file", "t.tsv"], "go together"),
    (["--data", "x.txt", "--lines_per_document", "1"], "--lines_per_document must be >= 2"),
])
def test_flags_that_cannot_work_together_are_one_line_and_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(demo.main, argv + ["--quick"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and fragment in err, f"exit {exit_info.value.code}, stderr {err!r}"


# ---------------------------------------------------------------- the real demo and its lesson


@pytest.mark.slow
def test_full_demo_pretraining_beats_scratch_by_a_clear_margin(tmp_path):
    """The whole `make demo` (a few minutes on 2 cores): the numbers the README promises."""
    out = tmp_path / "results"
    # One thread: about 3 minutes of CPU, and no slow-down when other jobs share the cores (two threads
    # fighting other processes for two cores ran up to 20x slower per step).
    result = run_demo("--threads", "1", "--out", str(out), timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = load_summary(out)["stages"]
    f, p, g = stages["finetuning"], stages["pretraining"], stages["gpt"]
    assert f["pretrained_accuracy"] > f["scratch_accuracy"] + 0.15, (
        f"dev accuracy pretrained {f['pretrained_accuracy']:.3f} vs scratch {f['scratch_accuracy']:.3f}: "
        "pretraining should win by more than 0.15")
    assert p["heldout_nsp_accuracy"] > 0.65, f"held-out NSP accuracy {p['heldout_nsp_accuracy']:.3f}"
    assert p["heldout_mlm_loss"] < p["heldout_mlm_loss_before"] / 2, (
        f"held-out MLM loss {p['heldout_mlm_loss_before']:.2f} -> {p['heldout_mlm_loss']:.2f}")
    assert g["val_perplexity"] < 10, f"GPT validation perplexity {g['val_perplexity']:.2f}"
