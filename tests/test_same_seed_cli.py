"""Same seed, same run, from the command line.

Two runs of a tool with the same flags end with bit-identical weights (every tool seeds python,
numpy and torch from --seed before it builds a tokenizer, a model or a head, or draws data). A run
killed with SIGKILL at a step boundary, inside a checkpoint save, or just after one, then continued
with `--resume_from_checkpoint latest`, ends bit-identical to the run never killed.

The kill does not depend on timing: the killed run is the real `minigpt.train` entry point with
one callback added, which at the chosen point writes a `.ready` file and waits; the test then
sends SIGKILL (no cleanup runs, as in a crash or an out-of-memory kill). The resume is plain
`python -m minigpt.train ... --resume_from_checkpoint latest`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from common.errors import run_cli
from common.hub.pretrained import load_state_dict

REPO = Path(__file__).resolve().parents[1]
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(60))
GPT_FLAGS = ["--max_steps", "8", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
             "--learning_rate", "1e-2", "--warmup_steps", "2", "--seed", "7", "--disable_tqdm", "--use_cpu",
             "--bf16", "false", "--max_eval_samples", "4", "--sample_tokens", "0",
             "--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=16,dropout=0.1"]

# The killed run: minigpt.train's own __main__, plus a callback that waits to be killed at KILL_AT.
WAIT_TO_BE_KILLED = textwrap.dedent("""
    import os, runpy, sys, time
    sys.path.insert(0, {repo!r})
    from common.train import checkpoints, trainer as trainer_module
    from common.train.utils import TrainerCallback

    point, step = os.environ["KILL_AT"], int(os.environ["KILL_STEP"])
    ready = os.environ["READY_FILE"]

    def wait_for_the_kill():
        open(ready, "w").close()
        time.sleep(600)

    class WaitForKill(TrainerCallback):
        def on_step_end(self, trainer):  # after the update of `step`, before its checkpoint
            if point == "step_end" and trainer.state.global_step == step:
                wait_for_the_kill()

        def on_save(self, trainer, folder):  # the checkpoint of `step` is complete
            if point == "after_save" and trainer.state.global_step == step:
                wait_for_the_kill()

    save_model_files = checkpoints.save_model_files

    def save_then_wait(model, folder, *args, **kwargs):  # inside save_checkpoint: weights written, state not yet
        save_model_files(model, folder, *args, **kwargs)
        if point == "in_save" and str(folder).endswith(str(step)):
            wait_for_the_kill()

    checkpoints.save_model_files = save_then_wait
    init = trainer_module.Trainer.__init__

    def init_with_callback(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.callbacks.append(WaitForKill())

    trainer_module.Trainer.__init__ = init_with_callback
    sys.argv = ["minigpt.train", *sys.argv[1:]]
    runpy.run_module("minigpt.train", run_name="__main__")
""")


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def gpt_train(tmp_path: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    argv = ["--train_file", str(text), "--output_dir", str(output_dir), *GPT_FLAGS, *extra]
    return subprocess.run([sys.executable, "-m", "minigpt.train", *argv], env=environment(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def assert_same_weights(expected_folder: Path, actual_folder: Path, what: str) -> None:
    expected, actual = load_state_dict(expected_folder), load_state_dict(actual_folder)
    assert expected.keys() == actual.keys()
    differ = {k: (expected[k] - actual[k]).abs().max().item() for k in expected if not torch.equal(expected[k], actual[k])}
    assert not differ, f"{what}: weights differ (max abs difference per tensor): {differ}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted minigpt.train run."""
    tmp_path = tmp_path_factory.mktemp("reference")
    done = gpt_train(tmp_path, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    return tmp_path / "out"


@pytest.mark.slow
def test_two_minigpt_train_runs_with_the_same_seed_give_the_same_weights_bit_for_bit(reference, tmp_path):
    again = gpt_train(tmp_path, tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert_same_weights(reference, tmp_path / "again", "two runs of minigpt.train with --seed 7")
    other = gpt_train(tmp_path, tmp_path / "other_seed", "--seed", "8")
    assert other.returncode == 0, other.stderr
    with pytest.raises(AssertionError):
        assert_same_weights(reference, tmp_path / "other_seed", "another seed")


@pytest.mark.slow
@pytest.mark.parametrize("point, step, resumes_from", [
    ("step_end", 3, 2),    # between two checkpoints: step 3 is lost and redone
    ("step_end", 4, 2),    # step 4 done, its checkpoint not yet begun
    ("in_save", 4, 2),     # half-way through writing checkpoint-4: no complete folder may be left
    ("after_save", 4, 4),  # checkpoint-4 complete
])
def test_sigkill_then_resume_through_the_cli_ends_bit_identical(reference, tmp_path, point, step, resumes_from):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out, ready = tmp_path / "out", tmp_path / "ready"
    script = tmp_path / "wait_to_be_killed.py"
    script.write_text(WAIT_TO_BE_KILLED.format(repo=str(REPO)))
    killed = subprocess.Popen([sys.executable, str(script), "--train_file", str(text), "--output_dir", str(out),
                               *GPT_FLAGS], env={**environment(), "KILL_AT": point, "KILL_STEP": str(step),
                                                 "READY_FILE": str(ready)},
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert killed.poll() is None, f"the run ended before the kill point:\n{killed.communicate()[0]}"
        assert time.monotonic() < deadline, "the kill point was not reached in 240 s"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, f"return code {killed.returncode}"
    complete = sorted(p.name for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    assert complete[-1] == f"checkpoint-{resumes_from}", f"complete checkpoints after the kill: {complete}"

    resumed = gpt_train(tmp_path, out, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / f'checkpoint-{resumes_from}'}" in resumed.stderr, resumed.stderr
    assert_same_weights(reference, out, f"SIGKILL at {point} of step {step}, then --resume_from_checkpoint latest")
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(("tmp-", "old-"))]
    assert not leftovers, f"temporary folders left after the resumed run: {leftovers}"


# ------------------------------------------------------------ every tool twice in one process (the global
# generator has moved on between the two calls, so only seeding first makes them agree)


def run_tool(main, argv) -> int:
    try:
        return run_cli(main, argv) or 0
    except SystemExit as e:
        return e.code


BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat ran on mat good bad movie was".split()
SENTENCES = "".join(f"the {a} {v} on the mat\n" for a in ("cat", "dog") for v in ("sat", "ran")) * 6
BERT_SMALL = ("hidden_size=8,num_attention_heads=2,num_hidden_layers=1,intermediate_size=16,"
              "max_position_embeddings=32,hidden_dropout_prob=0.1")
COMMON = ["--max_steps", "3", "--disable_tqdm", "--use_cpu", "--seed", "3", "--per_device_train_batch_size", "4",
          "--bf16", "false"]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    from common.text.auto import BertTokenizer
    from minibert import BertConfig, BertForPreTraining

    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertForPreTraining(BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=32)).save_pretrained(folder)
    BertTokenizer(vocab=BERT_VOCAB).save_pretrained(folder)
    return folder


def test_minibert_pretrain_twice_in_one_process_gives_the_same_weights(tmp_path, bert_folder):
    from minibert.pretrain import main

    (tmp_path / "text.txt").write_text(SENTENCES)
    for name in ("first", "second"):
        argv = ["--train_file", str(tmp_path / "text.txt"), "--line_by_line", "--tokenizer_name", str(bert_folder),
                "--config_overrides", BERT_SMALL, "--max_seq_length", "16", "--validation_split_percentage", "0",
                "--output_dir", str(tmp_path / name), *COMMON]
        torch.rand(7)  # the global generator is elsewhere now: the tool must seed before it builds the model
        assert run_tool(main, argv) == 0
    assert_same_weights(tmp_path / "first", tmp_path / "second", "minibert.pretrain twice with --seed 3")


def test_minibert_finetune_twice_in_one_process_gives_the_same_head(tmp_path, bert_folder):
    from minibert.finetune import main

    rows = "".join(f"the {a} {v}\t{int(a == 'cat')}\n" for a in ("cat", "dog") for v in ("sat", "ran")) * 3
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + rows)
    for name in ("first", "second"):
        argv = ["--task", "classification", "--model_name_or_path", str(bert_folder), "--train_file",
                str(tmp_path / "train.tsv"), "--validation_file", str(tmp_path / "train.tsv"), "--output_dir",
                str(tmp_path / name), *COMMON]
        torch.rand(7)
        assert run_tool(main, argv) == 0
    assert_same_weights(tmp_path / "first", tmp_path / "second", "minibert.finetune twice with --seed 3")


def test_minigpt_train_twice_in_one_process_gives_the_same_weights(tmp_path):
    """With the default recipe (no --optim: Muon for a new model); only --bf16 is fixed, since its
    default is chosen by timing a step and so may differ from one run to the next."""
    from minigpt.train import main

    (tmp_path / "text.txt").write_text(TEXT)
    for name in ("first", "second"):
        torch.rand(7)
        assert run_tool(main, ["--train_file", str(tmp_path / "text.txt"), "--output_dir", str(tmp_path / name),
                               "--max_steps", "2", "--save_steps", "2", *GPT_FLAGS[6:]]) == 0
    optim = json.loads((tmp_path / "first" / "checkpoint-2" / "training_args.json").read_text())["optim"]
    assert optim == "muon", f"the run trained with {optim!r}; this test is meant to cover the default, Muon"
    assert_same_weights(tmp_path / "first", tmp_path / "second", "minigpt.train twice with --seed 7")


def test_minibert_distill_twice_in_one_process_gives_the_same_student(tmp_path):
    """A student from scratch (its initialisation draws from --seed), dropout on, both loss terms."""
    from common.text.auto import BertTokenizer
    from minibert import BertConfig, BertForSequenceClassification
    from minibert.distill import main

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(BERT_VOCAB), hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=32, id2label={0: "0", 1: "1"})).save_pretrained(teacher)
    BertTokenizer(vocab=BERT_VOCAB).save_pretrained(teacher)
    rows = "".join(f"the {a} {v}\t{int(a == 'cat')}\n" for a in ("cat", "dog") for v in ("sat", "ran")) * 3
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + rows)
    for name in ("first", "second"):
        argv = ["--task", "classification", "--teacher_name_or_path", str(teacher), "--train_file",
                str(tmp_path / "train.tsv"), "--validation_file", str(tmp_path / "train.tsv"), "--output_dir",
                str(tmp_path / name), "--student_num_hidden_layers", "1", "--student_init", "scratch",
                "--alpha_ce", "0.5", "--alpha_task", "0.5", "--save_strategy", "no", *COMMON]
        torch.rand(7)  # the global generator is elsewhere now: the tool must seed before it builds the student
        assert run_tool(main, argv) == 0
    assert_same_weights(tmp_path / "first", tmp_path / "second", "minibert.distill twice with --seed 3")


def test_minit5_pretrain_twice_in_one_process_gives_the_same_weights(tmp_path):
    pytest.importorskip("minit5")
    from minit5.pretrain import main

    (tmp_path / "text.txt").write_text("ein hund rennt im park .\na dog runs in the park .\n" * 30)
    for name in ("first", "second"):
        torch.rand(7)
        assert run_tool(main, ["--train_file", str(tmp_path / "text.txt"), "--output_dir", str(tmp_path / name),
                               "--max_seq_length", "16", "--vocab_size", "160", "--config_overrides",
                               "d_model=16,d_kv=4,num_heads=4,d_ff=32,num_layers=1,dropout_rate=0.1",
                               *COMMON]) == 0
    assert_same_weights(tmp_path / "first", tmp_path / "second", "minit5.pretrain twice with --seed 3")
