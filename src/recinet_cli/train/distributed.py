"""One place for process groups: torchrun, ``--gpus N`` (NCCL) and ``--nprocs N`` (gloo, CPU).

* Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, any number of
  nodes) the environment is used as is.
* ``--gpus N`` / ``--nprocs N`` on one machine: :func:`launch` spawns N processes with a free
  loopback port; each calls :func:`init_distributed`.
* One process: no process group; the helpers below degrade to no-ops.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from recinet_cli.errors import RecinetError

__all__ = [
    "DistInfo", "all_reduce_sum", "barrier", "broadcast_object", "init_distributed", "launch", "sync_buffers",
    "under_torchrun",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job.

    Attributes:
        rank, world_size, local_rank: as torchrun defines them.
        device: the torch device this rank computes on.
        backend: ``nccl``, ``gloo`` or ``None`` (single process).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    """Whether torchrun (or a compatible launcher) set up this process."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def check_gpus(n: int) -> None:
    """Fail clearly when ``--gpus n`` cannot be honoured."""
    if n <= 0:
        return
    if not torch.cuda.is_available():
        raise RecinetError(
            f"--gpus {n}: CUDA is not available (torch {torch.__version__} "
            f"{'is a CPU build' if torch.version.cuda is None else 'sees no GPU'}); "
            "drop --gpus to train on the CPU, or use --nprocs N for CPU processes"
        )
    have = torch.cuda.device_count()
    if have < n:
        raise RecinetError(f"--gpus {n}: only {have} CUDA device(s) visible")


def pick_device(requested: str, local_rank: int, gpus: int) -> torch.device:
    """The device for this rank: ``cuda:LOCAL_RANK`` when GPUs are used, else the CPU."""
    use_cuda = requested == "cuda" or gpus > 0 or (requested == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RecinetError("--device cuda: CUDA is not available in this torch build or machine")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto", gpus: int = 0) -> DistInfo:
    """Join the process group described by the environment (or run alone).

    NCCL when this rank computes on CUDA, gloo on CPU. Called once per process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank, gpus)
    backend = None
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank, world, local_rank, device, backend)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(info: DistInfo, values: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` over ranks (in place on a copy; float64 on the rank's device)."""
    if not info.distributed:
        return values
    out = values.detach().to(info.device, torch.float64).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the early-stop decision)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.backend == "nccl" else None)
    return box[0]


def sync_buffers(info: DistInfo, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics, ...) to every rank.

    DDP broadcasts buffers at the start of each training forward, so after the last step of
    an epoch the other ranks hold statistics one step old; evaluating with them would score
    a model that differs from the one rank 0 checkpoints.
    """
    if not info.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def free_port() -> int:
    """A free TCP port on loopback for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(local_rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(world),
    )
    fn(*args)


def launch(world: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``world`` fresh processes on this machine, joined as one group.

    ``fn`` must be a module-level function (it is pickled); an exception in any rank stops
    the job and is re-raised here (a :class:`RecinetError` keeps its one-line message).
    """
    import torch.multiprocessing as tmp

    port = free_port()
    try:
        tmp.spawn(_entry, args=(world, port, fn, args), nprocs=world, join=True)
    except tmp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        if "RecinetError" in last or "PluginError" in last or "TrainingStopped" in last:
            raise RecinetError(last.split(": ", 1)[-1]) from None
        raise
