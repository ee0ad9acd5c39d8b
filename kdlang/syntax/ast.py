"""The positioned syntax tree of a ``.kd`` file.

It mirrors the grammar one-to-one and keeps what the formatter needs (the literal text of numbers
and strings, blank lines between items). Meaning is given later, by lowering to the IR.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from functools import cache

from kdlang.syntax.span import Span


class Node:
    """``__init__``, equality and repr of every node class below, as ``@dataclass`` would write
    them (fields in declaration order, positional or by name, a field's default or default
    factory when omitted; fields compared in order between nodes of one class;
    ``Class(field=value, ...)``), but written once here rather than compiled again for each of
    the forty classes whenever kdlang starts."""

    __slots__ = ()
    __hash__ = None  # mutable, hence unhashable, like any dataclass with generated equality

    def __init__(self, *args, **kwargs):
        spec, names = _init_spec(type(self))
        if len(args) > len(spec):
            raise TypeError(f"{type(self).__name__} has {len(spec)} fields, got {len(args)} values")
        if kwargs and not kwargs.keys() <= names:
            raise TypeError(f"{type(self).__name__}: no field {', '.join(kwargs.keys() - names)}")
        for index, (name, default, factory) in enumerate(spec):
            if index < len(args):
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__}: `{name}` given twice")
                value = args[index]
            elif name in kwargs:
                value = kwargs[name]
            elif default is not MISSING:
                value = default
            elif factory is not MISSING:
                value = factory()
            else:
                raise TypeError(f"{type(self).__name__}: missing `{name}`")
            setattr(self, name, value)

    def _values(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"{self.__class__.__qualname__}({shown})"


@cache
def _init_spec(cls: type) -> tuple[tuple[tuple[str, object, object], ...], frozenset[str]]:
    """(name, default, default factory) of each field of a node class, in order; their names."""
    spec = tuple((f.name, f.default, f.default_factory) for f in fields(cls))
    return spec, frozenset(name for name, _, _ in spec)


node = dataclass(init=False, repr=False, eq=False)
"""The dataclass decorator of node classes: fields declared, and ``__init__``, equality and repr
from :class:`Node`."""

# ------------------------------------------------------------------------------------------------
# Expressions
# ------------------------------------------------------------------------------------------------


@node
class Expr(Node):
    """Any expression; ``span`` covers its source text."""

    span: Span


@node
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


@node
class Number(Expr):
    """A number literal; ``raw`` is its source text (``2e-4`` stays ``2e-4``)."""

    value: int | float
    raw: str


@node
class Percent(Expr):
    """``30%``: ``value`` is the fraction (0.3)."""

    value: float
    raw: str


@node
class Bool(Expr):
    """``true`` or ``false``."""

    value: bool


@node
class Null(Expr):
    """``null``."""

    pass


@node
class Ref(Expr):
    """A dotted name: ``teacher``, ``distill.student``."""

    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@node
class Keyword(Node):
    """``name = value`` among a call's arguments."""

    name: str
    value: Expr
    span: Span


@node
class Transition(Expr):
    """``a -> b`` inside a call's arguments (schedules: ``linear(0.0 -> 1.0, over = 30%)``)."""

    start: Expr
    end: Expr


@node
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


@node
class ListExpr(Expr):
    """``[a, b, ...]``."""

    items: list[Expr]


@node
class MapEntry(Node):
    """``key: value`` in a map; ``key_raw`` is the key as written."""

    key: str
    key_raw: str
    value: Expr
    span: Span


@node
class MapExpr(Expr):
    """``{key: value, ...}``."""

    entries: list[MapEntry]


@node
class Range(Expr):
    """``low..high`` (inclusive at both ends)."""

    low: Expr
    high: Expr


@node
class Unary(Expr):
    """``-x`` or ``not x``."""

    op: str
    operand: Expr


@node
class Binary(Expr):
    """Arithmetic (``+ - * /``), comparisons (``== != < <= > >= in``, ``not in``), ``and``/``or``."""

    op: str
    left: Expr
    right: Expr


# ------------------------------------------------------------------------------------------------
# Statements inside blocks
# ------------------------------------------------------------------------------------------------


@node
class Stmt(Node):
    """A statement inside a block."""

    span: Span


@node
class Setting(Stmt):
    """``key = value``."""

    key: str
    key_span: Span
    value: Expr


@node
class LossStmt(Stmt):
    """``loss NAME[(args)] weight EXPR [temperature EXPR]``."""

    name: str
    name_span: Span
    args: Call | None
    weight: Expr
    temperature: Expr | None


@node
class KeepStmt(Stmt):
    """``keep CONDITION`` (filter stages)."""

    condition: Expr


@node
class DedupStmt(Stmt):
    """``dedup COLUMN by METHOD`` (filter stages)."""

    column: str
    column_span: Span
    method: Expr


@node
class DecontaminateStmt(Stmt):
    """``decontaminate COLUMN against DATASET [by METHOD]`` (filter stages)."""

    column: str
    column_span: Span
    against: Ref
    method: Expr | None


@node
class MetricStmt(Stmt):
    """``metric [NAME =] EXPR`` (eval blocks)."""

    name: str | None
    name_span: Span | None
    expr: Expr


@node
class Block(Node):
    """``{ ... }``: the statements of a declaration, in source order."""

    span: Span
    stmts: list[Stmt]


# ------------------------------------------------------------------------------------------------
# Declarations
# ------------------------------------------------------------------------------------------------


@node
class Decl(Node):
    """A top-level declaration; ``keyword`` is the word that starts it."""

    span: Span
    keyword: str


@node
class RecipeDecl(Decl):
    """``recipe "TITLE" { ... }``: the file's header."""

    title: String
    block: Block


@node
class ImportDecl(Decl):
    """``import "PATH"``."""

    path: String


@node
class NamedDecl(Decl):
    """A declaration that defines a name: model, dataset, prompt, stage, train, eval, export."""

    name: str
    name_span: Span


@node
class ModelDecl(NamedDecl):
    """``model NAME = KIND(...)``."""

    value: Expr


@node
class DatasetDecl(NamedDecl):
    """``dataset NAME = KIND(...) [{ ... }]``."""

    value: Expr
    block: Block | None


@node
class PromptDecl(NamedDecl):
    """``prompt NAME = TEXT``."""

    value: Expr


@node
class StageDecl(NamedDecl):
    """``stage NAME = OPERATOR(input) [{ ... }]``."""

    op: Call
    block: Block | None


@node
class TrainDecl(NamedDecl):
    """``train NAME { ... }``."""

    block: Block


@node
class EvalDecl(NamedDecl):
    """``eval NAME = evaluate(model, dataset) [{ ... }]``."""

    op: Call
    block: Block | None


@node
class ExportDecl(NamedDecl):
    """``export NAME to PATH`` (``name`` is the train stage exported, not a new name)."""

    path: Expr
    block: Block | None


@node
class Comment(Node):
    """A ``# ...`` comment, trailing spaces removed."""

    text: str
    span: Span


@node
class Module(Node):
    """A whole file: its declarations and comments, in source order."""

    file: str
    source: str
    decls: list[Decl]
    comments: list[Comment]
