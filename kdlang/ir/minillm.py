"""Train settings of MiniLLM's policy-gradient objective (rollouts, clipped ratios, teacher-mixed sampling, the LM term).

:class:`MiniLLMSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
"""

from pydantic import BaseModel


class MiniLLMSettings(BaseModel):
    """Settings of MiniLLM's policy-gradient objective."""

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        return []
