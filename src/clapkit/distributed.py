"""The process group ``torchrun`` describes, for training and evaluation alike.

Evaluation splits its work by *batches*: batch ``b`` of a set (in item order, the
single-process batches) goes to process ``b % world``; each process embeds its batches
and :func:`gather_batches` puts every batch back in order on every process. Each batch is
the one a single process would have run, so the result is the single-process result.
"""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (env vars); (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
        # without this, gloo's worker threads can outlive the interpreter's teardown and
        # abort the process after its work is done ("terminate called without an active
        # exception", SIGABRT, seen once in CI on `train cse` under torchrun)
        atexit.register(shutdown_distributed)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shutdown_distributed() -> None:
    """Leave the process group (PyTorch asks for this before a process exits); a no-op
    outside one. Registered at exit by :func:`init_distributed`."""
    if not dist.is_initialized():
        return
    if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
        # every process done with the group before any leaves it: a process that left while
        # another's gloo threads still talked to it aborted that one (SIGABRT after the work was
        # done, about one torchrun run in ten on CI's 2 cores); bounded, so a failed run still ends
        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
        except RuntimeError:
            pass  # a process failed or has gone: leave anyway
    dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """(rank, world) of the joined group, (0, 1) outside one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def my_batches(n_batches: int) -> list[int]:
    """The batch numbers this process runs (all of them outside a group)."""
    rank, world = rank_world()
    return list(range(rank, n_batches, world))


def gather_batches(mine: dict[int, object], n_batches: int) -> list:
    """Every process's ``{batch number: result}``, as one list in batch order, on every
    process (the results are pickled: numpy arrays or dicts of them)."""
    _, world = rank_world()
    if world == 1:
        return [mine[b] for b in range(n_batches)]
    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)
    merged = {b: r for part in everyone for b, r in part.items()}
    return [merged[b] for b in range(n_batches)]
