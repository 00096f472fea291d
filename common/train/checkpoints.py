"""Training checkpoints: output_dir/checkpoint-<step>/, written so a crash never leaves a fake one.

A checkpoint folder holds everything needed to continue exactly where training was:
    model.safetensors (+ config.json)  the weights, keys without `module.` / `_orig_mod.`
    tokenizer files                    when the Trainer was given a tokenizer
    optimizer.pt, scheduler.pt         AdamW moments and the schedule position
                                       (--fsdp: optimizer_rank<r>.pt, each process's shard)
    rng_state.pth                      python, numpy, torch CPU and CUDA generators
                                       (rng_state_<rank>.pth, one per process, under torchrun)
    trainer_state.json                 global_step, epoch, data position, log history, best metric
    training_args.json                 the arguments, for the reader (not read back)

Atomicity: everything is written into `tmp-checkpoint-<step>/` and only then renamed to
`checkpoint-<step>/` (a rename is atomic). A folder named checkpoint-<step> is therefore always
complete; a killed run leaves at most a tmp-* folder, which the next run deletes.
Every `.pt`/`.pth` file holds only tensors, numbers, strings, lists and dicts, and is read with
torch.load(weights_only=True), which refuses anything that could run code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from common.hub.pretrained import (WEIGHTS_NAME, atomic_save_file, clean_state_dict, load_state_dict, save_torch_file,
                               torch_load_safely)
from common.train.device import DistributedContext, all_reduce, barrier, get_rng_state, set_rng_state
from common.errors import STORAGE_ERRNOS, CheckpointError
from common.train.fsdp import is_sharded, optimizer_state_like, shard_like

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.pt"


def sharded_optimizer_name(rank: int) -> str:
    """Under --fsdp each process saves its own shard of the optimizer state."""
    return f"optimizer_rank{rank}.pt"
SCHEDULER_NAME = "scheduler.pt"
ARGS_NAME = "training_args.json"
TEMP_PREFIX = "tmp-checkpoint-"


@dataclass
class TrainerState:
    """What trainer_state.json holds. The data position (epoch_index, micro_batches_in_epoch)
    is how many micro-batches of which epoch each process has consumed: with the data order a
    function of (seed, epoch), skipping that many batches resumes exactly."""
    global_step: int = 0
    epoch: float = 0.0
    epoch_index: int = 0
    micro_batches_in_epoch: int = 0
    max_steps: int = 0
    steps_per_epoch: int = 0
    train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    world_size: int = 1
    seed: int = 0
    num_input_tokens_seen: int = 0
    best_metric: Optional[float] = None
    best_model_checkpoint: Optional[str] = None
    log_history: list = field(default_factory=list)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> "TrainerState":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: cannot read the trainer state ({e}); pick another checkpoint") from None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def rng_state_name(ctx: DistributedContext) -> str:
    return f"rng_state_{ctx.rank}.pth" if ctx.is_distributed else "rng_state.pth"


def list_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoint-<step> folders of output_dir, oldest first (by step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / TRAINER_STATE_NAME).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume_path(value, output_dir) -> Optional[Path]:
    """None/False -> None; True/'latest'/'true' -> the newest checkpoint in output_dir; else that folder."""
    if value is None or value is False:
        return None
    if value is True or str(value) in ("latest", "true", "True"):
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise CheckpointError(f"--resume_from_checkpoint latest: no checkpoint-<step> folder in {output_dir}; "
                                  "train without it first, or pass the folder of a checkpoint")
        return checkpoints[-1]
    path = Path(value)
    if not (path / TRAINER_STATE_NAME).is_file():
        what = "does not exist" if not path.exists() else f"has no {TRAINER_STATE_NAME}"
        found = [p.name for p in list_checkpoints(output_dir)]
        raise CheckpointError(f"--resume_from_checkpoint {path}: the folder {what}; pass a checkpoint-<step> "
                              f"folder written by the Trainer (in {output_dir}: {found or 'none'})")
    return path


def save_model_files(model: nn.Module, folder, tokenizer=None, state_dict=None) -> None:
    """Weights (+ config) via model.save_pretrained if it has one, else model.safetensors from the
    state dict (`state_dict`, or model.state_dict()); then the tokenizer's files if it can save_pretrained."""
    os.makedirs(folder, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder, **({} if state_dict is None else {"state_dict": state_dict}))
    else:
        atomic_save_file(clean_state_dict(model.state_dict() if state_dict is None else state_dict),
                         Path(folder) / WEIGHTS_NAME)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)


