"""Faults during training and saving: nothing is lost, and each one ends in a message you can act on.

    SIGKILL in the middle of a save   the previous checkpoint stays complete; the next run resumes from it
                                      and ends with the weights of a run that was never killed
    SIGINT (Ctrl-C) from outside      training finishes its step, saves, prints the resume flag, exits 0
    a full disk while saving          one error line (exit 2), the previous checkpoint / model is kept
    a pickle that would run code      refused with the file named; the code never runs

The subprocess tests run `FAULT_SCRIPT` (a small Trainer run through common.errors.run_cli, as the
command-line tools do) and act on it from outside: a real kill -9, a real SIGINT, a real file size
limit (RLIMIT_FSIZE, which makes write() fail with EFBIG the way a full disk fails with ENOSPC).
Already covered elsewhere, not repeated here: kill -9 at a random moment + bit-exact resume
(test_trainer_kill_resume.py), Ctrl-C and ENOSPC inside one process (test_trainer.py), a code
pickle as pytorch_model.bin (test_bert_checkpoint.py).
"""
from __future__ import annotations

import errno
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

from _trainer_toys import RaggedTokenDataset, ToyTokenizer, ToyTokenLM
from common.hub.pretrained import load_state_dict
from common.errors import CheckpointError
from common.train.trainer import Trainer
from common.train.checkpoints import list_checkpoints
from common.train.args import TrainingArguments

REPO = Path(__file__).resolve().parents[1]
resource = pytest.importorskip("resource", reason="RLIMIT_FSIZE needs a POSIX system")

FAULT_SCRIPT = textwrap.dedent("""
    import os, resource, signal, sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    import common.train.checkpoints as trainer_checkpoint
    from _trainer_toys import RaggedTokenDataset, ToyPretrained, random_replacement_collator
    from common.errors import run_cli
    from common.train.trainer import Trainer
    from common.train.utils import TrainerCallback
    from common.train.args import TrainingArguments

    output_dir, mode = sys.argv[1], sys.argv[2]
    ready = output_dir + ".ready"  # the parent acts once this file exists

    def hang_while_writing_optimizer_of_step_4():
        real = trainer_checkpoint.save_torch_file
        def save(obj, path):
            if path.name == "optimizer.pt" and path.parent.name == "tmp-checkpoint-4":
                path.write_bytes(b"half an optimizer state")  # a file cut off mid-write
                open(ready, "w").close()
                time.sleep(600)
            real(obj, path)
        trainer_checkpoint.save_torch_file = save

    class Fault(TrainerCallback):
        def on_step_end(self, trainer):
            step = trainer.state.global_step
            if mode == "disk_full" and step == 3:  # from now on no file may exceed 1 kB
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write() instead of killing us
                resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
            if mode == "sigint" and step == 3:
                # Tell the parent, then wait for its Ctrl-C (the handler sets _interrupted): the
                # signal lands after step 3 however fast or slow the machine is.
                open(ready, "w").close()
                deadline = time.monotonic() + 120
                while not trainer._interrupted and time.monotonic() < deadline:
                    time.sleep(0.01)

    def main(argv):
        if mode == "kill_in_save":
            hang_while_writing_optimizer_of_step_4()
        torch.manual_seed(0)
        args = TrainingArguments(output_dir=output_dir, max_steps=8, per_device_train_batch_size=3,
                                 gradient_accumulation_steps=2, learning_rate=1e-2, warmup_steps=2,
                                 save_steps=2, logging_steps=1, use_cpu=True, disable_tqdm=True, seed=3,
                                 resume_from_checkpoint="latest" if mode == "resume" else None)
        trainer = Trainer(ToyPretrained(dropout=0.2), args, train_dataset=RaggedTokenDataset(n=20),
                          data_collator=random_replacement_collator, callbacks=[Fault()])
        output = trainer.train()
        if output.metrics["stop_reason"] == "finished":
            trainer.save_model(os.path.join(output_dir, "final"))

    run_cli(main)
""")


def start(script: Path, output_dir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(output_dir), mode],
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, what: str) -> tuple[str, str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, f"{what} exited {process.returncode}:\n{out}\n{err}"
    return out, err


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the fault was injected:\n{process.communicate()}")
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.05)


