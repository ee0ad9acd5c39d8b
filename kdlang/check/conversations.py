"""Checks of conversations and chat templates, with the column schemas known.

On models: a chat template of their own parses as Jinja, and one read from a file replaces its
path in the IR (KD0314, KD0315). On dataset declarations: the column `messages = ...` names
(and every column a `columns` map types `messages`) exists and holds lists of turns;
turn-layout settings are not given without a column to apply to (the role names themselves are
typed in the IR). On the nodes that read conversations: a `train` whose `target` is a
conversation takes no `prompt`, reads only a top-k cache scored on that conversation on at
least its tokens, and has a student with a chat template; a train sampling every batch has
something to prompt the student with; `chat_template_mix` has a template and a teacher that
reads the same rendering; `train_on` is given only with a conversation target; `label`,
`evaluate` and `teacher_logits` take a prompt or a conversation, with a model that can take
one; filter rules compare text or a conversation's text, not other lists or maps.
"""

from __future__ import annotations

from kdlang.check.chat_templates import check_chat_template
from kdlang.check.conversation_training import KIND_NAMES, check_conversation_train, target_kind
from kdlang.check.program import Program
from kdlang.check.templates import STRUCTURED
from kdlang.ir import selection as sel
from kdlang.ir import stages as st
from kdlang.ir import training as tr
from kdlang.ir.descriptor import Columns
from kdlang.ir.sources import CsvData, DataCommon, HFModel, OpenAIModel
from kdlang.ir.teacher_logits import TeacherLogitsStage
from kdlang.syntax.diagnostics import Collector, Severity, suggestion

_LISTS = ("list", "messages", "any")
"""Column types that may hold a conversation's turns (``any``: mixed or unknown until run)."""


def check_conversation_sources(program: Program, errors: Collector) -> None:
    """Every model's chat template, every dataset's conversation settings, then every node
    reading a conversation."""
    for name, model in list(program.recipe.models.items()):
        if isinstance(model, HFModel):
            check_chat_template(program, name, model, errors)
    for name, data in program.recipe.datasets.items():
        _check_dataset(program, name, data, errors)
    for train in program.recipe.trains.values():
        check_conversation_train(program, train, errors)
    for stage in program.recipe.stages.values():
        if isinstance(stage, sel.FilterStage):
            _check_filter(program, stage, errors)
        if isinstance(stage, st.LabelStage):
            _check_label(program, stage, errors)
        if isinstance(stage, TeacherLogitsStage):
            _check_teacher_logits(program, stage, errors)
    for evaluation in program.recipe.evals.values():
        _check_evaluate(program, evaluation, errors)


def _check_dataset(program: Program, name: str, data: DataCommon, errors: Collector) -> None:
    if data.messages is None:
        for setting in ("role_key", "content_key", "roles"):
            if getattr(data, setting) is not None:
                errors.error(
                    "KD0241",
                    f"`{setting}` says how conversation turns are read, but dataset "
                    f"`{name}` names no conversation column",
                    data.spans.get(setting, data.span),
                    help="name the column: `messages = COLUMN`",
                )
    found = program.schemas.get(name)
    if found is None:
        return
    named = {data.messages: "messages"} if data.messages is not None else {}
    if isinstance(data.columns, dict):
        named.update({c: "columns" for c, kind in data.columns.items() if kind == "messages"})
    for column, setting in named.items():
        span = data.spans.get(setting, data.span)
        if column not in found:
            errors.error(
                "KD0240",
                f"`{setting}` names column `{column}` as a conversation, which dataset "
                f"`{name}` does not have",
                span,
                help=suggestion(column, found) or "columns: " + ", ".join(sorted(found)),
            )
            continue
        raw = _source_type(program, name, column)
        text_ok = isinstance(data, CsvData) and raw == "str"  # CSV cells hold turns as JSON text
        if raw is not None and raw not in _LISTS and not text_ok:
            errors.error(
                "KD0240",
                f"`{setting}` names column `{column}` as a conversation, but it holds "
                f"{KIND_NAMES.get(raw, raw)}, not turns",
                span,
                help="a conversation column holds a list of turns per row",
            )


