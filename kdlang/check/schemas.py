"""Column schemas through the DAG, and every check that needs them.

A dataset's columns are declared (``columns = [...]``) or read from its local file; every stage
derives its output columns from its input's (:func:`output_columns`). With the columns known at
each stage, prompts are checked against the data they are rendered on, filter and metric
expressions are type-checked, and column settings (``target``, ``column``, ``group``...) must
name columns that exist.
"""

from __future__ import annotations

from kdlang.check.datafiles import UnreadableData, columns_of_rows, read_columns
from kdlang.check.names import upstream
from kdlang.check.program import Program
from kdlang.check.templates import STRUCTURED, check_template
from kdlang.expr.typecheck import typecheck
from kdlang.ir import stages as st
from kdlang.ir import training as tr
from kdlang.ir.recipe import Recipe
from kdlang.ir.sources import HFData, InlineData
from kdlang.syntax.diagnostics import Collector, suggestion

Columns = dict[str, str]

TOPK_COLUMNS = {"topk_ids": "list", "topk_logprobs": "list", "topk_target_ids": "list"}
"""Columns a ``teacher_logits`` stage adds (per target token: ids and log-probs)."""
PAIR_COLUMNS = ("chosen", "rejected")


def output_columns(stage, columns: Columns) -> Columns:
    """The columns of a stage's output, given its input's."""
    if isinstance(stage, st.LabelStage):
        out = {**columns, stage.output: "str"}
        return {**out, "sample": "int"} if stage.samples > 1 else out
    if isinstance(stage, st.ExpandStage):
        return {stage.column: "str", "origin": "str"}
    if isinstance(stage, st.CurateStage):
        return {**columns, stage.output: "str"}
    if isinstance(stage, st.JudgeStage):
        return {**columns, stage.output: "float"}
    if isinstance(stage, st.PairsStage):
        return {
            stage.group: columns.get(stage.group, "any"),
            "chosen": "str",
            "rejected": "str",
            "margin": "float",
        }
    if isinstance(stage, st.TeacherLogitsStage):
        return {**columns, **TOPK_COLUMNS}
    return dict(columns)


def compute_schemas(program: Program, errors: Collector) -> dict[str, Columns | None]:
    """Columns of every dataset and stage (None where they cannot be known), checking as it goes."""
    recipe = program.recipe
    schemas: dict[str, Columns | None] = {}
    checker = _StageChecker(program, schemas, errors)
    for name, data in recipe.datasets.items():
        schemas[name] = _dataset_columns(program, name, data, errors)
    for name in _stage_order(recipe):
        stage = recipe.stages[name]
        columns = schemas.get(stage.input.name)
        schemas[name] = None if columns is None else output_columns(stage, columns)
        if columns is not None:
            checker.stage(name, stage, columns)
    for name, train in recipe.trains.items():
        checker.train(name, train)
    for name, ev in recipe.evals.items():
        checker.evaluate(name, ev)
    # Every prompt's template is parsed, also when nothing valid renders it (unused, or used by a
    # declaration with errors of its own): its syntax errors are reported in the same run.
    for name, prompt in recipe.prompts.items():
        checker.template_syntax(name, prompt)
    return schemas


def _stage_order(recipe: Recipe) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in recipe.stages:
            return
        seen.add(name)
        for parent in upstream(recipe, name):
            visit(parent)
        order.append(name)

    for name in recipe.stages:
        visit(name)
    return order


def _dataset_columns(program: Program, name: str, data, errors: Collector) -> Columns | None:
    declared = dict.fromkeys(data.columns, "any") if data.columns else None
    if isinstance(data, InlineData):
        found = columns_of_rows(data.rows)
        return {**found, **{k: found.get(k, "any") for k in declared or {}}}
    if isinstance(data, HFData):
        local = program.resolve(data.span.file, data.id)
        if declared is None and not local.exists():
            errors.error(
                "KD0105",
                f"dataset `{name}` comes from the hub: declare its `columns = [...]`",
                program.recipe.name_spans[name],
                help="columns are read from local files only, so that `check` needs no network",
            )
        return declared
    path = program.resolve(data.span.file, data.path)
    try:
        found = read_columns(data.kind, path)
    except FileNotFoundError:
        errors.error(
            "KD0402",
            f"data file not found: {data.path}",
            data.spans.get("path", data.span),
            help=f"looked for {path} (paths are relative to the recipe file)",
        )
        return declared
    except UnreadableData as error:
        if declared is None:
            errors.error(
                "KD0403",
                f"cannot read the columns of {data.path}: {error}",
                data.spans.get("path", data.span),
                help="fix the file, or declare `columns = [...]`",
            )
        return declared
    if declared is None:
        return found
    for column in declared:
        if column not in found:
            errors.error(
                "KD0205",
                f"declared column `{column}` is not in {data.path}",
                data.spans.get("columns", data.span),
                help=suggestion(column, found) or "file columns: " + ", ".join(found),
            )
    return {k: found.get(k, "any") for k in declared}


