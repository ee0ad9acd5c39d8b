"""What a train with ``loss minillm`` must say, checked before anything loads.

MiniLLM (:class:`kdlang.ir.losses.MiniLLMLoss`, the train settings of
:class:`kdlang.ir.minillm.MiniLLMSettings`) samples every batch from the student, scores it with
an online white-box teacher and learns from those rollouts alone, plus an optional
language-modelling term on ``lm_data``. Its settings on a train without it, its options
without the part they shape, and the combinations the runtime cannot honour are errors here.
"""

from __future__ import annotations

from kdlang.check.program import Program
from kdlang.ir import losses as ls
from kdlang.ir import training as tr
from kdlang.ir.minillm import MINILLM_SETTINGS
from kdlang.ir.sources import HFModel
from kdlang.ir.values import Schedule
from kdlang.syntax.diagnostics import Collector

LONG_TERM_OPTIONS = ("gamma", "clip_eps", "advantage", "length_norm", "whiten")
"""The options of ``loss minillm`` that shape its long-term (policy-gradient) part."""


def check_minillm(program: Program, train: tr.Train, errors: Collector) -> None:
    """Report what is wrong with the MiniLLM side of ``train`` (names already resolved)."""
    found = [loss for loss in train.losses if isinstance(loss, ls.MiniLLMLoss)]
    if not found:
        for setting in MINILLM_SETTINGS:
            if setting in train.model_fields_set:
                errors.error(
                    "KD0352",
                    f"`{setting}` is a setting of MiniLLM, but this train has no `loss minillm`",
                    train.spans.get(setting, train.span),
                    help="add `loss minillm weight 1.0`, or remove the setting",
                )
        return
    loss = found[0]
    teacher = program.recipe.models.get(train.teacher.name) if train.teacher else None
    if not isinstance(teacher, HFModel):
        errors.error(
            "KD0350",
            "`minillm` scores the student's samples with the teacher's distribution and needs "
            "an online `hf` teacher",
            train.spans.get("teacher", train.span),
            help="set `teacher = ...` to an hf model sharing the student's vocabulary",
        )
    for other in train.losses:
        if other is not loss:
            errors.error(
                "KD0353",
                f"`{other.name}` has nothing to learn from: a train with `loss minillm` learns "
                "from its rollouts",
                other.span,
                help="remove the line (MiniLLM's language-modelling term is `lm_data`)",
            )
    if not (loss.long_term or loss.single_step):
        errors.error(
            "KD0354",
            "`minillm` with `long_term = false` and `single_step = false` trains nothing",
            loss.span,
            help="keep at least one of the two parts",
        )
    if not loss.long_term:
        for option in LONG_TERM_OPTIONS:
            if option in loss.model_fields_set:
                errors.error(
                    "KD0359",
                    f"`{option}` shapes the long-term part, which `long_term = false` removes",
                    loss.spans.get(option, loss.span),
                    help=f"remove `{option}`",
                )
    if isinstance(train.on_policy, Schedule) or train.on_policy != 1.0:
        errors.error(
            "KD0355",
            "`minillm` learns on the student's samples at every step: give `on_policy = 1`",
            train.spans.get("on_policy", loss.span),
        )
    for setting, value, neutral in (
        ("seq_kd", getattr(train, "seq_kd", False), False),
        ("replay", getattr(train, "replay", None), None),
        ("num_generations", getattr(train, "num_generations", 1), 1),
    ):
        if value != neutral:
            errors.error(
                "KD0355",
                f"`minillm` draws one rollout per prompt at every step; `{setting}` would "
                "change the batches it learns from",
                train.spans.get(setting, train.span),
                help=f"remove `{setting}`",
            )
    for setting, truncates in (
        ("sample_top_p", train.sample_top_p < 1.0),
        ("sample_top_k", getattr(train, "sample_top_k", 0) > 0),
    ):
        if setting in train.model_fields_set and truncates:
            errors.error(
                "KD0356",
                "`minillm` samples from the full distributions its ratios describe; "
                f"`{setting}` would truncate them",
                train.spans.get(setting, train.span),
                help=f"remove `{setting}`",
            )
    if train.strategy == "fsdp":
        errors.error(
            "KD0358",
            "`minillm` does not run on a student sharded by `strategy = fsdp`",
            train.spans.get("strategy", train.span),
            help="use `strategy = ddp`",
        )
    if train.lm_data is not None:
        _check_lm_data(program, train, errors)


def _check_lm_data(program: Program, train: tr.Train, errors: Collector) -> None:
    ref = train.lm_data
    assert ref is not None
    found = program.recipe.lookup(ref.name)
    if found is None or found[0] not in ("datasets", "stages"):
        return  # the names check reports it (KD0201, KD0204)
    columns = program.schemas.get(ref.name)
    if columns is not None and train.lm_text not in columns:
        known = ", ".join(f"`{c}`" for c in columns) or "none"
        errors.error(
            "KD0357",
            f"`{ref.name}` has no column `{train.lm_text}` for the language-modelling term",
            train.spans.get("lm_text", ref.span),
            help=f"its columns: {known}; set `lm_text = COLUMN`",
        )
