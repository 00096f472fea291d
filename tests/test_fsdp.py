"""--fsdp: torch.distributed's fully_shard under torchrun (2 CPU processes, gloo) makes the updates of
DDP while each process holds about half of the weights and of the optimizer state (common/train/fsdp.py).

One torchrun launch trains a small GPT with FSDP (also with gradient accumulation, so
the gradient sync is skipped on the first micro-batch, and with --optim muon, whose Newton-Schulz
iteration must see each whole matrix, not a process's rows of it) beside DDP runs of the same shapes,
and saves each final model; each process also writes how many parameter and optimizer-state numbers
it holds.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.hub.pretrained import load_state_dict
from common.train.args import TrainingArguments
from common.train.trainer import Trainer
from test_trainer_ddp import run_two_processes

REPO = Path(__file__).resolve().parents[1]
COMMON = dict(max_steps=3, learning_rate=1e-2, max_grad_norm=1.0, use_cpu=True, disable_tqdm=True,
              logging_steps=1, seed=4, save_strategy="no")
RUNS = {"ddp": dict(per_device_train_batch_size=4),
        "fsdp": dict(per_device_train_batch_size=4, fsdp=True),
        "ddp_accum2": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2),
        "fsdp_accum2": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, fsdp=True),
        "ddp_muon": dict(per_device_train_batch_size=4, optim="muon"),
        "fsdp_muon": dict(per_device_train_batch_size=4, optim="muon", fsdp=True)}

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    from _trainer_toys import RaggedTokenDataset, ToyTokenizer
    from common.train.args import TrainingArguments
    from common.train.fsdp import local_tensor
    from common.train.trainer import Trainer
    from minigpt.config import GPTConfig
    from minigpt.model import GPT

    for name, run in {runs!r}.items():
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=13, block_size=16))
        total = sum(p.numel() for p in model.parameters())
        args = TrainingArguments(output_dir=os.path.join(sys.argv[1], name), **{common!r}, **run)
        trainer = Trainer(model, args, train_dataset=RaggedTokenDataset(n=24), tokenizer=ToyTokenizer())
        trainer.train()
        trainer.save_model(os.path.join(args.output_dir, "final"))
        held = sum(local_tensor(p).numel() for p in trainer.model.parameters())
        state = sum(local_tensor(t).numel() for s in trainer.optimizer.state.values() for t in s.values()
                    if torch.is_tensor(t) and t.dim() > 0)
        with open(os.path.join(args.output_dir, f"held_{{trainer.ctx.rank}}.json"), "w") as f:
            json.dump(dict(total=total, params=held, state=state), f)
""")


@pytest.mark.slow
def test_fsdp_equals_ddp_and_each_process_holds_half(tmp_path):
    script = tmp_path / "train_fsdp.py"
    script.write_text(SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests"), runs=RUNS, common=COMMON))
    run_two_processes(script, tmp_path)
    for name, reference in (("fsdp", "ddp"), ("fsdp_accum2", "ddp_accum2"), ("fsdp_muon", "ddp_muon")):
        ddp = load_state_dict(tmp_path / reference / "final")
        sharded = load_state_dict(tmp_path / name / "final")
        assert sorted(sharded) == sorted(ddp), f"{name}: saved keys differ from DDP's"
        err = max((sharded[k] - v).abs().max().item() for k, v in ddp.items())
        assert err <= 1e-5, f"{name}: final weights differ from the DDP run's by {err:.2e} (tolerance 1e-5)"
        ddp_held = json.loads((tmp_path / reference / "held_0.json").read_text())
        assert ddp_held["params"] == ddp_held["total"], "DDP should hold every parameter in each process"
        for rank in (0, 1):
            held = json.loads((tmp_path / name / f"held_{rank}.json").read_text())
            share = held["params"] / held["total"]
            assert 0.4 <= share <= 0.6, f"{name} rank {rank} holds {share:.0%} of the parameters, not about half"
            assert 0.4 <= held["state"] / ddp_held["state"] <= 0.6, (
                f"{name} rank {rank} holds {held['state']} optimizer-state numbers, DDP {ddp_held['state']} "
                "in each process: not about half")
    adamw = json.loads((tmp_path / "ddp" / "held_0.json").read_text())
    assert adamw["state"] == 2 * adamw["total"], "AdamW keeps two numbers (m, v) per parameter"


def test_fsdp_without_torchrun_is_one_clear_error(tmp_path):
    from _trainer_toys import RaggedTokenDataset, ToyTokenizer, ToyTokenLM
    args = TrainingArguments(output_dir=str(tmp_path), fsdp=True, max_steps=1, use_cpu=True, disable_tqdm=True)
    trainer = Trainer(ToyTokenLM(), args, train_dataset=RaggedTokenDataset(n=4), tokenizer=ToyTokenizer())
    with pytest.raises(ConfigError, match="--fsdp shards the weights over the processes of torchrun"):
        trainer.train()


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    from _trainer_toys import RaggedTokenDataset, ToyTokenizer
    from common.train.args import TrainingArguments
    from common.train.trainer import Trainer
    from minigpt.config import GPTConfig
    from minigpt.model import GPT

    def train(name, optim, **extra):
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=13, block_size=16, dropout=0.1))
        args = TrainingArguments(output_dir=os.path.join(sys.argv[1], name), max_steps=4, learning_rate=1e-2,
                                 use_cpu=True, disable_tqdm=True, logging_steps=1, seed=4, fsdp=True,
                                 per_device_train_batch_size=2, save_strategy="steps", save_steps=2, optim=optim,
                                 **extra)
        trainer = Trainer(model, args, train_dataset=RaggedTokenDataset(n=24), tokenizer=ToyTokenizer())
        trainer.train()
        trainer.save_model(os.path.join(args.output_dir, "final"))

    for optim in ("adamw_torch", "muon"):
        train(f"straight_{{optim}}", optim)
        checkpoint = os.path.join(sys.argv[1], f"straight_{{optim}}", "checkpoint-2")
        train(f"resumed_{{optim}}", optim, resume_from_checkpoint=checkpoint)
