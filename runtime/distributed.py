"""The run's processes: several, when a launcher started them; one otherwise.

A run-level module (beside the executor and the stage context, beneath the stages and the
training machinery): the executor sets the group up once per process, a stage reaches it
through its context (``ctx.dist``), and the CLI leaves it at the end of the run.

``torchrun`` and ``accelerate launch`` (or ``kdlang run --launcher ...``) set ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the process group is initialised once per
process (Gloo for CPU tensors, plus NCCL for CUDA tensors when the run uses CUDA) and each process
uses GPU ``LOCAL_RANK``. Without them nothing is initialised and every collective is a no-op, so a
single process needs no launcher (and imports no torch for it).

Two uses:

- **The executor** walks the plan on every rank and coordinates with :meth:`Dist.wait`,
  :meth:`Dist.gather` and :meth:`Dist.broadcast`: small Python objects over a Gloo group of its
  own whose timeout (:data:`WAIT_TIMEOUT`) allows one rank to wait while another works alone
  for hours (a dataset read by rank 0, an uneven share of teacher calls).
- **Training** (data parallel, ``strategy = "ddp"``): each process reads its share of every
  step's rows and computes its terms divided by the *global* counts; the gradients are then
  summed over processes by torch's ``DistributedDataParallel`` (:func:`replicate`: bucketed
  all-reduces overlapping the last micro-batch's backward, the others under ``no_sync``), which
  gives exactly the single-process gradient of the whole batch. Every process starts from the same
  weights and applies the same update, so they stay equal. (``strategy = "fsdp"``:
  :mod:`kdlang.runtime.train.fsdp`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WAIT_TIMEOUT = timedelta(hours=24)
"""How long a rank waits for the others at a coordination point of the executor."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    _group: Any = field(default=None, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    # -- training collectives (the default group) ------------------------------------------

    def barrier(self) -> None:
        if self.active:
            import torch

            torch.distributed.barrier()

    def sum(self, value: float | int, device: torch.device) -> float:
        """The sum of ``value`` over processes."""
        if not self.active:
            return value
        import torch

        tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return tensor.item()

    def sum_values(self, values: dict[str, Any], device: torch.device) -> dict[str, float]:
        """Each value (a number, or a 0-d tensor on ``device``) summed over processes, in
        float64: one all-reduce and one copy to the host for all of them."""
        if not values:
            return {}
        import torch

        stacked = torch.stack(
            [torch.as_tensor(v, dtype=torch.float64, device=device) for v in values.values()]
        )
        if self.active:
            torch.distributed.all_reduce(stacked)
        return dict(zip(values, stacked.tolist(), strict=True))

    def most(self, value: int, device: torch.device) -> int:
        """The largest ``value`` over processes."""
        if not self.active:
            return value
        import torch

        tensor = torch.tensor(int(value), dtype=torch.int64, device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return int(tensor.item())

    def sum_gradients(self, params: list[torch.nn.Parameter], bucket_bytes: int = 2**28) -> None:
        """Sum every parameter's gradient over processes, a flat bucket (one dtype, at most
        ``bucket_bytes``) per all-reduce."""
        if not self.active:
            return
        import torch

        grads: list[torch.Tensor] = []
        for p in params:  # a process that saw no rows this step still takes part
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        bucket: list[torch.Tensor] = []
        for grad in grads:
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

    # -- coordination of the executor (a Gloo group with a long timeout) --------------------

    def wait(self) -> None:
        """Wait until every rank arrives here."""
        if self.active:
            self.gather(None)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.active:
            return [value]
        import torch

        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value, group=self._coordination())
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (what the others pass is ignored)."""
        if not self.active:
            return value
        import torch

        holder = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(holder, src=0, group=self._coordination())
        return holder[0]

    def _coordination(self):
        if self._group is None:
            import torch

            self._group = torch.distributed.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        return self._group


_CURRENT: Dist | None = None


def from_env(device: str = "auto") -> Dist:
    """The process group described by the launcher's environment (initialised once per
    process; later calls return the same :class:`Dist`). ``device``: the run's ``--device``;
    CUDA collectives (NCCL) are set up unless it is ``cpu``."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        _CURRENT = Dist()
        return _CURRENT
    import torch

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    _CURRENT = Dist(rank=rank, world=world, local_rank=local)
    return _CURRENT


def shutdown() -> None:
    """Leave the process group: a barrier, then its destruction, so that no rank exits while
    another still talks to it and no communicator thread outlives the interpreter's teardown
    (which can abort a finished process). A no-op with one process."""
    global _CURRENT
    current, _CURRENT = _CURRENT, None
    if current is None or not current.active:
        return
    import torch

    if torch.distributed.is_initialized():
        current.wait()
        torch.distributed.destroy_process_group()


def replicate(module: torch.nn.Module, device: torch.device, *, unused: bool = False):
    """``module`` in torch's ``DistributedDataParallel`` (``strategy = "ddp"``): its gradients
    are summed over the processes by bucketed all-reduces that start while the backward pass
    still runs (the ``no_sync`` micro-batches of a step accumulate locally; the last one's
    backward reduces). Summed, not averaged (:func:`_sum_buckets`): each process's terms are
    already divided by the step's global counts. ``unused``: some parameters may get no
    gradient in a backward pass (DDP then looks for them after each forward)."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,  # buffers (rotary tables) are equal and never trained
        find_unused_parameters=unused,
        gradient_as_bucket_view=True,
    )
    wrapped.register_comm_hook(None, _sum_buckets)
    return wrapped


def _sum_buckets(state, bucket):
    """A DDP communication hook: the sum of a gradient bucket over processes."""
    import torch

    work = torch.distributed.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda done: done.value()[0])


def _all_reduce(grads: list[torch.Tensor]) -> None:
    import torch

    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
