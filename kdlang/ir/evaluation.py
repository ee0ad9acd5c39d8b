"""Train settings of evaluation during training (a dev set every `eval_every` steps), the adaptive off-policy schedule and sequence-level KD.

:class:`EvaluationSettings` is one of the bases of :class:`kdlang.ir.training.Train`: its fields are
settings of a ``train`` block like any other (documented, lowered and fingerprinted with them).

- ``eval_data = NAME`` and ``eval_every = N``: every N optimizer steps and after the last one,
  the train's objective on the rows of NAME, without gradients, with the weights of that step;
- ``replay = adaptive(threshold = 0.5, capacity = 1000, loss_eps = 0.1)``: DistiLLM's adaptive
  off-policy schedule (student samples kept in a replay buffer; the probability of using them
  follows the dev loss, so it needs the evaluation above);
- ``seq_kd = true``: sequence-level KD, the online teacher writes the targets of off-policy
  batches (TRL GKD's ``seq_kd``);
- ``num_generations`` and ``sample_batch``: samples per prompt and prompts decoded at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from kdlang.ir.values import VALUE_CONFIG, CallValue, Ref, RefField


class AdaptiveReplay(BaseModel):
    """``adaptive(threshold = 0.5, capacity = 1000, loss_eps = 0.1)``: DistiLLM's adaptive
    off-policy schedule. At step s of S a draw r ~ U(0, 1) (seeded by (seed, s)) picks the
    batch: fresh student samples when ``r < t·(1 − s/S)``, or when ``r < t`` and the buffer
    holds fewer than ``capacity`` samples; replayed samples from the buffer when ``r < t``;
    the data's targets otherwise. ``t`` starts at ``threshold`` and rises by 0.1 (at most 1)
    whenever the dev loss exceeds the one of the last rise (or the first evaluation) by more
    than ``loss_eps``."""

    model_config = VALUE_CONFIG

    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    capacity: Annotated[int, Field(ge=1)] = 1000
    loss_eps: Annotated[float, Field(ge=0.0)] = 0.1


def _adaptive(value: Any) -> Any:
    if isinstance(value, Ref):
        value = CallValue(name=value.name, span=value.span)
    if not isinstance(value, CallValue):
        return value
    if value.name != "adaptive":
        raise PydanticCustomError(
            "kd_replay",
            "unknown replay schedule `{name}`; use adaptive(threshold = 0.5, capacity = 1000, "
            "loss_eps = 0.1)",
            {"name": value.name},
        )
    if value.args:
        raise PydanticCustomError(
            "kd_replay", "adaptive(...) takes keywords only: adaptive(threshold = 0.5)", {}
        )
    return dict(value.kwargs)


AdaptiveField = Annotated[AdaptiveReplay, BeforeValidator(_adaptive)]

SAMPLERS = ("on_policy", "replay")
"""Settings that make a train draw student samples."""


class EvaluationSettings(BaseModel):
    """Settings of evaluation during training."""

    eval_data: RefField | None = Field(
        None,
        description="Dev rows (a dataset or stage with the train's columns): the train's "
        "objective is computed on them, without gradients, every `eval_every` steps and after "
        "the last one (`eval/loss` and `eval/<loss>` in metrics.jsonl).",
    )
    eval_every: int | None = Field(
        None, ge=1, description="Optimizer steps between evaluations on `eval_data`."
    )
    replay: AdaptiveField | None = Field(
        None,
        description="DistiLLM's adaptive off-policy schedule: adaptive(threshold = 0.5, "
        "capacity = 1000, loss_eps = 0.1); needs `eval_data` and `eval_every`.",
    )
    seq_kd: bool = Field(
        False,
        description="Sequence-level KD: the online teacher samples the targets of off-policy "
        "batches (at sample_temperature / sample_top_p, seeded per step and row).",
    )
    num_generations: int = Field(
        1,
        ge=1,
        description="Student samples per prompt on an on-policy step; each is a training "
        "sequence, so such a step learns from batch x num_generations sequences.",
    )
    sample_batch: int | None = Field(
        None,
        ge=1,
        description="Prompts decoded at once when sampling (default: the model's batch_size).",
    )

    @classmethod
    def problems(cls, given: frozenset[str]) -> list[tuple]:
        """What is wrong with the combination of these settings a train gives (as
        :meth:`kdlang.ir.descriptor.Operator.setting_problems` reports it)."""
        out: list[tuple] = []
        if "eval_every" in given and "eval_data" not in given:
            out.append(
                (
                    "KD0323",
                    "`eval_every` evaluates on dev rows, but this train names none",
                    "eval_every",
                    "name them: `eval_data = DATASET`",
                )
            )
        if "eval_data" in given and "eval_every" not in given:
            out.append(
                (
                    "KD0324",
                    "`eval_data` names dev rows, but nothing in this train evaluates on them",
                    "eval_data",
                    "say how often: `eval_every = 50` (steps)",
                )
            )
        if "replay" in given and not {"eval_data", "eval_every"} <= given:
            out.append(
                (
                    "KD0325",
                    "the adaptive schedule follows the dev loss, but this train does not "
                    "evaluate during training",
                    "replay",
                    "give `eval_data = DATASET` and `eval_every = N`",
                )
            )
        if "replay" in given and "on_policy" in given:
            out.append(
                (
                    "KD0326",
                    "`replay` decides which batches are the student's samples, and so does "
                    "`on_policy`: give one",
                    "on_policy",
                    "remove `on_policy` (the adaptive schedule sets the share of samples)",
                )
            )
        for setting, samplers in (
            ("num_generations", set(SAMPLERS)),
            ("sample_batch", {*SAMPLERS, "seq_kd"}),
        ):
            if setting in given and not given & samplers:
                out.append(
                    (
                        "KD0322",
                        f"`{setting}` shapes the student's on-policy samples, but this train "
                        "samples none (`on_policy` is 0)",
                        setting,
                        "give `on_policy = 0.5` (or a schedule, or `replay`), or remove the "
                        "setting",
                    )
                )
        return out
