"""Checks of conversations and chat templates, with the column schemas known.

On models: a chat template of their own parses as Jinja, and one read from a file replaces its
path in the IR (KD0314, KD0315); `chat_template_args` are refused where nothing passes them
(KD0316). On dataset declarations: the column `messages = ...` names (and every column a
`columns` map types `messages`) exists and holds lists of turns; turn-layout settings are not
given without a column to apply to (the role names themselves are typed in the IR). On the nodes
that read conversations: a `train` whose `target` is a conversation takes no `prompt`, reads no
top-k cache, samples nothing on-policy and has a student with a chat template; `train_on` is
given only with a conversation target; a `label` answers a prompt or a conversation, with a
teacher that can take one; filter rules that compare text do not compare a conversation.
"""

from __future__ import annotations

from kdlang.check.program import Program
from kdlang.check.templates import STRUCTURED
from kdlang.ir import stages as st
from kdlang.ir import training as tr
from kdlang.ir.descriptor import Columns
from kdlang.ir.sources import CsvData, DataCommon, HFModel, OpenAIModel
from kdlang.ir.values import Schedule
from kdlang.syntax.diagnostics import Collector, Severity, suggestion

_LISTS = ("list", "messages", "any")
"""Column types that may hold a conversation's turns (``any``: mixed or unknown until run)."""
_NAMES = {"str": "text", "int": "integers", "float": "numbers", "bool": "booleans"}
_NAMES.update({"list": "lists", "map": "maps", "messages": "a conversation"})


def check_conversation_sources(program: Program, errors: Collector) -> None:
    """Every model's chat template, every dataset's conversation settings, then every node
    reading a conversation."""
    for name, model in list(program.recipe.models.items()):
        if isinstance(model, HFModel):
            _check_template(program, name, model, errors)
    for name, data in program.recipe.datasets.items():
        _check_dataset(program, name, data, errors)
    for train in program.recipe.trains.values():
        _check_train(program, train, errors)
    for stage in program.recipe.stages.values():
        if isinstance(stage, st.FilterStage):
            _check_filter(program, stage, errors)
        if isinstance(stage, st.TeacherLogitsStage):
            _check_args_used(program, stage.teacher, "a `teacher_logits` stage", errors)
        if isinstance(stage, st.LabelStage):
            _check_label(program, stage, errors)
    for evaluation in program.recipe.evals.values():
        trained = program.recipe.trains.get(evaluation.model.name)
        ref = trained.student if trained is not None else evaluation.model
        _check_args_used(program, ref, "an `evaluate`", errors, at=evaluation.model.span)


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
                f"{_NAMES.get(raw, raw)}, not turns",
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


