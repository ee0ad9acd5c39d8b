"""Train settings of evaluation during training (a dev set every `eval_every` steps), the adaptive off-policy schedule and sequence-level KD.

:class:`EvaluationSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
"""

from pydantic import BaseModel


class EvaluationSettings(BaseModel):
    """Settings of evaluation during training."""

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        return []