def _source_type(program: Program, name: str, column: str) -> str | None:
    """The type of ``column`` as the source holds it, before the declaration types it."""
    from kdlang.check.datafiles import UnreadableData, columns_of_rows, read_columns
    from kdlang.ir.sources import HFData, InlineData

    data = program.recipe.datasets[name]
    if isinstance(data, InlineData):
        return columns_of_rows(data.rows).get(column)
    if isinstance(data, HFData):
        return None
    try:
        return read_columns(data.kind, program.resolve(data.span.file, data.path)).get(column)
    except (OSError, UnreadableData):
        return None


def _check_teacher_logits(program: Program, stage: TeacherLogitsStage, errors: Collector) -> None:
    """A conversation target takes no prompt and an `hf` teacher with a chat template; a text
    target needs its prompt and takes no `train_on`."""
    kind = target_kind(program, stage)
    if kind == "messages":
        if stage.prompt is not None:
            errors.error(
                "KD0245",
                f"`target` names the conversation `{stage.target}`, which brings its own user "
                "turns: a `prompt` would go unused",
                stage.spans.get("prompt", stage.span),
                help="remove `prompt` (the teacher's chat template renders the conversation)",
            )
        teacher = program.recipe.models.get(stage.teacher.name)
        if isinstance(teacher, OpenAIModel) and not teacher.chat:
            errors.error(
                "KD0245",
                f"the teacher `{stage.teacher.name}` scores text through the completions "
                f"endpoint; the conversations of `{stage.target}` are scored by an `hf` teacher",
                stage.spans.get("teacher", stage.span),
                notes=[("the model is declared here", teacher.span)],
                help="score them with an `hf` model (or an online `teacher` in the train)",
            )
        if isinstance(teacher, HFModel) and teacher.chat_template == "none":
            errors.error(
                "KD0313",
                f"`target` names the conversation `{stage.target}`, but the teacher "
                f"`{stage.teacher.name}` has `chat_template = none`",
                stage.spans.get("target", stage.span),
                notes=[("the model is declared here", teacher.span)],
                help="give the teacher a chat template, or score a text column",
            )
        return
    if kind is None:
        return
    if stage.prompt is None and kind != "any":
        errors.error(
            "KD0105",
            f"`teacher_logits` needs `prompt`: `target` names `{stage.target}`, text that "
            "follows a prompt",
            stage.span,
            help="prompt = NAME: the prompt the target follows (a conversation column needs none)",
        )
    if "train_on" in stage.spans and kind != "any":
        errors.error(
            "KD0242",
            f"`train_on` picks the turns of a conversation, but `target` names "
            f"`{stage.target}`, which holds {KIND_NAMES.get(kind, kind)}",
            stage.spans["train_on"],
            help="a text target is scored whole after its prompt: remove `train_on`",
        )


def _check_filter(program: Program, stage: sel.FilterStage, errors: Collector) -> None:
    columns: Columns | None = program.schemas.get(stage.input.name)
    if columns is None:
        return
    for rule in stage.rules:
        if not isinstance(rule, sel.DedupRule | sel.DecontaminateRule):
            continue
        kind = columns.get(rule.column)
        if kind in STRUCTURED and kind != "messages":  # a conversation: its turns' text
            errors.error(
                "KD0211",
                f"`{rule.rule}` compares the text of `{rule.column}`, which holds "
                f"{STRUCTURED[kind]}, not text",
                rule.spans.get("column", rule.span),
                help="compare a text column (a `label` stage's output, a prompt's column)",
            )


