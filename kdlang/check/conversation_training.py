"""Checks of trains on conversations: a train whose `target` is a conversation takes no
`prompt`, reads only a top-k cache scored on that conversation on at least its tokens, and has a
student with a chat template; a train sampling every batch has something to prompt the student
with; `chat_template_mix` has a template and a teacher that reads the same rendering;
`train_on` is given only with a conversation target."""

from __future__ import annotations

from kdlang.check.program import Program
from kdlang.ir import training as tr
from kdlang.ir.sources import HFModel
from kdlang.ir.teacher_logits import TeacherLogitsStage
from kdlang.syntax.diagnostics import Collector

KIND_NAMES = {"str": "text", "int": "integers", "float": "numbers", "bool": "booleans"}
KIND_NAMES.update({"list": "lists", "map": "maps", "messages": "a conversation"})
"""Column types as a message says them."""


def check_conversation_train(program: Program, train: tr.Train, errors: Collector) -> None:
    recipe = program.recipe
    if train.chat_template_mix is not None:
        _check_mix(program, train, errors)
    if train.samples_only() and "target" not in train.spans and train.prompt is None:
        errors.error(
            "KD0247",
            "every batch of this train samples from the student (`on_policy = 1`), but it "
            "names nothing to prompt the student with",
            train.spans.get("on_policy", train.span),
            help="give a `prompt`, or a conversation `target` (its turns up to the last user "
            "turn are the prompt)",
        )
    columns = program.schemas.get(train.data.name)
    if columns is None or train.target not in columns:
        return
    kind = columns[train.target]
    from kdlang.check.compat import cached_logits_stage

    cached = cached_logits_stage(program, train.data.name)
    wants_cache = train.teacher is None and any(loss.teacher for loss in train.losses)
    over_turns = cached is not None and target_kind(program, cached) == "messages"
    if cached is not None and over_turns and wants_cache and kind != "messages":
        errors.error(
            "KD0246",
            f"`{train.data.name}` holds the teacher's top-k over the conversations of "
            f"`{cached.target}`; the text target `{train.target}` cannot be learned from it",
            train.spans.get("target", train.span),
            help=f"learn the conversation: `target = {cached.target}`",
        )
    if kind != "messages":
        if "train_on" in train.spans and kind != "any":
            errors.error(
                "KD0242",
                f"`train_on` picks the turns of a conversation, but `target` names "
                f"`{train.target}`, which holds {KIND_NAMES.get(kind, kind)}",
                train.spans["train_on"],
                help="a text target is learned whole after its prompt: remove `train_on`, or "
                "name a conversation column (type `messages`)",
            )
        return
    if not train.text_settings():
        return  # no loss reads the target
    target_span = train.spans.get("target", train.span)
    if train.prompt is not None:
        errors.error(
            "KD0243",
            f"`target` names the conversation `{train.target}`, which brings its own user turns: "
            "a `prompt` would go unused",
            train.spans.get("prompt", train.span),
            help="remove `prompt` (the student's chat template renders the conversation)",
        )
    if cached is not None and wants_cache:
        _check_cache_covers(program, train, cached, errors)
    student = recipe.models.get(train.student.name)
    if isinstance(student, HFModel) and student.chat_template == "none":
        errors.error(
            "KD0313",
            f"`target` names the conversation `{train.target}`, but the student "
            f"`{train.student.name}` has `chat_template = none`",
            target_span,
            notes=[("the model is declared here", student.span)],
            help="give the student a chat template, or learn a text column",
        )


def _check_mix(program: Program, train: tr.Train, errors: Collector) -> None:
    """A mix of chat template arguments needs a student template to pass them to, and a
    teacher that sees the same rendering (online, not a cache scored on its own)."""
    from kdlang.check.compat import cached_logits_stage

    span = train.spans.get("chat_template_mix", train.span)
    student = program.recipe.models.get(train.student.name)
    if isinstance(student, HFModel) and student.chat_template == "none":
        errors.error(
            "KD0249",
            f"`chat_template_mix` picks chat template arguments per row, but the student "
            f"`{train.student.name}` has `chat_template = none`",
            span,
            notes=[("the model is declared here", student.span)],
            help="give the student a chat template, or remove `chat_template_mix`",
        )
    cached = cached_logits_stage(program, train.data.name)
    if cached is not None and train.teacher is None and any(x.teacher for x in train.losses):
        errors.error(
            "KD0249",
            f"`chat_template_mix` renders rows with arguments the teacher of "
            f"`{train.data.name}` did not score them with",
            span,
            notes=[("the cache is made here", cached.span)],
            help="name an online `teacher` (it reads the student's rendering), or remove "
            "`chat_template_mix`",
        )


_COVERS = {"last_assistant": 0, "assistant": 1, "all": 2}
"""``train_on`` modes by the tokens they pick: each picks those of the ones before it."""


def target_kind(program: Program, stage: TeacherLogitsStage) -> str | None:
    columns = program.schemas.get(stage.input.name)
    return columns.get(stage.target) if columns is not None else None


def _check_cache_covers(
    program: Program, train: tr.Train, cached: TeacherLogitsStage, errors: Collector
) -> None:
    """A conversation target learned from a top-k cache: the cache scored the same column on
    at least the tokens the train learns."""
    target_span = train.spans.get("target", train.span)
    at = [("the cache is made here", cached.spans.get("target", cached.span))]
    if target_kind(program, cached) != "messages":
        errors.error(
            "KD0243",
            f"`{train.data.name}` holds the teacher's top-k cached over text targets; a "
            "conversation target cannot be learned from it",
            target_span,
            help="name an online `teacher` in the train, or learn a text column",
        )
    elif cached.target != train.target:
        errors.error(
            "KD0246",
            f"`{train.data.name}` holds the teacher's top-k over the conversations of "
            f"`{cached.target}`, not of `{train.target}`",
            target_span,
            notes=at,
            help=f"learn `target = {cached.target}`, or score `{train.target}` in the stage",
        )
    elif _COVERS[train.train_on] > _COVERS[cached.train_on]:
        errors.error(
            "KD0246",
            f"the train learns `train_on = {train.train_on}`, but `{train.data.name}` scored "
            f"the teacher on `train_on = {cached.train_on}` tokens only",
            train.spans.get("train_on", target_span),
            notes=at,
            help=f"set `train_on = {train.train_on}` in the `teacher_logits` stage too",
        )
