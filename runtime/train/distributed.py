"""Several processes (data parallel), when a launcher started them; one process otherwise.

``torchrun`` and ``accelerate launch`` set ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with
``WORLD_SIZE > 1`` the process group is initialised (NCCL on CUDA, Gloo on CPU) and each process
uses GPU ``LOCAL_RANK``. Without them nothing is initialised and every collective is a no-op, so a
single process needs no launcher.

Each process reads its share of every step's rows and computes its terms divided by the
*global* counts; the gradients are then summed over processes (one all-reduce per optimizer step,
after the micro-batches), which gives exactly the single-process gradient of the whole batch.
Every process starts from the same weights and applies the same update, so they stay equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def sum(self, value: float | int, device: torch.device) -> float:
        """The sum of ``value`` over processes."""
        if not self.active:
            return value
        tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.item()

    def sum_gradients(self, params: list[torch.nn.Parameter], bucket_bytes: int = 2**28) -> None:
        """Sum every parameter's gradient over processes, a flat bucket (one dtype, at most
        ``bucket_bytes``) per all-reduce."""
        if not self.active:
            return
        for p in params:  # a process that saw no rows this step still takes part
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        for grad in [p.grad for p in params]:
            size = sum(g.numel() * g.element_size() for g in bucket)
            if bucket and (grad.dtype != bucket[0].dtype or size >= bucket_bytes):
                _all_reduce(bucket)
                bucket = []
            bucket.append(grad)
        if bucket:
            _all_reduce(bucket)

    def shard(self, items: list) -> list:
        """This process's share of a step's items (every ``world``-th, from ``rank``)."""
        return items[self.rank :: self.world] if self.active else items


def from_env() -> Dist:
    """The process group described by the launcher's environment (initialised once)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local)


def _all_reduce(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
