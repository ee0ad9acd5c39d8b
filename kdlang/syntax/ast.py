"""The positioned syntax tree of a ``.kd`` file.

It mirrors the grammar one-to-one and keeps what the formatter needs (the literal text of numbers
and strings, blank lines between items). Meaning is given later, by lowering to the IR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdlang.syntax.span import Span


class Node:
    """Any node of the tree. Every node class below is a dataclass: fields in declaration order,
    given by position or by name; compared field by field; mutable, hence unhashable."""


# ------------------------------------------------------------------------------------------------
# Expressions
# ------------------------------------------------------------------------------------------------


@dataclass
class Expr(Node):
    """Any expression; ``span`` covers its source text."""

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
    """A number literal; ``raw`` is its source text (``2e-4`` stays ``2e-4``)."""

    value: int | float
    raw: str


@dataclass
class Percent(Expr):
    """``30%``: ``value`` is the fraction (0.3)."""

    value: float
    raw: str


@dataclass
class Bool(Expr):
    """``true`` or ``false``."""

    value: bool


@dataclass
class Null(Expr):
    """``null``."""

    pass


@dataclass
class Ref(Expr):
    """A dotted name: ``teacher``, ``distill.student``."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass
class Keyword(Node):
    """``name = value`` among a call's arguments."""

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
    """``func(args..., name = value, ...)``."""

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
    """``[a, b, ...]``."""

    items: list[Expr]


@dataclass
class MapEntry(Node):
    """``key: value`` in a map; ``key_raw`` is the key as written."""

    key: str
    key_raw: str
    value: Expr
    span: Span


@dataclass
class MapExpr(Expr):
    """``{key: value, ...}``."""

    entries: list[MapEntry]


@dataclass
class Index(Expr):
    """``base[index]``: an item of a list (``parts[-1]``), a character, or a map's key."""

    base: Expr
    index: Expr


@dataclass
class Member(Expr):
    """``base.name`` after a call or an index (``last(turns).content``); a field of a plain
    name is a dotted :class:`Ref`."""

    base: Expr
    name: str
    name_span: Span


@dataclass
class Range(Expr):
    """``low..high`` (inclusive at both ends)."""

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
class Stmt(Node):
    """A statement inside a block."""

    span: Span


@dataclass
class Setting(Stmt):
    """``key = value``."""

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
    """``keep CONDITION`` (filter stages)."""

    condition: Expr


@dataclass
class DedupStmt(Stmt):
    """``dedup COLUMN by METHOD`` (filter stages)."""

    column: str
    column_span: Span
    method: Expr


@dataclass
class DecontaminateStmt(Stmt):
    """``decontaminate COLUMN against DATASET [by METHOD]`` (filter stages)."""

    column: str
    column_span: Span
    against: Ref
    method: Expr | None


@dataclass
class MetricStmt(Stmt):
    """``metric [NAME =] EXPR`` (eval blocks)."""

    name: str | None
    name_span: Span | None
    expr: Expr


@dataclass
class Block(Node):
    """``{ ... }``: the statements of a declaration, in source order."""

    span: Span
    stmts: list[Stmt]


# ------------------------------------------------------------------------------------------------
# Declarations
# ------------------------------------------------------------------------------------------------


@dataclass
class Decl(Node):
    """A top-level declaration; ``keyword`` is the word that starts it."""

    span: Span
    keyword: str


@dataclass
class RecipeDecl(Decl):
    """``recipe "TITLE" { ... }``: the file's header."""

    title: String
    block: Block


@dataclass
class ImportDecl(Decl):
    """``import "PATH"``."""

    path: String


@dataclass
class NamedDecl(Decl):
    """A declaration that defines a name: model, dataset, prompt, stage, train, eval, export."""

    name: str
    name_span: Span


@dataclass
class ModelDecl(NamedDecl):
    """``model NAME = KIND(...)``."""

    value: Expr


@dataclass
class DatasetDecl(NamedDecl):
    """``dataset NAME = KIND(...) [{ ... }]``."""

    value: Expr
    block: Block | None


@dataclass
class PromptDecl(NamedDecl):
    """``prompt NAME = TEXT``."""

    value: Expr


@dataclass
class StageDecl(NamedDecl):
    """``stage NAME = OPERATOR(input) [{ ... }]``."""

    op: Call
    block: Block | None


@dataclass
class TrainDecl(NamedDecl):
    """``train NAME { ... }``."""

    block: Block


@dataclass
class EvalDecl(NamedDecl):
    """``eval NAME = evaluate(model, dataset) [{ ... }]``."""

    op: Call
    block: Block | None


@dataclass
class ExportDecl(NamedDecl):
    """``export NAME to PATH`` (``name`` is the train stage exported, not a new name)."""

    path: Expr
    block: Block | None


@dataclass
class Comment(Node):
    """A ``# ...`` comment, trailing spaces removed."""

    text: str
    span: Span


@dataclass
class Module(Node):
    """A whole file: its declarations and comments, in source order."""

    file: str
    source: str
    decls: list[Decl]
    comments: list[Comment]