def weight_differences(expected_folder: Path, actual_folder: Path) -> dict[str, float]:
    expected, actual = load_state_dict(expected_folder), load_state_dict(actual_folder)
    assert expected.keys() == actual.keys(), f"keys differ: {expected.keys() ^ actual.keys()}"
    return {k: (expected[k] - actual[k]).abs().max().item() for k in expected if not torch.equal(expected[k], actual[k])}


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fault_script") / "train.py"
    path.write_text(FAULT_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    return path


@pytest.fixture(scope="module")
def reference(script, tmp_path_factory) -> Path:
    """The final weights of the same run, never disturbed."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    finish(start(script, output_dir, "fresh"), "the reference run")
    return output_dir / "final"


# -------------------------------------------------------------- SIGKILL while a checkpoint is written
@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint_and_resume_ends_bit_exact(
        script, reference, tmp_path):
    run = tmp_path / "run"
    killed = start(script, run, "kill_in_save")
    wait_for(Path(f"{run}.ready"), killed)  # checkpoint-4's optimizer.pt is half written right now
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, f"return code {killed.returncode}"

    assert (run / "tmp-checkpoint-4").is_dir(), "the kill should have hit the save of checkpoint-4"
    complete = [p.name for p in list_checkpoints(run)]
    assert complete == ["checkpoint-2"], f"complete checkpoints after the kill: {complete} (expected only checkpoint-2)"
    assert not (run / "checkpoint-4").exists(), "a half-written save must never carry a checkpoint-<step> name"
    state = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2, f"checkpoint-2 says global_step {state['global_step']}"
    load_state_dict(run / "checkpoint-2")  # the previous weights still load

    log = "".join(finish(start(script, run, "resume"), "the resumed run"))
    assert "resuming from" in log and "checkpoint-2" in log, f"the resumed run did not start at checkpoint-2:\n{log}"
    differ = weight_differences(reference, run / "final")
    assert not differ, f"kill in a save + resume differs from an undisturbed run (max abs difference): {differ}"
    leftovers = sorted(p.name for p in run.iterdir() if p.name.startswith(("tmp-", "old-")))
    assert not leftovers, f"the resumed run left temporary folders: {leftovers}"


# -------------------------------------------------------------- Ctrl-C from outside
@pytest.mark.slow
def test_sigint_from_outside_finishes_the_step_saves_says_how_to_resume_and_the_resume_ends_bit_exact(
        script, reference, tmp_path):
    run = tmp_path / "run"
    interrupted = start(script, run, "sigint")
    wait_for(Path(f"{run}.ready"), interrupted)
    interrupted.send_signal(signal.SIGINT)
    out, err = finish(interrupted, "the interrupted run")
    said = [line for line in (out + err).splitlines() if "--resume_from_checkpoint" in line]
    assert said, f"no resume instruction after Ctrl-C; stdout:\n{out}\nstderr:\n{err}"
    folder = Path(said[-1].split("--resume_from_checkpoint", 1)[1].strip())
    assert folder.parent == run and (folder / "trainer_state.json").is_file(), f"the resume flag names {folder}"
    step = json.loads((folder / "trainer_state.json").read_text())["global_step"]
    assert step == 3, f"Ctrl-C during step 3's callback saved step {step}; expected 3 (the step it finished)"
    assert not (run / "final").exists(), "the interrupted run must not save a final model as if it had finished"
    assert "Traceback" not in err, err

    finish(start(script, run, "resume"), "the resumed run")
    differ = weight_differences(reference, run / "final")
    assert not differ, f"Ctrl-C + resume differs from an undisturbed run (max abs difference): {differ}"


# -------------------------------------------------------------- a full disk
@pytest.mark.slow
def test_a_file_size_limit_during_a_save_is_one_error_line_and_keeps_the_previous_checkpoint(script, tmp_path):
    run = tmp_path / "run"
    process = start(script, run, "disk_full")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, f"exit {process.returncode}, expected 2:\n{out}\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error line, stderr:\n{err}"
    for needed in ("checkpoint-4", "File too large", "checkpoint-2 is kept", "--resume_from_checkpoint"):
        assert needed in errors[0], f"the error line lacks {needed!r}: {errors[0]}"
    assert [p.name for p in run.iterdir() if p.is_dir()] == ["checkpoint-2"], \
        f"folders after the failed save: {sorted(p.name for p in run.iterdir())}"
    load_state_dict(run / "checkpoint-2")


def test_a_full_disk_during_save_pretrained_keeps_the_previous_model_and_leaves_no_temporary_file(
        tmp_path, monkeypatch):
    import common.hub.pretrained as checkpoint
    from minibert import BertConfig, BertModel

    small = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                 max_position_embeddings=16)
    old = BertModel(BertConfig(vocab_size=40, **small))
    old.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(path, data):
        with open(path, "wb") as f:
            f.write(bytes(data)[:100])  # part of the file reached the disk, then it filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(checkpoint, "write_bytes", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as error:
        BertModel(BertConfig(vocab_size=60, **small)).save_pretrained(tmp_path)
    assert "model.safetensors" in str(error.value) and "unchanged" in str(error.value), str(error.value)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before, f"files changed by the failed save: {sorted(set(after) ^ set(before)) or 'contents'}"
    monkeypatch.undo()
    reloaded = BertModel.from_pretrained(tmp_path)
    assert reloaded.config.vocab_size == 40 and all(
        torch.equal(a, b) for a, b in zip(old.state_dict().values(), reloaded.state_dict().values())), \
        "the previous model no longer loads as it was"


SAVE_PRETRAINED_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{repo!r}]
    import torch
    import common.hub.pretrained as checkpoint
    from minibert import BertConfig, BertModel

    folder, ready = sys.argv[1], sys.argv[2]
    small = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                 max_position_embeddings=16)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, **small)).save_pretrained(folder)

    def hang(path, data):
        with open(path, "wb") as f:
            f.write(bytes(data)[: len(data) // 2])
        open(ready, "w").close()
        time.sleep(600)
    checkpoint.write_bytes = hang
    BertModel(BertConfig(vocab_size=60, **small)).save_pretrained(folder)
""")


