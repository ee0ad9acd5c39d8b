"""Compiled model bodies: regional compilation, one ``torch.compile`` region per decoder layer.

``compile = true`` (and ``auto`` on CUDA) compiles the student's and the online teacher's
decoder layers in place (``nn.Module.compile``), each layer a region, rather than the whole model:

- **Compile time stays short.** The layers of a model are one class with one signature, so
  dynamo traces the first layer and every other layer reuses its graph (the same code object,
  guarded on the layer's parameters); a whole-model compile traces all of them as one graph.
  The compile time is the first step's extra time (timings.jsonl; benchmarks/train_e2e.py
  reports it).
- **Everything around the layers keeps working.** FSDP2 shards by decoder layer
  (:mod:`.fsdp`) and transformers' activation checkpointing wraps the layer call; both act on
  the layer modules from outside the compiled region, so neither needs a graph break inside it.
  The embedding, the final norm and the head stay eager: the head and the distillation loss
  are kdlang's fused Triton kernels already (:mod:`kdlang.runtime.losses.fused_linear`).

What a compiled layer gains is inductor's fusion of the layer's elementwise work (RMSNorm,
RoPE, SwiGLU, the residual adds) around the matmuls and attention, which eager runs as separate
kernels. On CPU (tests, the quickstart) ``auto`` compiles nothing: inductor's CPU code needs a
C++ toolchain, and the tiny models gain nothing from it.
"""

from __future__ import annotations

from torch import nn

from .models import base_model


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model: the modules of the classes it names in
    ``_no_split_modules`` (its decoder layers), outermost first."""
    base = base_model(model)
    kinds = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in base.modules() if type(m).__name__ in kinds]


def compile_layers(model: nn.Module, *, mode: str | None = None) -> int:
    """Compile every decoder layer of ``model`` in place; returns how many were compiled (0 when
    the model names no decoder layers: it then runs eagerly, as before)."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(mode=mode, dynamic=None)
    return len(layers)


def wants_compile(setting: str, device_type: str) -> bool:
    """Whether a train's ``compile`` setting compiles on this device: ``true`` always, ``false``
    never, ``auto`` on CUDA only."""
    if setting == "auto":
        return device_type == "cuda"
    return setting == "true"
