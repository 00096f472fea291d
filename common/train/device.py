"""Where training runs: the device, the distributed process group, and the random number generators.

Device: CUDA if present, else Apple MPS, else the CPU; `use_cpu=True` forces the CPU.
Under torchrun (env RANK, WORLD_SIZE, LOCAL_RANK) each process joins one process group
(backend nccl on CUDA, gloo on CPU) and uses GPU number LOCAL_RANK.

Random state: a run is reproducible when python's `random`, numpy and torch (CPU and every CUDA
device) are seeded; a resumed run continues exactly when all of them are saved and restored.
They are saved as plain lists and tensors so `torch.load(weights_only=True)` reads them.
"""
from __future__ import annotations

import atexit
import os
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """This process's place in a (possibly one-process) run."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0


def pick_device(use_cpu: bool = False, local_rank: int = 0) -> torch.device:
    """CUDA (GPU `local_rank`), else Apple MPS, else CPU; use_cpu forces the CPU."""
    if use_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_distributed(use_cpu: bool = False) -> DistributedContext:
    """Join the torchrun process group if the environment describes one (idempotent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(use_cpu, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        atexit.register(_destroy_process_group)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, ctx: DistributedContext, op=None) -> torch.Tensor:
    """Sum (or `op`) a tensor over all processes, in place; a no-op for one process."""
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor


def set_seed(seed: int) -> None:
    """Seed python's random, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """Every generator's state, as lists and uint8/int64 tensors (weights_only-loadable)."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what get_rng_state returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def autocast_context(device: torch.device, bf16: bool):
    """torch.autocast(bfloat16) on the device when bf16 is on; a disabled autocast otherwise."""
    device_type = device.type if device.type in ("cpu", "cuda", "mps") else "cpu"
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16)


def move_to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch to `device` (other values pass through)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def bf16_supported(device: torch.device) -> Optional[str]:
    """None if bfloat16 autocast works on `device`, else the reason (for a clear error)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"the GPU {torch.cuda.get_device_name(device)} has no bfloat16 support"
    return None
