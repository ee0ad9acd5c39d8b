"""Column schemas through the DAG, and every check that needs them.

A dataset's columns are declared (``columns = [...]``) or read from its local file; every stage
derives its output columns from its input's (``output_columns`` of its descriptor). With the
columns known where each node reads its rows, what the descriptors declare is checked against
them: prompts against the data they are rendered on, column settings (``target``, ``column``,
``group``...) against the columns that exist, filter and metric expressions by type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from kdlang.check.datafiles import UnreadableData, columns_of_rows, read_columns
from kdlang.check.names import dependency_order
from kdlang.check.program import Program
from kdlang.check.templates import STRUCTURED, check_template
from kdlang.expr.typecheck import column_type, typecheck
from kdlang.ir import training as tr
from kdlang.ir.descriptor import Columns, Operator
from kdlang.ir.sources import HFData, InlineData
from kdlang.ir.values import Node
from kdlang.syntax.diagnostics import Collector, suggestion
from kdlang.syntax.source import component_too_long, kind_of


def compute_schemas(program: Program, errors: Collector) -> dict[str, Columns | None]:
    """Columns of every dataset and stage (None where they cannot be known), checking as it goes."""
    recipe = program.recipe
    schemas: dict[str, Columns | None] = {}
    checker = _Checker(program, schemas, errors)
    order, _ = dependency_order(recipe)
    for name, data in recipe.datasets.items():
        schemas[name] = data.typed_columns(_dataset_columns(program, name, data, errors))
    for section in ("stages", "trains", "evals"):
        table = getattr(recipe, section)
        for name in (n for n in order if n in table):
            node = table[name]
            columns = schemas.get(getattr(node, node.reads).name) if node.reads else None
            if section == "stages":
                schemas[name] = None if columns is None else checker.output(node, columns)
            if columns is not None:
                checker.node(node, columns)
    # Every prompt's template is parsed, also when nothing valid renders it (unused, or used by a
    # declaration with errors of its own): its syntax errors are reported in the same run.
    for name, prompt in recipe.prompts.items():
        checker.template_syntax(name, prompt)
    return schemas


def _dataset_columns(program: Program, name: str, data, errors: Collector) -> Columns | None:
    declared = dict.fromkeys(data.columns, "any") if data.columns else None
    if isinstance(data, InlineData):
        found = columns_of_rows(data.rows)
        return {**found, **{k: found.get(k, "any") for k in declared or {}}}
    if isinstance(data, HFData):
        local = program.resolve(data.span.file, data.id)
        if declared is None and kind_of(local) is None:
            errors.error(
                "KD0105",
                f"dataset `{name}` comes from the hub: declare its `columns = [...]`",
                program.recipe.name_spans[name],
                help="columns are read from local files only, so that `check` needs no network",
            )
        return declared
    if component_too_long(data.path):
        errors.error(
            "KD0409",
            f"the data file's path has a component longer than the system allows: {data.path[:60]}...",
            data.spans.get("path", data.span),
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


class _Checker:
    def __init__(self, program: Program, schemas: dict[str, Columns | None], errors: Collector):
        self.recipe = program.recipe
        self.sources = program.sources
        self.schemas = schemas
        self.errors = errors
        self.reported: set = set()
        self.parsed: set[str] = set()  # prompts whose template has been parsed

    def node(self, node: Operator, columns: Columns) -> None:
        """Everything ``node``'s descriptor declares, against the columns of the rows it reads."""
        for use in node.prompts:
            self.prompt(node, use.setting, columns if use.rows else {}, use.variables)
        for setting in node.column_settings:
            self.column(node, setting, columns)
        for setting in node.text_settings():
            self.text_column(node, setting, columns)
        for setting in node.numeric_column_settings:
            self.numeric_column(node, setting, columns)
        if isinstance(node, tr.Train):
            self.pairs(node, columns)
        for part in _parts(node):
            self.part(part, node.scope(columns), columns)

    def output(self, node: Operator, columns: Columns) -> Columns:
        """A stage's output columns; one whose columns depend on the types of its expressions
        or on other inputs (``typed_output``, :mod:`kdlang.ir.transforms`) is checked here."""
        typed = getattr(node, "typed_output", None)
        return node.output_columns(columns) if typed is None else typed(columns, _Typing(self))

    def part(self, part: Node, scope: Columns, columns: Columns) -> None:
        """A node inside an operator (a filter rule, a metric)."""
        for setting in getattr(part, "column_settings", ()):
            self.column(part, setting, columns)
        for setting, other in getattr(part, "against_columns", {}).items():
            ref = getattr(part, other)
            name = getattr(part, setting)
            theirs = self.schemas.get(ref.name)
            if theirs is not None and name not in theirs:
                self.errors.error(
                    "KD0205",
                    f"`{ref.name}` has no column `{name}` to compare with",
                    ref.span,
                    help="columns there: " + ", ".join(sorted(theirs)),
                )
        for setting, want in getattr(part, "expressions", {}).items():
            typecheck(getattr(part, setting), scope, self.errors, want=want)

    def pairs(self, train: tr.Train, columns: Columns) -> None:
        for loss in train.losses:
            missing = [c for c in loss.pair_columns if c not in columns]
            if missing:
                self.errors.error(
                    "KD0304",
                    f"`loss {loss.name}` needs chosen/rejected pairs, but `{train.data.name}` has no "
                    + ", ".join(f"`{c}`" for c in missing),
                    train.data.span,
                    help="make the data with a `pairs` stage",
                )
                return

    def prompt(
        self, node: Any, field: str, columns: Columns | None, extra: frozenset[str] = frozenset()
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
                set(extra),
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

    def column(self, node: Any, field: str, columns: Columns, what: str = "column") -> None:
        name = getattr(node, field)
        if name is not None and name not in columns:  # an optional setting left out names none
            self.errors.error(
                "KD0205",
                f"`{field}` names {what} `{name}`, which the data does not have",
                node.spans.get(field, node.span),
                help=suggestion(name, columns) or "columns: " + ", ".join(sorted(columns)),
            )

    def numeric_column(self, node: Any, field: str, columns: Columns) -> None:
        """``field`` names a column of numbers (a score rows are ranked by)."""
        self.column(node, field, columns)
        name = getattr(node, field)
        kind = columns.get(name)
        if kind is not None and kind not in NUMERIC:
            self.errors.error(
                "KD0211",
                f"`{field}` names `{name}`, which holds {_KINDS.get(kind, kind)}, not numbers",
                node.spans.get(field, node.span),
                help="rank by a numeric column, such as the score a `judge` stage writes",
            )

    def text_column(self, node: Any, field: str, columns: Columns) -> None:
        """``field`` names a column of text (a target the model learns or is scored on)."""
        self.column(node, field, columns)
        name = getattr(node, field)
        kind = columns.get(name)
        if kind == "messages" and field in getattr(node, "conversation_settings", ()):
            return  # a conversation this setting renders (kdlang.check.conversations)
        if kind in STRUCTURED:
            self.errors.error(
                "KD0211",
                f"`{field}` names `{name}`, which holds {STRUCTURED[kind]}, not text",
                node.spans.get(field, node.span),
                help="a target is a text column; make one with a stage that writes text "
                "(`label`), or pick another column",
            )


class _Typing:
    """What :meth:`_Checker.output` lets a stage ask (:class:`kdlang.ir.transforms.OutputTyping`)."""

    def __init__(self, checker: _Checker):
        self.checker = checker

    def type(self, expr: Any, scope: Columns, items: bool = False) -> str:
        return column_type(expr, scope, self.checker.errors, items=items)

    def columns_of(self, name: str) -> Columns | None:
        return self.checker.schemas.get(name)

    def error(self, code: str, message: str, span: Any, help: str | None = None) -> None:
        self.checker.errors.error(code, message, span, help=help)


NUMERIC = ("int", "float", "any")
"""Column types that may hold numbers (``any``: mixed, or unknown until run)."""
_KINDS = {"str": "text", "bool": "booleans", "list": "lists", "map": "maps"}


def _parts(node: BaseModel) -> Iterator[Node]:
    """The nodes inside an operator's settings (filter rules, metrics, losses), in order."""
    for name in type(node).model_fields:
        value = getattr(node, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Node):
                yield item
