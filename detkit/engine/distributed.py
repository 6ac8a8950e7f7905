"""Multi-process training through torchrun: the process group, who is who, gathering results.

``detkit train`` notices torchrun by its environment (RANK, WORLD_SIZE, LOCAL_RANK) and
joins the process group: NCCL when the processes have GPUs, gloo on CPUs. A single process
(plain ``detkit train``) is a world of one, and every function here works there too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    joined_here: bool = False  # this init() call created the process group, so its caller leaves it

    @property
    def main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0


def init(device: str) -> World:
    """Join torchrun's process group if this process was started by torchrun. A process joins
    once: a caller that finds the group already joined (``detkit compare`` trains several
    runs in one process) uses it, and leaves it to whoever joined it (see ``shutdown``)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return World()
    joining = not dist.is_initialized()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
                  joined_here=joining)
    if joining:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend=backend)
    return world


def current() -> World:
    """The world this process is in now: the process group it joined (``init``), or a world
    of one. Unlike ``init``, never joins."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def gather(obj, world: World) -> list:
    """Every process's ``obj``, in rank order (on every process)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def everyone(flag: bool, world: World) -> bool:
    """True in every process if ``flag`` is true in every process (an all-reduce of one number)."""
    if world.size == 1:
        return flag
    backend = dist.get_backend()
    value = torch.tensor([float(flag)], device=f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group if ``world``'s init() joined it. (Rejoining in the same process
    after leaving is unreliable with gloo: the second rendezvous can fail or hang.)"""
    if world.joined_here and dist.is_initialized():
        dist.destroy_process_group()


def sync_buffers(model: torch.nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every process. DDP broadcasts them at the
    start of each training forward, so after the last step each process holds statistics
    updated by its own batch; evaluating (or saving) needs one model everywhere."""
    if world.size == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
