"""Under torchrun, 2 processes with batch 4 each make the same updates as 1 process with batch 8.

The test writes a script, launches it with `python -m torch.distributed.run --nproc_per_node=2`
on the CPU (gloo) and compares the saved weights with an in-process run. The data is token-level
with unequal padding, so the two processes see different numbers of label tokens: the Trainer
must weight by the token count summed over processes, not just average the two gradients.
A second configuration (batch 2, accumulation 2, 2 processes) exercises DDP's no_sync.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from _trainer_toys import RaggedTokenDataset, ToyTokenizer, ToyTokenLM
from common.hub.pretrained import load_state_dict
from common.train.trainer import Trainer
from common.train.args import TrainingArguments

REPO = Path(__file__).resolve().parents[1]
# eps >> |g| and lr = eps make AdamW's steps ~ SGD steps, so weights reflect the gradients exactly
COMMON = dict(max_steps=3, learning_rate=1e3, adam_epsilon=1e3, max_grad_norm=0.0, use_cpu=True,
              disable_tqdm=True, logging_steps=1, seed=4)
CONFIGS = {"batch4": dict(per_device_train_batch_size=4, gradient_accumulation_steps=1),
           "batch2_accum2": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2)}

SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    from _trainer_toys import RaggedTokenDataset, ToyTokenizer, ToyTokenLM
    from common.train.trainer import Trainer
    from common.train.args import TrainingArguments

    for name, config in {configs!r}.items():
        torch.manual_seed(0)
        args = TrainingArguments(output_dir=os.path.join(sys.argv[1], name), **{common!r}, **config)
        trainer = Trainer(ToyTokenLM(), args, train_dataset=RaggedTokenDataset(n=24), tokenizer=ToyTokenizer())
        assert trainer.ctx.world_size == 2, trainer.ctx
        trainer.train()
        trainer.save_model(os.path.join(args.output_dir, "final"))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(script: Path, out: Path) -> None:
    """`python -m torch.distributed.run --nproc_per_node=2 script out` on the CPU; fails with its output."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", str(script), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_two_processes_with_batch_4_equal_one_process_with_batch_8(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), configs=CONFIGS, common=COMMON))
    run_two_processes(script, tmp_path)

    torch.manual_seed(0)
    single = Trainer(ToyTokenLM(), TrainingArguments(output_dir=str(tmp_path / "single"), per_device_train_batch_size=8,
                                                     **COMMON),
                     train_dataset=RaggedTokenDataset(n=24), tokenizer=ToyTokenizer())
    single.train()
    expected = single.model.state_dict()
    for name in CONFIGS:
        saved = load_state_dict(tmp_path / name / "final")
        assert sorted(saved) == sorted(expected), f"{name}: saved keys {sorted(saved)} (no 'module.' prefix expected)"
        err = max((saved[k] - v).abs().max().item() for k, v in expected.items())
        assert err <= 1e-6, f"{name}: 2 processes differ from 1 process with batch 8 by {err:.2e} (tolerance 1e-6)"
        steps = [json.loads(line)["step"] for line in open(tmp_path / name / "log.jsonl") if '"loss"' in line]
        assert steps == [1, 2, 3], f"{name}: log.jsonl training lines {steps} (rank 0 alone must write them)"
        checkpoint = tmp_path / name / "checkpoint-3"
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(checkpoint)), os.listdir(checkpoint)