def test_sigkill_during_save_pretrained_leaves_the_previous_model_loadable(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(SAVE_PRETRAINED_KILL_SCRIPT.format(repo=str(REPO)))
    folder, ready = tmp_path / "model", tmp_path / "ready"
    process = subprocess.Popen([sys.executable, str(script), str(folder), str(ready)],
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(ready, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    from minibert import BertModel

    model = BertModel.from_pretrained(folder)
    assert model.config.vocab_size == 40, f"config.json changed to vocab_size {model.config.vocab_size}"
    torch.manual_seed(0)
    from minibert import BertConfig
    expected = BertModel(BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=16, max_position_embeddings=16))
    assert all(torch.equal(a, b) for a, b in zip(expected.state_dict().values(), model.state_dict().values())), \
        "the weights of the previous save_pretrained changed"


# -------------------------------------------------------------- pickles that carry code
class RunsCodeWhenUnpickled:
    """Unpickling calls open(marker, "w"): if the marker file exists, the payload ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_checkpoint(tmp_path) -> Path:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, save_steps=2, use_cpu=True,
                             disable_tqdm=True, per_device_train_batch_size=4, logging_steps=1)
    Trainer(ToyTokenLM(), args, train_dataset=RaggedTokenDataset(), tokenizer=ToyTokenizer()).train()
    return tmp_path / "out" / "checkpoint-2"


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_checkpoint_file_with_code_in_its_pickle_is_refused_and_the_code_never_runs(tmp_path, name):
    folder = make_checkpoint(tmp_path)
    marker = tmp_path / "payload_ran"
    state = torch.load(folder / name, weights_only=True)
    payload = {"state": state, "payload": RunsCodeWhenUnpickled(marker)} if name != "optimizer.pt" else \
        {**state, "payload": RunsCodeWhenUnpickled(marker)}
    torch.save(payload, folder / name)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, save_steps=2, use_cpu=True,
                             disable_tqdm=True, per_device_train_batch_size=4, resume_from_checkpoint="latest")
    with pytest.raises(CheckpointError, match="refused to load") as error:
        Trainer(ToyTokenLM(), args, train_dataset=RaggedTokenDataset(), tokenizer=ToyTokenizer()).train()
    assert not marker.exists(), f"resuming executed the code pickled in {name}"
    message = str(error.value)
    assert name in message and "open" in message, f"the error should name the file and the call: {message}"
    assert "\n" not in message, f"the error must be one line: {message!r}"


def test_a_weights_file_that_is_not_a_state_dict_is_refused_by_name(tmp_path):
    from common.hub.pretrained import load_state_dict_file

    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: expected a dict of tensors"):
        load_state_dict_file(tmp_path / "pytorch_model.bin")
