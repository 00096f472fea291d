"""Sharded data parallel (FSDP, Zhao et al. 2023) through torch.distributed's `fully_shard`: `--fsdp`.

DDP keeps a whole copy of the weights, gradients and AdamW state in every one of the W processes.
fully_shard splits each parameter along its first axis into W shards; process r keeps shard r of
the weights, of their gradients and of the AdamW state (about 1/W of each, 16 |theta| / W bytes
instead of 16 |theta|), and before each block runs it gathers that block's full weights
(all-gather), dropping them again after; in the backward it reduce-scatters the gradients, so
each process receives the averaged gradient of its own shard. The updates are DDP's: same
gradients, same AdamW step, just computed shard by shard (tests/test_fsdp.py: equal to 1e-5).

What it trades: memory for communication (an all-gather of every block in the forward and
again in the backward, a reduce-scatter instead of an all-reduce). Each member of every
nn.ModuleList (the blocks) is one unit, gathered alone; the rest (embeddings, final norm, head)
is the root unit. Saving gathers the full tensors on every process and process 0 writes them;
each process writes its own shard of the optimizer state (optimizer_rank<r>.pt). Resuming reads the
full weights on every process and keeps its rows (shard_like), and wraps its saved optimizer shard
around the same sharding again (optimizer_state_like): the run continues as if never stopped, with
the same number of processes (tests/test_fsdp.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from common.errors import ConfigError


def shard_model(model: nn.Module) -> nn.Module:
    """fully_shard every block (each member of every nn.ModuleList), then the whole model, in place."""
    from torch.distributed.fsdp import fully_shard

    if is_sharded(model):
        return model
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                if any(True for _ in block.parameters()):
                    fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights on every process (a collective: every process must call it)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
            for k, v in model.state_dict().items()}


def local_tensor(value):
    """A DTensor's local shard as a plain tensor (what this process holds); anything else as is."""
    from torch.distributed.tensor import DTensor

    return value.to_local() if isinstance(value, DTensor) else value


def full_tensor(value):
    """A DTensor gathered whole (a collective); anything else as is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def check_fsdp_context(is_distributed: bool) -> None:
    if not is_distributed:
        raise ConfigError("--fsdp shards the weights over the processes of torchrun; launch with "
                          "`torchrun --nproc_per_node=N -m ...` (one process has nothing to shard with)")


def shard_like(full: dict, own: dict) -> dict:
    """full: whole tensors by key (a saved model); own: the sharded model's state_dict. Each tensor
    whose own value is a DTensor becomes one sharded the same way (distribute_tensor keeps this
    process's rows; a collective: every process calls it in the same order); the others stay."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    return {k: (distribute_tensor(v.to(own[k].dtype), own[k].device_mesh, own[k].placements)
                if isinstance(own.get(k), DTensor) else v) for k, v in full.items()}


def optimizer_state_like(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """An optimizer state_dict whose tensors are this process's plain shards (as saved under --fsdp)
    with each per-parameter tensor shaped like its parameter's shard wrapped as a DTensor again, sharded
    like that parameter (scalars such as AdamW's step stay plain). Raises ValueError when a shard's
    shape differs from the parameter's shard (another number of processes, or another model)."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, values in saved["state"].items():
        param = params[int(index)]
        state[index] = dict(values)
        if not isinstance(param, DTensor):
            continue
        local_shape = param.to_local().shape
        for key, value in values.items():
            if not torch.is_tensor(value) or value.dim() == 0:
                continue
            if value.shape != local_shape:
                raise ValueError(f"{key} of parameter {index} has shape {tuple(value.shape)} in the checkpoint, "
                                 f"this process's shard is {tuple(local_shape)}")
            state[index][key] = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                                   run_check=False, shape=param.shape, stride=param.stride())
    return {**saved, "state": state}
