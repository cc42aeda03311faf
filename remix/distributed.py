"""Several processes under torchrun: who this process is, and the few collectives the loop needs.

`torchrun --nproc-per-node N scripts/run.py ...` starts N copies of the run; torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address (also across nodes with --nnodes, through its own
rendezvous). `init(backend)` joins them into one process group. With one process (plain `python
scripts/run.py`) nothing is initialised and every function here is a cheap no-op, so the single-process
path never touches torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank in the torchrun job (0 without torchrun), known before the process group forms."""
    return int(os.environ.get("RANK", "0"))


# How long a collective waits for the other ranks before the job fails. Rank 0 alone does slow work between
# collectives: building or converting a built-in model, writing a checkpoint's HF folder (minutes at 7B over a
# network file system). torch's default (10 minutes for NCCL) would kill such a job; torchtitan sets its own too.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def init(backend: str) -> None:
    """Joins the torchrun job's process group (`backend`: gloo on the CPU, nccl on CUDA); no-op alone.
    NCCL: each rank is bound to cuda:LOCAL_RANK before any collective (not all on cuda:0), and the group is told
    its device (`device_id`), so NCCL sets up its communicator eagerly for that GPU, as torchtitan does."""
    if launched_world_size() > 1 and not dist.is_initialized():
        options = {"timeout": COLLECTIVE_TIMEOUT}
        if backend == "nccl":
            device = torch.device("cuda", local_rank())
            torch.cuda.set_device(device)
            options["device_id"] = device
        dist.init_process_group(backend, **options)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 writes logs, metrics, the run directory's files and the HF folder."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective buffers live: NCCL needs CUDA tensors, gloo host tensors."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce of a host or device tensor (sum, min or max); returns it."""
    if active():
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        moved = t.to(_comm_device())
        dist.all_reduce(moved, op=ops[op])
        if moved is not t:
            t.copy_(moved)
    return t


def max_int(value: int) -> int:
    """The largest of every rank's `value`."""
    if not active():
        return value
    return int(all_reduce(torch.tensor([value], dtype=torch.int64), "max")[0])


def sum_floats(values: dict[str, float]) -> dict[str, float]:
    """Sums each named number across ranks in one collective (float64, so counts stay exact)."""
    if not active() or not values:
        return dict(values)
    keys = sorted(values)
    t = all_reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return dict(zip(keys, t.tolist()))


def same_on_every_rank(value: int, what: str) -> None:
    """Raises on every rank if `value` differs between ranks: a rank with fewer micro-batches would
    leave the others waiting forever in a collective, so the mismatch must stop the job instead."""
    if not active():
        return
    t = torch.tensor([value, -value], dtype=torch.int64)
    all_reduce(t, "max")
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(f"{what} differs between ranks (from {-int(t[1])} to {int(t[0])}); every rank must "
                           "process the same number of sequences")


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in one process)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T], errors: tuple[type[BaseException], ...] = (ValueError,)) -> T:
    """Runs `fn` on rank 0 only and gives its result to every rank. An exception of `errors` on rank 0 is
    raised on every rank (same type, same message), so a refused run stops the whole job, not rank 0 alone."""
    if not active():
        return fn()
    outcome: Any
    if is_main():
        try:
            outcome = ("ok", fn())
        except errors as e:
            outcome = ("error", type(e), str(e))
    else:
        outcome = None
    outcome = broadcast_object(outcome)
    if outcome[0] == "error":
        raise outcome[1](outcome[2])
    return outcome[1]
