"""Stage operators, one module each, named as the DSL word: ``STAGES[op](node, ctx, out)``
writes the node's output into ``out`` and returns its manifest fields; ``restorer(decl)`` puts a
cached output back where it also lives outside the cache (an export).

Which operators exist is the IR's to say (:mod:`kdlang.ir.descriptor`): an operator ``op`` runs
``kdlang.runtime.stages.<op>.run``, and one whose descriptor says ``restores`` also has
``restore(node, ctx, artifact)``."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdlang.ir.descriptor import Operator
    from kdlang.plan import PlanNode

    from ..context import StageContext

Runner = Callable[["PlanNode", "StageContext", Path], "dict[str, Any] | None"]
"""An operator's ``run(node, ctx, out)``: writes the node's output into ``out`` and returns its
manifest fields."""
Restorer = Callable[["PlanNode", "StageContext", Path], "str | None"]
"""An operator's ``restore(node, ctx, artifact)``: puts a cached output back outside the cache;
returns what it found there (None when nothing was written)."""


class _Registry(dict[str, Runner]):
    """Imports an operator's module the first time it is needed (torch only when used)."""

    def __missing__(self, op: str) -> Runner:
        try:
            module = import_module(f".{op}", __package__)
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{op}":
                raise
            raise KeyError(f"no runtime for operator {op!r}") from None
        self[op] = module.run
        return module.run


STAGES = _Registry()


def restorer(decl: Operator) -> Restorer | None:
    """The ``restore`` of an operator whose descriptor says ``restores`` (its output also lives
    outside the cache); None for every other operator (and nothing imported for them)."""
    if not decl.restores:
        return None
    return import_module(f".{decl.operator}", __package__).restore
