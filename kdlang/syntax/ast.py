"""The positioned syntax tree of a ``.kd`` file.

It mirrors the grammar one-to-one and keeps what the formatter needs (the literal text of numbers
and strings, blank lines between items). Meaning is given later, by lowering to the IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdlang.syntax.span import Span

# ------------------------------------------------------------------------------------------------
# Expressions
# ------------------------------------------------------------------------------------------------


@dataclass
class Expr:
    span: Span


@dataclass
class String(Expr):
    """A string literal. ``value`` is decoded; ``raw`` is the source text, quotes included."""

    value: str
    raw: str
    is_raw: bool = False
    triple: bool = False

    @property
    def content_start(self) -> tuple[int, int]:
        """(line, column) in the file of the first character of the string's content."""
        prefix = (1 if self.is_raw else 0) + (3 if self.triple else 1)
        return self.span.line, self.span.column + prefix


@dataclass
class Number(Expr):
    value: int | float
    raw: str


@dataclass
class Percent(Expr):
    """``30%``: ``value`` is the fraction (0.3)."""

    value: float
    raw: str


@dataclass
class Bool(Expr):
    value: bool


@dataclass
class Null(Expr):
    pass


@dataclass
class Ref(Expr):
    """A dotted name: ``teacher``, ``distill.student``."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass
class Transition(Expr):
    """``a -> b`` inside a call's arguments (schedules: ``linear(0.0 -> 1.0, over = 30%)``)."""

    start: Expr
    end: Expr


@dataclass
class Call(Expr):
    func: Ref
    args: list[Expr] = field(default_factory=list)
    kwargs: list[Keyword] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.func.dotted

    def kwarg(self, name: str) -> Keyword | None:
        return next((k for k in self.kwargs if k.name == name), None)


@dataclass
class ListExpr(Expr):
    items: list[Expr]


@dataclass
class MapEntry:
    key: str
    key_raw: str
    value: Expr
    span: Span


@dataclass
class MapExpr(Expr):
    entries: list[MapEntry]


@dataclass
class Range(Expr):
    low: Expr
    high: Expr


@dataclass
class Unary(Expr):
    """``-x`` or ``not x``."""

    op: str
    operand: Expr


@dataclass
class Binary(Expr):
    """Arithmetic (``+ - * /``), comparisons (``== != < <= > >= in``, ``not in``), ``and``/``or``."""

    op: str
    left: Expr
    right: Expr


# ------------------------------------------------------------------------------------------------
# Statements inside blocks
# ------------------------------------------------------------------------------------------------


@dataclass
class Stmt:
    span: Span


@dataclass
class Setting(Stmt):
    key: str
    key_span: Span
    value: Expr


@dataclass
class LossStmt(Stmt):
    """``loss NAME[(args)] weight EXPR [temperature EXPR]``."""

    name: str
    name_span: Span
    args: Call | None
    weight: Expr
    temperature: Expr | None


@dataclass
class KeepStmt(Stmt):
    condition: Expr


@dataclass
class DedupStmt(Stmt):
    column: str
    column_span: Span
    method: Expr


@dataclass
class DecontaminateStmt(Stmt):
    column: str
    column_span: Span
    against: Ref
    method: Expr | None


@dataclass
class MetricStmt(Stmt):
    name: str | None
    name_span: Span | None
    expr: Expr


@dataclass
class Block:
    span: Span
    stmts: list[Stmt]


# ------------------------------------------------------------------------------------------------
# Declarations
# ------------------------------------------------------------------------------------------------


@dataclass
class Decl:
    span: Span
    keyword: str


@dataclass
class RecipeDecl(Decl):
    title: String
    block: Block


@dataclass
class ImportDecl(Decl):
    path: String


@dataclass
class NamedDecl(Decl):
    """A declaration that defines a name: model, dataset, prompt, stage, train, eval, export."""

    name: str
    name_span: Span


@dataclass
class ModelDecl(NamedDecl):
    value: Expr


@dataclass
class DatasetDecl(NamedDecl):
    value: Expr
    block: Block | None


@dataclass
class PromptDecl(NamedDecl):
    value: Expr


@dataclass
class StageDecl(NamedDecl):
    op: Call
    block: Block | None


@dataclass
class TrainDecl(NamedDecl):
    block: Block


@dataclass
class EvalDecl(NamedDecl):
    op: Call
    block: Block | None


@dataclass
class ExportDecl(NamedDecl):
    """``export NAME to PATH`` (``name`` is the train stage exported, not a new name)."""

    path: Expr
    block: Block | None


@dataclass
class Comment:
    text: str
    span: Span


@dataclass
class Module:
    file: str
    source: str
    decls: list[Decl]
    comments: list[Comment]
