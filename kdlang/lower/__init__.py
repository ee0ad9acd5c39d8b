"""Lowering: the syntax tree of a recipe file into its validated IR (:class:`kdlang.ir.Recipe`).

Settings are lowered to neutral values and validated by each declaration's pydantic model
(:mod:`.settings`); declarations, losses, filter rules and metrics are built on that
(:mod:`.declarations`); expressions are lowered by :mod:`kdlang.expr.lower`. The package sits
above both the IR's node classes and the expression language, so neither imports it.
"""

from kdlang.lower.declarations import lower

__all__ = ["lower"]