def _local_shards(value):
    """An optimizer state dict with each sharded tensor replaced by this process's shard."""
    from common.train.fsdp import local_tensor

    if isinstance(value, dict):
        return {k: _local_shards(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_local_shards(v) for v in value)
    return local_tensor(value)


def save_checkpoint(output_dir, model: nn.Module, optimizer, scheduler, state: TrainerState, args,
                    ctx: DistributedContext, tokenizer=None, full_weights=None) -> Path:
    """Write checkpoint-<global_step>/ atomically (see the module docstring); every process calls this.

    An OSError (a full disk, ENOSPC) on any process removes the temporary folder, keeps the
    previous checkpoints, and raises CheckpointError on every process.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{state.global_step}"
    temp = output_dir / f"{TEMP_PREFIX}{state.global_step}"
    error: Optional[OSError] = None
    try:
        if ctx.is_main_process:
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
    except OSError as e:
        error = e
    barrier(ctx)
    try:
        if error is None:
            save_torch_file(get_rng_state(), temp / rng_state_name(ctx))
            if ctx.is_main_process:
                save_model_files(model, temp, tokenizer, full_weights)
            if full_weights is not None:  # sharded (--fsdp): each process's own shard of the AdamW state
                save_torch_file(_local_shards(optimizer.state_dict()), temp / sharded_optimizer_name(ctx.rank))
            elif ctx.is_main_process:
                save_torch_file(optimizer.state_dict(), temp / OPTIMIZER_NAME)
            if ctx.is_main_process:
                save_torch_file(scheduler.state_dict(), temp / SCHEDULER_NAME)
                (temp / ARGS_NAME).write_text(args.to_json_string() + "\n", encoding="utf-8")
                state.save(temp / TRAINER_STATE_NAME)  # last: its presence marks the folder complete
    except OSError as e:
        error = e
    everyone_ok = all_reduce(torch.tensor([float(error is None)], device=ctx.device), ctx,
                             op=torch.distributed.ReduceOp.MIN if ctx.is_distributed else None)
    if everyone_ok.item() < 1:
        if ctx.is_main_process:
            shutil.rmtree(temp, ignore_errors=True)
        previous = list_checkpoints(output_dir)
        reason = f"{error.strerror or error}" if error is not None else "another process failed to write"
        fix = STORAGE_ERRNOS.get(getattr(error, "errno", None), "check the disk (is it full?)").split(" and run")[0]
        raise CheckpointError(
            f"could not save {final}: {reason}. The temporary folder was removed; "
            + (f"the previous checkpoint {previous[-1]} is kept: {fix}, then resume with "
               f"--resume_from_checkpoint {previous[-1]}" if previous else f"no earlier checkpoint exists; {fix}")
        ) from None
    if ctx.is_main_process:
        _replace_folder(temp, final)
    barrier(ctx)
    return final


def _replace_folder(source: Path, target: Path) -> None:
    """Rename source to target; an existing target (same step saved again) is swapped out first."""
    if target.exists():
        old = target.with_name(f"old-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def remove_stale_temp_folders(output_dir) -> None:
    """Delete tmp-checkpoint-* / old-checkpoint-* left by a run killed while saving."""
    output_dir = Path(output_dir)
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            if p.is_dir() and (p.name.startswith(TEMP_PREFIX) or p.name.startswith("old-checkpoint-")):
                shutil.rmtree(p, ignore_errors=True)


def rotate_checkpoints(output_dir, save_total_limit: Optional[int], best_checkpoint: Optional[str]) -> list[Path]:
    """Delete the oldest checkpoints beyond save_total_limit; never the best one. Returns the deleted."""
    if not save_total_limit:
        return []
    checkpoints = list_checkpoints(output_dir)
    keep = set(checkpoints[-save_total_limit:])
    if best_checkpoint is not None:
        keep.add(Path(best_checkpoint))
    deleted = [p for p in checkpoints if p not in keep]
    for p in deleted:
        shutil.rmtree(p, ignore_errors=True)
    return deleted


def _strip_wrappers(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_model_weights(model: nn.Module, folder) -> None:
    """Load folder's weights into the (unwrapped) `model`, refusing a checkpoint of another model."""
    saved = {_strip_wrappers(k): v for k, v in load_state_dict(folder).items()}
    own = {_strip_wrappers(k): v for k, v in model.state_dict().items()}
    may_be_absent = set(getattr(model, "_tied_weights_keys", ()))
    missing = sorted(k for k in own if k not in saved and k not in may_be_absent)
    unexpected = sorted(k for k in saved if k not in own)
    wrong_shape = [k for k in saved if k in own and saved[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        details = []
        if wrong_shape:
            k = wrong_shape[0]
            details.append(f"{k} has shape {tuple(saved[k].shape)} in the checkpoint but {tuple(own[k].shape)} "
                           f"in the model ({len(wrong_shape)} shapes differ)")
        if missing:
            details.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
        raise CheckpointError(f"{folder} is a checkpoint of a different model: {'; '.join(details)}. "
                              "Resume with the same model configuration, or start a new output_dir")
    if is_sharded(model):  # --fsdp: every process keeps its own rows of each full tensor
        saved = shard_like(saved, own)
    model.load_state_dict(saved, strict=False)


def load_training_state(folder, optimizer, scheduler, ctx: DistributedContext, sharded: bool = False) -> TrainerState:
    """Restore optimizer and scheduler (weights_only loads) and return the TrainerState.
    sharded (--fsdp): this process's optimizer_rank<r>.pt, wrapped around the parameters' sharding."""
    folder = Path(folder)
    optimizer_name = sharded_optimizer_name(ctx.rank) if sharded else OPTIMIZER_NAME
    if sharded and not (folder / optimizer_name).is_file() and (folder / SCHEDULER_NAME).is_file():
        raise CheckpointError(f"{folder}: {optimizer_name} is missing: this checkpoint was not written by an --fsdp "
                              f"run of {ctx.world_size} processes; resume it with the number of processes and "
                              "the --fsdp setting it was trained with")
    if not sharded and not (folder / OPTIMIZER_NAME).is_file() and (folder / sharded_optimizer_name(0)).is_file():
        processes = len(list(folder.glob("optimizer_rank*.pt")))
        raise CheckpointError(f"{folder}: written by an --fsdp run of {processes} processes (one optimizer shard "
                              f"each, {sharded_optimizer_name(0)} ...); resume it under torchrun "
                              f"--nproc_per_node={processes} with --fsdp, or start a new run from its model.safetensors")
    for name in (optimizer_name, SCHEDULER_NAME):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: {name} is missing; this folder is a saved model, "
                                  f"not a training checkpoint (resume needs {optimizer_name} and scheduler.pt)")
    optimizer_state = torch_load_safely(folder / optimizer_name, map_location=ctx.device)
    scheduler_state = torch_load_safely(folder / SCHEDULER_NAME)
    try:
        if sharded:
            optimizer_state = optimizer_state_like(optimizer_state, optimizer)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{folder}/{OPTIMIZER_NAME} does not match this model's parameters ({e}); "
                              "resume with the same model and --weight_decay grouping") from None
    return TrainerState.load(folder / TRAINER_STATE_NAME)


def restore_rng_state(folder, ctx: DistributedContext) -> bool:
    """Restore this process's generators from the checkpoint; False (with a warning) if absent."""
    path = Path(folder) / rng_state_name(ctx)
    if not path.is_file():
        warnings.warn(f"{path} not found (was the checkpoint written with another number of processes?); "
                      "random numbers (dropout, masking) will not continue exactly", stacklevel=2)
        return False
    state = torch_load_safely(path)
    try:
        set_rng_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a random-number state written by the Trainer ({type(e).__name__}: {e}); "
                              "delete the file to resume without exact randomness, or pick another checkpoint") from None
    return True