""")


@pytest.mark.slow
@pytest.mark.parametrize("optim", ["adamw_torch", "muon"])
def test_an_fsdp_run_resumed_from_its_checkpoint_ends_on_the_uninterrupted_weights(tmp_path_factory, optim):
    """Stopped at step 2 of 4 and resumed (each process reading the full weights and its own shard of the
    optimizer state, dropout on so the random state must continue too): the weights of the run that
    never stopped. A resume that lost the moments (or the Muon momentum), or loaded another process's
    shard, ends elsewhere."""
    out = _resumed_runs(tmp_path_factory)
    straight = load_state_dict(out / f"straight_{optim}" / "final")
    resumed = load_state_dict(out / f"resumed_{optim}" / "final")
    err = max((resumed[k] - v).abs().max().item() for k, v in straight.items())
    assert err <= 1e-6, f"{optim}: resumed run ends {err:.2e} away from the uninterrupted one (tolerance 1e-6)"
    assert (out / f"straight_{optim}" / "checkpoint-2" / "optimizer_rank1.pt").is_file(), "each process saves its shard"


_RESUMED = {}


def _resumed_runs(tmp_path_factory) -> Path:
    """One torchrun launch for both optimizers (each launch costs seconds of start-up)."""
    if "out" not in _RESUMED:
        out = tmp_path_factory.mktemp("fsdp_resume")
        script = out / "resume_fsdp.py"
        script.write_text(RESUME_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
        run_two_processes(script, out)
        _RESUMED["out"] = out
    return _RESUMED["out"]


def test_resuming_across_the_fsdp_setting_is_one_clear_error(tmp_path):
    """A sharded checkpoint (optimizer_rank<r>.pt) resumed without --fsdp, and a plain one with --fsdp,
    each name what the checkpoint needs instead of "not a training checkpoint"."""
    import torch

    from common.errors import CheckpointError
    from common.train.checkpoints import load_training_state
    from common.train.device import DistributedContext

    sharded, plain = tmp_path / "sharded", tmp_path / "plain"
    for folder, optimizer_files in ((sharded, ["optimizer_rank0.pt", "optimizer_rank1.pt"]), (plain, ["optimizer.pt"])):
        folder.mkdir()
        for name in optimizer_files + ["scheduler.pt"]:
            torch.save({}, folder / name)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(CheckpointError, match=r"written by an --fsdp run of 2 processes.*--nproc_per_node=2 with --fsdp"):
        load_training_state(sharded, optimizer, scheduler, DistributedContext())
    with pytest.raises(CheckpointError, match=r"optimizer_rank1.pt is missing: this checkpoint was not written by an "
                                              r"--fsdp run of 2 processes"):
        load_training_state(plain, optimizer, scheduler, DistributedContext(rank=1, world_size=2), sharded=True)
