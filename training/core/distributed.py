"""Data-parallel training: one run on N processes, launched with torchrun.

`python -m training train --nproc N ...` starts ``torch.distributed.run`` (torchrun) with N
copies of the same command on this machine (a rendezvous on localhost); each copy finds the
process group in its environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and `train_dpo`
splits the work:

- reference (and held-out) log-probs are computed once: each rank computes a contiguous shard
  of the pairs and the shards are all-gathered, so every rank holds them all;
- every rank draws the same global batches (same seed), and takes its contiguous shard of each;
  its loss is scaled by ``shard size / global batch size`` and the gradients are summed across
  ranks (one all-reduce over a flat bucket, as DDP does), so that the update equals the update
  of one process on the whole global batch, whatever the batch and shard sizes (a rank whose
  shard is empty contributes zero gradients);
- rank 0 alone writes the version (atomically: a temporary directory, then a rename) while the
  others wait at a barrier.

The gradients are reduced after the backward pass rather than by the ``DistributedDataParallel``
wrapper: the chunked log-prob head calls the model's sub-modules directly, which the wrapper's
hooks do not see, and a shard may be empty. Backends: gloo on CPU, nccl on CUDA, with one GPU per
rank (``cuda:LOCAL_RANK``). Sharding the weights themselves (FSDP), for models that do not fit
one device, is not supported yet: every rank holds a whole copy of the model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def launched() -> bool:
    """Whether this process was started by torchrun as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``n`` items.

    The first ``n % world`` ranks take one item more; a rank gets nothing when ``n < world``.
    """
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class Parallel:
    """This process's place in the run: rank ``rank`` of ``world`` (1 and 0 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: its own GPU when the run is on CUDA."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, items: Sequence[T]) -> list[T]:
        start, stop = shard_bounds(len(items), self.rank, self.world)
        return list(items[start:stop])

    def sharded_map(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        """``fn(items)`` computed in shards across the ranks; every rank gets all results."""
        if not self.active:
            return fn(list(items))
        part = self.shard(items)
        mine = fn(part) if part else []
        return [r for results in self.gather(mine) for r in results]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def broadcast_parameters(self, params: Sequence[torch.Tensor]) -> None:
        """Give every rank rank 0's values of ``params``."""
        if not self.active:
            return
        with torch.no_grad():
            for p in params:
                torch.distributed.broadcast(p.data, src=0)

    def sum_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over the ranks (missing ones count as zero)."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        for p, g in zip(params, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)

    def sum_scalar(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a new tensor)."""
        if not self.active:
            return value
        total = value.detach().clone()
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM)
        return total

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def setup(device: torch.device) -> Parallel:
    """Join the process group torchrun describes in the environment, or run alone.

    The backend is nccl when ``device`` is CUDA, gloo otherwise. Idempotent.
    """
    if not launched():
        return Parallel()
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend=backend)
    return Parallel(rank=rank, world=world, local_rank=local_rank)


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def torchrun_command(nproc: int, module_args: Sequence[str]) -> list[str]:
    """The command that runs ``python -m training <module_args>`` on ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "training",
        *module_args,
    ]


def launch(nproc: int, module_args: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    """Start ``python -m training <module_args>`` on ``nproc`` processes (torchrun)."""
    return subprocess.Popen(torchrun_command(nproc, module_args), text=True, **popen)
