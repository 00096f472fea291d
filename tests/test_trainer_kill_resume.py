"""A run killed with SIGKILL and resumed ends with exactly the weights of a run never killed.

The test writes a training script, runs it once to the end (the reference), runs it again and
kills it with `kill -9` at the end of step 5, once checkpoint-4 exists (no chance to clean up:
this is a crash or an out-of-memory kill), then resumes with --resume_from_checkpoint latest and
compares every weight with torch.equal. The child announces the moment and blocks, so the kill
lands there on a fast machine and on a loaded one alike. A kill in the middle of a save
(tests/test_faults.py) must leave no folder that looks complete.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from common.hub.pretrained import load_state_dict

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    from _trainer_toys import RaggedTokenDataset, ToyTokenLM, random_replacement_collator
    from common.train.trainer import Trainer
    from common.train.utils import TrainerCallback
    from common.train.args import TrainingArguments

    class WaitForKill(TrainerCallback):
        # With KILL_AFTER_STEP=n: at the end of step n, say so (a file) and block until killed.
        def on_step_end(self, trainer):
            if trainer.state.global_step == int(os.environ.get("KILL_AFTER_STEP", "0")):
                open(output_dir + ".ready", "w").close()
                time.sleep(600)

    output_dir, resume = sys.argv[1], sys.argv[2] == "resume"
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=output_dir, max_steps=14, per_device_train_batch_size=3,
                             gradient_accumulation_steps=2, learning_rate=1e-2, warmup_steps=3,
                             save_steps=2, save_total_limit=2, logging_steps=1, use_cpu=True,
                             disable_tqdm=True, seed=3, resume_from_checkpoint="latest" if resume else None)
    trainer = Trainer(ToyTokenLM(dropout=0.2), args, train_dataset=RaggedTokenDataset(n=20),
                      data_collator=random_replacement_collator, callbacks=[WaitForKill()])
    trainer.train()
    trainer.save_model(os.path.join(output_dir, "final"))
""")


def run_script(script: Path, output_dir: Path, mode: str, **env) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen([sys.executable, str(script), str(output_dir), mode], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_gives_the_same_weights_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    reference = run_script(script, tmp_path / "reference", "fresh")
    # Killed at the end of step 5: after checkpoint-4 was saved, in the middle of the run; the
    # child announces that moment and blocks, so no sleep decides where the kill lands.
    killed = run_script(script, tmp_path / "killed", "fresh", KILL_AFTER_STEP="5")

    ready = tmp_path / "killed.ready"
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert killed.poll() is None, f"the run ended before it could be killed:\n{killed.communicate()[0]}"
        assert time.monotonic() < deadline, "step 5 did not end within 300 s"
        time.sleep(0.05)
    assert (tmp_path / "killed" / "checkpoint-4").is_dir(), "step 5 ended without checkpoint-4 saved"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, f"return code {killed.returncode}"
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before the kill; nothing was tested"

    resumed = run_script(script, tmp_path / "killed", "resume")
    resumed_log = resumed.communicate(timeout=300)[0]
    reference_log = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, reference_log
    assert resumed.returncode == 0, resumed_log
    assert "resuming from" in resumed_log, f"the second run did not resume:\n{resumed_log}"

    expected = load_state_dict(tmp_path / "reference" / "final")
    actual = load_state_dict(tmp_path / "killed" / "final")
    differ = {k: (expected[k] - actual[k]).abs().max().item()
              for k in expected if not torch.equal(expected[k], actual[k])}
    assert not differ, f"weights differ after kill -9 + resume (max abs difference per tensor): {differ}"
    leftovers = [p.name for p in (tmp_path / "killed").iterdir() if p.name.startswith(("tmp-", "old-"))]
    assert not leftovers, f"temporary folders left after the resumed run: {leftovers}"
