"""Train settings of where a run reports and what it keeps and starts from (trackers, kept checkpoints, initial weights, how the student is loaded).

:class:`TrackingSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
"""

from pydantic import BaseModel


class TrackingSettings(BaseModel):
    """Settings of where a run reports and what it keeps and starts from."""

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        return []
