"""``strategy = "fsdp"``: the student sharded over the processes with FSDP2.

Under several processes (:mod:`.distributed`) the student's parameters, gradients and AdamW
state are sharded over the ranks (``torch.distributed.fsdp.fully_shard``): every decoder layer
(the classes the model lists in ``_no_split_modules``) is one unit, gathered for its forward
and backward and freed after; the root unit holds the rest — embeddings, final norm and lm_head
(tied embeddings stay one parameter there). The teacher is not sharded: every rank holds a
replica in eval mode, as with ``ddp``. Hidden-state projections, small, are replicated and
all-reduced like ``ddp``'s gradients.

What changes against ``ddp``, and why the step stays the same:

- gradients are reduce-scattered with a divide factor of 1 (a sum): each rank's terms are
  already divided by the step's global counts, as with ``ddp``;
- the fused-linear path runs the student's lm_head outside ``forward`` (on the hidden states,
  chunk by chunk). :func:`shard` registers :meth:`head_terms` as a forward method of the root
  unit, so its parameters are gathered for that call and for its backward, and their gradients
  reduced like any other;
- every rank must run the same number of forward and backward passes per step: a rank with
  fewer rows than another runs filler micro-batches (weighted 0), and on-policy samples are
  drawn for all the step's rows on every rank (the same decoding on all of them), each rank then
  keeping its share;
- checkpoints and the trained model are full state dicts gathered to rank 0
  (``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict`` and
  ``cpu_offload``), the format ``ddp`` writes, so a checkpoint resumes under either strategy and
  any number of processes.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import RunError
from .models import base_model

HEAD_METHOD = "kdlang_head_terms"


def shard(student: nn.Module, device: torch.device, world: int) -> None:
    """Shard ``student`` in place: each decoder layer a unit, then the root (the transformers
    model itself, inside a peft wrapper when there is one)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    base = base_model(student)
    kinds = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in kinds]
    if not layers:
        raise RunError(
            f'strategy = "fsdp" shards a model by its decoder layers, but {type(base).__name__} '
            "names none (`_no_split_modules`); use the default strategy"
        )
    mesh = init_device_mesh(device.type, (world,))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    base.kdlang_head_terms = types.MethodType(_head_terms, base)
    fully_shard(base, mesh=mesh)
    for module in base.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # a sum: the terms are global means already
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM (Gloo has no PreMulSum)
    register_fsdp_forward_method(base, HEAD_METHOD)
    # The model's outputs are slices of its logits and states; nothing here changes them in
    # place, which is what this warning is about.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def _head_terms(self, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    """``fn(*args, **kwargs)``: a term computed with the student's lm_head on hidden states.
    Registered as a forward method of the root unit, so the head's parameters are gathered."""
    return fn(*args, **kwargs)


def head_call(student: nn.Module) -> Callable[..., torch.Tensor] | None:
    """How the objective runs lm_head terms outside ``forward``: through the sharded root's
    forward method, or ``None`` (call them directly) for an unsharded student."""
    return base_model(student).__dict__.get(HEAD_METHOD)


def _options(**settings: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**settings)


def full_state(modules: nn.Module, optimizer: torch.optim.Optimizer | None, names: set[str]):
    """``(weights, optimizer state)``, full and on CPU, on rank 0 (empty elsewhere): the
    trainable parameters ``names`` of ``modules`` by qualified name, and the optimizer's state
    keyed by the same names. Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = _options(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(modules, options=options)
    weights = {name: tensor for name, tensor in weights.items() if name in names}
    state = None
    if optimizer is not None:
        state = get_optimizer_state_dict(modules, optimizer, options=options)
    return weights, state


def load_full_state(
    modules: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    weights: dict[str, torch.Tensor],
    state: dict | None,
    names: set[str],
    main: bool,
) -> None:
    """Load what :func:`full_state` gave (read on rank 0 only: it is broadcast from there) into
    sharded ``modules`` and their ``optimizer``. Collective."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    if main and set(weights) != names:
        missing = sorted(set(weights) ^ names)[:3]
        raise RunError(f"the checkpoint does not match the model (e.g. {missing}); delete it")
    options = _options(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(modules, weights if main else {}, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(modules, optimizer, state if main else {}, options=options)


def clip(params: list[nn.Parameter], limit: float | None) -> float:
    """The global gradient norm of sharded (DTensor) and replicated gradients together, and
    clipping to ``limit`` as ``torch.nn.utils.clip_grad_norm_`` does it. One all-reduce: the
    squares of every local shard, summed."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sharded = [g.to_local() for g in grads if isinstance(g, DTensor)]
    plain = [g for g in grads if not isinstance(g, DTensor)]
    device = (sharded or plain)[0].device
    squares = torch.zeros((), dtype=torch.float64, device=device)
    for grad in sharded:
        squares += grad.detach().double().pow(2).sum()
    torch.distributed.all_reduce(squares)
    for grad in plain:
        squares += grad.detach().double().pow(2).sum()
    total = float(squares.sqrt())
    if limit is not None:
        factor = min(limit / (total + 1e-6), 1.0)
        if factor < 1.0:
            for grad in grads:
                grad.detach().mul_(factor)
    return total
