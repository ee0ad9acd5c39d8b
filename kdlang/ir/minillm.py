"""Train settings of MiniLLM's policy-gradient objective (rollouts, clipped ratios, teacher-mixed sampling, the LM term).

:class:`MiniLLMSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).
They act on a train with a ``loss minillm`` line (:class:`kdlang.ir.losses.MiniLLMLoss`, the
options of the term itself); on any other train they are errors (``kdlang check``, KD0352).
"""

from pydantic import BaseModel, Field

from kdlang.ir.values import ColumnName, RefField

LM_SETTINGS = ("lm_weight", "lm_text")
"""The settings of the language-modelling term, which need its data (``lm_data``)."""

MINILLM_SETTINGS = ("teacher_mix", "ppo_epochs", "lm_data", *LM_SETTINGS)
"""Every train setting that only a train with ``loss minillm`` uses."""


class MiniLLMSettings(BaseModel):
    """Settings of MiniLLM's policy-gradient objective."""

    teacher_mix: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="MiniLLM's teacher-mixed sampling: rollouts are drawn token by token from "
        "(1 - a) * student + a * teacher, and each token's policy-gradient ratio is weighted by "
        "student / mixture (0: the student's own samples).",
    )
    ppo_epochs: int = Field(
        4,
        ge=1,
        description="Optimizer steps (clipped passes) taken on each rollout batch before the "
        "next one is sampled.",
    )
    lm_data: RefField | None = Field(
        None,
        description="MiniLLM's pre-training term: a dataset or stage whose text the student "
        "keeps modelling (cross-entropy) at every step, `batch` rows per step.",
    )
    lm_weight: float = Field(
        1.0, ge=0.0, description="Multiplier of the language-modelling term on `lm_data`."
    )
    lm_text: ColumnName = Field("text", description="The column of `lm_data` holding the text.")

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        if "lm_data" in given:
            return []
        return [
            (
                "KD0351",
                f"`{setting}` shapes the language-modelling term, but this train gives no "
                "`lm_data` to model",
                setting,
                "give `lm_data = NAME` (a dataset or stage of text), or remove the setting",
            )
            for setting in LM_SETTINGS
            if setting in given
        ]