def _check_train(program: Program, train: tr.Train, errors: Collector) -> None:
    recipe = program.recipe
    columns = program.schemas.get(train.data.name)
    if columns is None or train.target not in columns:
        return
    kind = columns[train.target]
    if kind != "messages":
        if "train_on" in train.spans and kind != "any":
            errors.error(
                "KD0242",
                f"`train_on` picks the turns of a conversation, but `target` names "
                f"`{train.target}`, which holds {_NAMES.get(kind, kind)}",
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
    from kdlang.check.compat import cached_logits_stage

    cached = cached_logits_stage(program, train.data.name)
    wants_cache = train.teacher is None and any(loss.teacher for loss in train.losses)
    if cached is not None and wants_cache:
        errors.error(
            "KD0243",
            f"`{train.data.name}` holds the teacher's top-k cached over text targets; a "
            "conversation target cannot be learned from it",
            target_span,
            help="name an online `teacher` in the train, or learn a text column",
        )
    if _may_sample(train.on_policy):
        errors.error(
            "KD0243",
            f"on-policy sampling is not supported with the conversation target `{train.target}`",
            train.spans.get("on_policy", train.span),
            help="set `on_policy = 0`, or learn a text column",
        )
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


def _may_sample(value) -> bool:
    if isinstance(value, Schedule):
        return True
    return float(value) > 0.0


def _check_filter(program: Program, stage: st.FilterStage, errors: Collector) -> None:
    columns: Columns | None = program.schemas.get(stage.input.name)
    if columns is None:
        return
    for rule in stage.rules:
        if not isinstance(rule, st.DedupRule | st.DecontaminateRule):
            continue
        kind = columns.get(rule.column)
        if kind in STRUCTURED:
            errors.error(
                "KD0211",
                f"`{rule.rule}` compares the text of `{rule.column}`, which holds "
                f"{STRUCTURED[kind]}, not text",
                rule.spans.get("column", rule.span),
                help="compare a text column (a `label` stage's output, a prompt's column)",
            )


def _check_template(program: Program, name: str, model: HFModel, errors: Collector) -> None:
    """A model's own chat template parses; a file's text replaces its path in the IR, so that
    the runtime renders, and the plan fingerprints, the template itself."""
    span = model.spans.get("chat_template", model.span)
    path = model.template_file()
    if path is not None:
        file = program.resolve(model.span.file, path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = "not found" if isinstance(error, FileNotFoundError) else "unreadable"
            errors.error(
                "KD0314",
                f"chat template file {reason}: {path}",
                span,
                help=f"looked for {file} (paths are relative to the recipe file)",
            )
            return
        program.recipe.models[name] = model.model_copy(update={"chat_template": text})
    elif model.inline_template():
        text = model.chat_template
    else:
        return
    problem = template_syntax_error(text)
    if problem is not None:
        line, message = problem
        where = f"line {line} of {path}" if path else f"line {line} of the template"
        errors.error(
            "KD0315",
            f"the chat template of `{name}` is no valid Jinja ({where}): {message}",
            span,
        )


def template_syntax_error(text: str) -> tuple[int, str] | None:
    """``(line, message)`` of the first syntax error of a chat template, parsed as
    transformers parses one; None when it parses."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}``: the assistant-span markers."""

        tags = {"generation"}  # noqa: RUF012 - jinja's own attribute

        def parse(self, parser):
            line = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(line)

    env = ImmutableSandboxedEnvironment(extensions=[Generation, "jinja2.ext.loopcontrols"])
    try:
        env.parse(text)
    except TemplateSyntaxError as error:
        return error.lineno, error.message or "syntax error"
    return None


def _check_args_used(program: Program, ref, where: str, errors: Collector, at=None) -> None:
    model = program.recipe.models.get(ref.name)
    if isinstance(model, HFModel) and model.chat_template_args is not None:
        errors.error(
            "KD0316",
            f"`{ref.name}` has `chat_template_args`, which {where} does not pass to its chat "
            "template",
            at or ref.span,
            notes=[
                ("the arguments are set here", model.spans.get("chat_template_args", model.span))
            ],
            help="declare the model once more without them for this use",
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
    teacher = program.recipe.models.get(stage.teacher.name)
    plain = (isinstance(teacher, HFModel) and teacher.chat_template == "none") or (
        isinstance(teacher, OpenAIModel) and not teacher.chat
    )
    if plain and teacher is not None:
        setting = "chat_template = none" if isinstance(teacher, HFModel) else "chat = false"
        errors.error(
            "KD0313",
            f"the stage answers the conversations of `{stage.messages}`, but the teacher "
            f"`{stage.teacher.name}` has `{setting}`",
            stage.spans.get("teacher", stage.span),
            notes=[("the model is declared here", teacher.span)],
            help="a conversation is sent as chat messages: give the teacher a chat template "
            "(or the chat endpoint)",
        )
    columns = program.schemas.get(stage.input.name)
    kind = columns.get(stage.messages) if columns is not None else None
    if kind is not None and kind not in ("messages", "any"):
        errors.error(
            "KD0242",
            f"`messages` names `{stage.messages}`, which holds {_NAMES.get(kind, kind)}, not a "
            "conversation",
            stage.spans.get("messages", stage.span),
            help="name a conversation column (type `messages`), or answer it with a `prompt`",
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
