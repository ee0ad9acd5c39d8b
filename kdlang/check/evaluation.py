"""Checks of evaluation during training, the adaptive off-policy schedule and sequence-level
KD, with the column schemas known: the dev rows a train names (`eval_data`) have every column
the train reads (KD0327), `seq_kd` has an online white-box teacher (KD0328), and the replay
buffer holds at least a batch (KD0329). The combinations of settings alone (KD0322-KD0326) are
:meth:`kdlang.ir.evaluation.EvaluationSettings.problems`."""

from __future__ import annotations

from kdlang.check.program import Program
from kdlang.check.templates import template_variables
from kdlang.ir import training as tr
from kdlang.ir.sources import HFModel
from kdlang.ir.teacher_logits import TOPK_COLUMNS
from kdlang.syntax.diagnostics import Collector


def check_evaluation(program: Program, errors: Collector) -> None:
    for train in program.recipe.trains.values():
        if train.eval_data is not None:
            _check_dev_columns(program, train, errors)
        if train.seq_kd:
            teacher = program.recipe.models.get(train.teacher.name) if train.teacher else None
            if not isinstance(teacher, HFModel):
                errors.error(
                    "KD0328",
                    "`seq_kd` has the online teacher write the targets, but this train has "
                    + ("no teacher" if train.teacher is None else "no white-box (`hf`) teacher"),
                    train.spans.get("seq_kd", train.span),
                    help="give `teacher = MODEL` (an `hf` model)",
                )
        if train.replay is not None and train.replay.capacity < train.batch:
            errors.error(
                "KD0329",
                f"the replay buffer holds {train.replay.capacity} samples, fewer than a batch "
                f"({train.batch})",
                train.spans.get("replay", train.span),
                help=f"give `capacity = {max(train.batch, 1000)}` or more",
            )


def read_columns(program: Program, train: tr.Train) -> list[str]:
    """The columns of the training rows the train reads: those the dev rows must have too."""
    columns = program.schemas.get(train.data.name) or {}
    wanted: list[str] = []
    if train.text_settings():
        wanted.append(train.target)
    prompt = program.recipe.prompts.get(train.prompt.name) if train.prompt else None
    if prompt is not None:
        wanted += sorted(v for v in template_variables(prompt.text) if v in columns)
    for loss in train.losses:
        wanted += list(loss.pair_columns)
    online = train.teacher is not None
    if not online and any(loss.teacher == "logits" for loss in train.losses):
        wanted += [c for c in TOPK_COLUMNS if c in columns]
    return list(dict.fromkeys(wanted))


def _check_dev_columns(program: Program, train: tr.Train, errors: Collector) -> None:
    assert train.eval_data is not None
    dev = program.schemas.get(train.eval_data.name)
    if dev is None:  # unknown until run (or its own errors are reported)
        return
    missing = [c for c in read_columns(program, train) if c not in dev]
    if missing:
        errors.error(
            "KD0327",
            f"the dev rows `{train.eval_data.name}` lack "
            + ", ".join(f"`{c}`" for c in missing)
            + ", which the train reads",
            train.eval_data.span,
            help="columns there: " + (", ".join(sorted(dev)) or "none"),
        )
