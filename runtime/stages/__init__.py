"""Stage operators, one module each, named as the DSL word: ``STAGES[op](node, ctx, out)``
writes the node's output into ``out`` and returns its manifest fields; ``restorer(op)`` puts a
cached output back where it also lives outside the cache (an export)."""

from __future__ import annotations

from importlib import import_module

_MODULES = {
    "dataset": "dataset",
    "label": "label",
    "expand": "expand",
    "curate": "curate",
    "judge": "judge",
    "pairs": "pairs",
    "filter": "filter",
    "teacher_logits": "teacher_logits",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
}


class _Registry(dict):
    """Imports an operator's module the first time it is needed (torch only when used)."""

    def __missing__(self, op: str):
        if op not in _MODULES:
            raise KeyError(f"no runtime for operator {op!r}")
        runner = import_module(f".{_MODULES[op]}", __package__).run
        self[op] = runner
        return runner


STAGES = _Registry()

RESTORES = frozenset({"export"})
"""Operators whose output also lives outside the cache; their module's
``restore(node, ctx, artifact)`` puts it back when a cached node's copy is missing or changed."""


def restorer(op: str):
    """The ``restore`` of an operator of :data:`RESTORES`; None for every other operator (and
    nothing imported for them)."""
    if op not in RESTORES:
        return None
    return import_module(f".{_MODULES[op]}", __package__).restore
