"""IR of the operators that reshape rows without a model: ``map``, ``explode`` and ``union``.

Each is a stage operator (:class:`kdlang.ir.stages.StageOperator`), registered by being defined.
Their output columns depend on the types of expressions or on the columns of several inputs, so
besides ``output_columns`` (the columns without types, where nothing else is known) each has
``typed_output(columns, typing)``: the checker (:mod:`kdlang.check.schemas`) gives it a
:class:`OutputTyping` that types expressions and reads other stages' columns, and reports its
problems with positions.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from kdlang.ir.descriptor import DATA, Columns, Estimate, References
from kdlang.ir.expr import Expr
from kdlang.ir.stages import StageOperator
from kdlang.ir.values import ColumnName, Node, RefField
from kdlang.syntax.span import Span


class OutputTyping(Protocol):
    """What a stage's ``typed_output`` may ask of the checker."""

    def type(self, expr: Any, scope: Columns, items: bool = False) -> str:
        """The column type of ``expr``'s values over rows of ``scope`` (``items``: of the items
        of the list it gives, a list being required); its errors reported."""
        ...

    def columns_of(self, name: str) -> Columns | None:
        """The columns of a dataset or stage (None where they cannot be known)."""
        ...

    def error(self, code: str, message: str, span: Span, help: str | None = None) -> None: ...


class ComputedColumn(Node):
    """``name = EXPR``: a column computed on each row."""

    name: ColumnName
    expr: Expr


class Computing(StageOperator):
    """Operators whose block lines ``COLUMN = EXPR`` compute columns: every line whose name is
    no setting of the operator is one (:attr:`computed` names the field they go to)."""

    computed: ClassVar[str] = "columns"
    syntax_fields: ClassVar[dict[str, str]] = {"columns": "its `COLUMN = EXPR` lines"}

    columns: list[ComputedColumn] = Field(default_factory=list)


class MapStage(Computing):
    """``map(input) { column = EXPR ... }``: computed and renamed columns.

    Every input column is kept, and each line adds (or replaces) a column with the value of its
    expression on the row; ``keep = [..]`` narrows the input columns to those named, ``drop =
    [..]`` leaves the named ones out (computed columns are always kept). A rename is a copy and a
    drop: ``question = instruction  drop = [instruction]``. An expression sees the input's
    columns (also those left out) and the columns computed on the lines above it.
    """

    main_only = True

    op: Literal["map"] = "map"
    keep: list[ColumnName] | None = Field(
        None, description="Input columns kept (the others left out); computed columns stay."
    )
    drop: list[ColumnName] | None = Field(None, description="Input columns left out.")

    def kept(self, columns: list[str]) -> list[str]:
        """The input columns the output keeps, in their order."""
        if self.keep is not None:
            return [c for c in columns if c in self.keep]
        return [c for c in columns if c not in (self.drop or [])]

    def output_columns(self, columns: Columns) -> Columns:
        out = {name: columns[name] for name in self.kept(list(columns))}
        return {**out, **{column.name: "any" for column in self.columns}}

    def typed_output(self, columns: Columns, typing: OutputTyping) -> Columns:
        for setting in ("keep", "drop"):
            for name in getattr(self, setting) or []:
                if name not in columns:
                    typing.error(
                        "KD0205",
                        f"`{setting}` names column `{name}`, which the data does not have",
                        self.spans.get(setting, self.span),
                        help="columns: " + ", ".join(sorted(columns)),
                    )
        out = {name: columns[name] for name in self.kept(list(columns))}
        scope = dict(columns)
        for column in self.columns:
            scope[column.name] = out[column.name] = typing.type(column.expr, scope)
        return out


class ExplodeStage(Computing):
    """``explode(input) { column = EXPR }``: one row per item of the list EXPR gives on each
    row, the item in ``column`` and the row's other columns repeated; a row whose list is empty
    or null gives no row. ``explode(gen) { instruction = split(output, "\\n") }`` makes one
    row per line of a generation."""

    main_only = True

    op: Literal["explode"] = "explode"

    def output_columns(self, columns: Columns) -> Columns:
        return {**columns, **{column.name: "any" for column in self.columns}}

    def typed_output(self, columns: Columns, typing: OutputTyping) -> Columns:
        out = dict(columns)
        for column in self.columns:
            out[column.name] = typing.type(column.expr, columns, items=True)
        return out

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        return Estimate()  # as many rows as the lists have items, known only by running


class UnionStage(StageOperator):
    """``union(a, b, ...)``: the rows of every input, input by input, with a ``source`` column
    naming the input each row comes from. The inputs must have the same columns with the same
    types (a column of unknown type goes with any)."""

    references: ClassVar[References] = {"input": DATA, "others": DATA}
    syntax_fields: ClassVar[dict[str, str]] = {"others": "its second and later arguments"}
    main_only = True

    op: Literal["union"] = "union"
    others: list[RefField] = Field(min_length=1)
    source: ColumnName = Field(
        "source", description="Column naming each row's origin (its input's name)."
    )

    @property
    def inputs(self) -> list[Any]:
        """Every input, in order."""
        return [self.input, *self.others]

    def output_columns(self, columns: Columns) -> Columns:
        return {**columns, self.source: "str"}

    def typed_output(self, columns: Columns, typing: OutputTyping) -> Columns:
        out = dict(columns)
        first = self.input.name
        for ref in self.others:
            theirs = typing.columns_of(ref.name)
            if theirs is None:
                continue
            missing = [c for c in columns if c not in theirs]
            extra = [c for c in theirs if c not in columns]
            if missing or extra:
                parts = []
                if missing:
                    parts.append("lacks " + ", ".join(f"`{c}`" for c in missing))
                if extra:
                    parts.append("has " + ", ".join(f"`{c}`" for c in extra) + " besides")
                typing.error(
                    "KD0232",
                    f"`{ref.name}` does not have the columns of `{first}`: it "
                    + " and ".join(parts),
                    ref.span,
                    help="give the inputs the same columns first, with a `map` stage "
                    "(`keep = [...]`, computed columns)",
                )
                continue
            for name, kind in columns.items():
                other = theirs[name]
                if kind == other or "any" in (kind, other):
                    out[name] = kind if other == kind else "any"
                    continue
                typing.error(
                    "KD0233",
                    f"column `{name}` holds {kind} in `{first}` but {other} in `{ref.name}`",
                    ref.span,
                    help=f"convert one of them with a `map` stage, e.g. `{name} = str({name})`",
                )
        if self.source in columns:
            typing.error(
                "KD0234",
                f"the inputs have a column `{self.source}` already, where `union` writes each "
                "row's source",
                self.spans.get("source", self.input.span),
                help='name the source column otherwise: `source = "origin"`',
            )
        out[self.source] = "str"
        return out

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        return Estimate()  # the sum over several inputs; the planner counts one input only


TRANSFORMS = (MapStage, ExplodeStage, UnionStage)

__all__ = ["ComputedColumn", "ExplodeStage", "MapStage", "OutputTyping", "UnionStage"]