class _StageChecker:
    def __init__(self, program: Program, schemas: dict[str, Columns | None], errors: Collector):
        self.recipe = program.recipe
        self.sources = program.sources
        self.schemas = schemas
        self.errors = errors
        self.reported: set = set()
        self.parsed: set[str] = set()  # prompts whose template has been parsed

    def prompt(
        self, node, field: str, columns: Columns | None, extra: set[str] = frozenset()
    ) -> None:
        ref = getattr(node, field, None)
        if ref is None or not hasattr(ref, "name"):
            return
        prompt = self.recipe.prompts.get(ref.name)
        if prompt is not None:
            self.parsed.add(ref.name)
            check_template(
                prompt,
                ref.name,
                columns,
                self.errors,
                ref.span,
                extra,
                self.reported,
                source=self.sources.get(prompt.span.file),
            )

    def template_syntax(self, name: str, prompt) -> None:
        if name in self.parsed:
            return
        check_template(
            prompt,
            name,
            None,
            self.errors,
            prompt.span,
            reported=self.reported,
            source=self.sources.get(prompt.span.file),
        )

    def column(self, node, field: str, columns: Columns, what: str = "column") -> None:
        name = getattr(node, field)
        if name not in columns:
            self.errors.error(
                "KD0205",
                f"`{field}` names {what} `{name}`, which the data does not have",
                node.spans.get(field, node.span),
                help=suggestion(name, columns) or "columns: " + ", ".join(sorted(columns)),
            )

    def text_column(self, node, field: str, columns: Columns) -> None:
        """``field`` names a column of text (a target the model learns or is scored on)."""
        self.column(node, field, columns)
        name = getattr(node, field)
        kind = columns.get(name)
        if kind in STRUCTURED:
            self.errors.error(
                "KD0211",
                f"`{field}` names `{name}`, which holds {STRUCTURED[kind]}, not text",
                node.spans.get(field, node.span),
                help="a target is a text column; make one with a stage that writes text "
                "(`label`), or pick another column",
            )

    def stage(self, name: str, stage, columns: Columns) -> None:
        if isinstance(
            stage, st.LabelStage | st.CurateStage | st.JudgeStage | st.TeacherLogitsStage
        ):
            self.prompt(stage, "prompt", columns)
        if isinstance(stage, st.LabelStage):
            self.prompt(stage, "system", columns)
        if isinstance(stage, st.ExpandStage):
            self.column(stage, "column", columns)
            # rendered with the expansion variables only, never with a row's columns
            self.prompt(stage, "prompt", {}, {"demos", "item", "operation", "n"})
        if isinstance(stage, st.PairsStage):
            for field in ("group", "response", "score"):
                self.column(stage, field, columns)
        if isinstance(stage, st.TeacherLogitsStage):
            self.text_column(stage, "target", columns)
        if isinstance(stage, st.FilterStage):
            for rule in stage.rules:
                if isinstance(rule, st.KeepRule):
                    typecheck(rule.condition, columns, self.errors, want="bool")
                elif isinstance(rule, st.DedupRule):
                    self.column(rule, "column", columns)
                else:
                    self.column(rule, "column", columns)
                    other = self.schemas.get(rule.against.name)
                    if other is not None and rule.column not in other:
                        self.errors.error(
                            "KD0205",
                            f"`{rule.against.name}` has no column `{rule.column}` to compare with",
                            rule.against.span,
                            help="columns there: " + ", ".join(sorted(other)),
                        )

    def train(self, name: str, train: tr.Train) -> None:
        columns = self.schemas.get(train.data.name)
        if columns is None:
            return
        dpo = any(isinstance(loss, tr.DPOLoss) for loss in train.losses)
        if dpo:
            missing = [c for c in PAIR_COLUMNS if c not in columns]
            if missing:
                self.errors.error(
                    "KD0304",
                    f"`loss dpo` needs chosen/rejected pairs, but `{train.data.name}` has no "
                    + ", ".join(f"`{c}`" for c in missing),
                    train.data.span,
                    help="make the data with a `pairs` stage",
                )
        if not dpo or len(train.losses) > 1:
            self.text_column(train, "target", columns)
        self.prompt(train, "prompt", columns)

    def evaluate(self, name: str, ev: tr.Evaluate) -> None:
        columns = self.schemas.get(ev.data.name)
        if columns is None:
            return
        self.prompt(ev, "prompt", columns)
        for metric in ev.metrics:
            typecheck(metric.expr, {**columns, "output": "str"}, self.errors, want="metric")
