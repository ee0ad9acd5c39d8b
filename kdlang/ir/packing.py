"""Train settings of how rows are laid out in micro-batches (padding-free packing, token budgets).

:class:`PackingSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
"""

from pydantic import BaseModel


class PackingSettings(BaseModel):
    """Settings of how rows are laid out in micro-batches."""

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        return []