def _check_label(program: Program, stage: st.LabelStage, errors: Collector) -> None:
    """One of `prompt` and `messages`; `turns` with `messages` only; a conversation to answer."""
    if stage.messages is None:
        if stage.prompt is None and not _reported_within(errors, stage.span):
            errors.error(
                "KD0105",
                "`label` needs `prompt` (or `messages`, a conversation column to answer)",
                stage.span,
                help="prompt = NAME: the prompt the teacher answers for each row",
            )
        for setting, what in (
            ("turns", "says which turns of a conversation the teacher writes"),
            ("answer", "writes the teacher's last turn of a conversation"),
        ):
            if setting in stage.spans:
                errors.error(
                    "KD0244",
                    f"`{setting}` {what}, but the stage names no `messages` column",
                    stage.spans[setting],
                    help="name the conversation column: `messages = COLUMN`",
                )
        return
    if stage.prompt is not None:
        errors.error(
            "KD0244",
            f"the stage answers the conversations of `{stage.messages}`: a `prompt` would go "
            "unused",
            stage.spans.get("prompt", stage.span),
            help="remove `prompt`, or `messages` to answer the prompt instead",
        )
    if stage.turns == "each" and stage.samples > 1:
        errors.error(
            "KD0244",
            "`turns = each` writes every assistant turn once: it takes `samples = 1`",
            stage.spans.get("samples", stage.span),
        )
    if stage.teacher is not None:  # several teachers do not answer conversations (KD0237)
        _check_chat_model(
            program,
            stage.teacher.name,
            f"the stage answers the conversations of `{stage.messages}`, but the teacher",
            stage.spans.get("teacher", stage.span),
            errors,
        )
    _check_conversation_column(program, stage, stage.input.name, errors)


def _check_chat_model(program: Program, name: str, what: str, span, errors: Collector) -> None:
    """KD0313 when the model ``name`` cannot take chat messages (``what`` says who needs it)."""
    model = program.recipe.models.get(name)
    plain = (isinstance(model, HFModel) and model.chat_template == "none") or (
        isinstance(model, OpenAIModel) and not model.chat
    )
    if plain and model is not None:
        setting = "chat_template = none" if isinstance(model, HFModel) else "chat = false"
        errors.error(
            "KD0313",
            f"{what} `{name}` has `{setting}`",
            span,
            notes=[("the model is declared here", model.span)],
            help="a conversation is sent as chat messages: give the model a chat template "
            "(or the chat endpoint)",
        )


def _check_conversation_column(program: Program, node, data: str, errors: Collector) -> None:
    """KD0242 when ``node.messages`` names a column of ``data`` that holds no conversation."""
    columns = program.schemas.get(data)
    kind = columns.get(node.messages) if columns is not None else None
    if kind is not None and kind not in ("messages", "any"):
        errors.error(
            "KD0242",
            f"`messages` names `{node.messages}`, which holds {KIND_NAMES.get(kind, kind)}, not a "
            "conversation",
            node.spans.get("messages", node.span),
            help="name a conversation column (type `messages`), or answer it with a `prompt`",
        )


def _check_evaluate(program: Program, evaluation: tr.Evaluate, errors: Collector) -> None:
    """One of `prompt` and `messages`; `messages` names a conversation; the model (a train's
    student) can take one."""
    if evaluation.messages is None:
        if evaluation.prompt is None and not _reported_within(errors, evaluation.span):
            errors.error(
                "KD0105",
                "`evaluate` needs `prompt` (or `messages`, a conversation column to answer)",
                evaluation.span,
                help="prompt = NAME: the prompt the model answers for each row",
            )
        return
    if evaluation.prompt is not None:
        errors.error(
            "KD0248",
            f"the evaluation answers the conversations of `{evaluation.messages}`: a `prompt` "
            "would go unused",
            evaluation.spans.get("prompt", evaluation.span),
            help="remove `prompt`, or `messages` to answer the prompt instead",
        )
    _check_conversation_column(program, evaluation, evaluation.data.name, errors)
    trained = program.recipe.trains.get(evaluation.model.name)
    ref = trained.student if trained is not None else evaluation.model
    _check_chat_model(
        program,
        ref.name,
        f"the evaluation answers the conversations of `{evaluation.messages}`, but",
        evaluation.model.span,
        errors,
    )


def _reported_within(errors: Collector, span) -> bool:
    """Whether an error inside ``span`` is reported already (an extra positional argument
    was probably meant as the missing setting)."""
    return any(
        d.severity is Severity.ERROR
        and d.span.file == span.file
        and (span.line, span.column) <= (d.span.line, d.span.column)
        and (d.span.end_line, d.span.end_column) <= (span.end_line, span.end_column)
        for d in errors.diagnostics
    )
