"""``--set PATH=VALUE``: changing a recipe's settings from the command line.

Paths: ``recipe.seed``; ``DECL.setting`` (``distill.lr``, ``rationales.samples``,
``teacher.dtype``); ``TRAIN.loss.LOSS.weight|temperature|option`` (``distill.loss.forward_kl.
weight``). The value is an expression of the language (``1e-4``, ``"text"``, ``linear(0 -> 1)``,
``[1, 2]``). An override replaces the setting in the syntax tree before lowering, so it is
validated exactly like the recipe's own text; its diagnostics point into the ``--set`` text.
``DECL`` may be declared in the checked file or in any file it imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdlang.ir.descriptor import reading_order
from kdlang.ir.losses import LOSSES
from kdlang.ir.sources import (
    DATASET_KINDS,
    DATASET_POSITIONAL,
    MODEL_KINDS,
    MODEL_POSITIONAL,
    RecipeHeader,
)
from kdlang.ir.stages import STAGE_OPERATORS
from kdlang.ir.training import Evaluate, Train
from kdlang.ir.values import Node
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, DiagnosticError, suggestion
from kdlang.syntax.parser import parse_expression
from kdlang.syntax.span import Span

if TYPE_CHECKING:
    from kdlang.check.program import Program

_PREFIX = len("prompt __value__ = ")
_INTERNAL = {"span", "spans", "kind", "op", "name", "rule", "losses", "rules", "metrics", "input"}


@dataclass
class Override:
    path: str
    value: ast.Expr
    file: str
    path_span: Span


class Overrides:
    """The ``--set`` overrides of one command, applied to each file as it is loaded: an override
    changes the declaration it names in whichever file declares it (the root file or one it
    imports); ``recipe.*`` changes the root file's header."""

    def __init__(self, items: list[Override], sources: dict[str, str]):
        self.items = items
        self.sources = sources
        self.applied: set[int] = set()
        self.names: list[str] = []
        """Every declared name met so far (for "did you mean" on an override that matched none)."""

    @classmethod
    def parse(cls, texts: list[str], errors: Collector) -> Overrides:
        items, sources = [], {}
        for file, text in zip(source_names(texts), texts, strict=True):
            sources[file] = text
            if "=" not in text:
                errors.error(
                    "KD0404",
                    f"an override is PATH=VALUE, got `{text}`",
                    Span(file, 1, 1, 1, len(text) + 1),
                )
                continue
            path, value = text.split("=", 1)
            offset = len(path) + 1 - _PREFIX
            try:
                expr = parse_expression(value, file)
            except DiagnosticError as failure:
                errors.extend(
                    d._replace(span=_shift(d.span, offset), code="KD0404")
                    for d in failure.diagnostics
                )
                continue
            items.append(
                Override(
                    path.strip(),
                    _shift_tree(expr, offset),
                    file,
                    Span(file, 1, 1, 1, len(path) + 1),
                )
            )
        return cls(items, sources)

    def apply(self, module: ast.Module, program: Program, errors: Collector, root: bool) -> None:
        """Apply, to ``module`` (``root``: the file checked), the overrides naming what it
        declares."""
        if root:
            program.sources.update(self.sources)
        declared = _declared(module)
        self.names.extend(declared)
        for index, item in enumerate(self.items):
            if index in self.applied:
                continue
            head = item.path.split(".")[0]
            if "." not in item.path or (head == "recipe" and root) or head in declared:
                self.applied.add(index)
                _apply(item, module, declared, errors)

    def report_unmatched(self, root: str, errors: Collector) -> None:
        """KD0401 for each override whose declaration no loaded file declares."""
        for index, item in enumerate(self.items):
            if index not in self.applied:
                head = item.path.split(".")[0]
                errors.error(
                    "KD0401",
                    f"override path `{item.path}`: no declaration `{head}` in {root} "
                    "or the files it imports",
                    item.path_span,
                    help=suggestion(head, [*self.names, "recipe"]),
                )


def source_names(texts: list[str]) -> list[str]:
    """The name each ``--set`` text goes by in diagnostics: ``--set PATH``, numbered when one
    path is given more than once, so that every diagnostic shows its own text."""
    names: list[str] = []
    for text in texts:
        name = f"--set {text.split('=', 1)[0].strip()}"
        if name in names:
            name += f" (#{sum(n == name or n.startswith(name + ' (#') for n in names) + 1})"
        names.append(name)
    return names


def _declared(module: ast.Module) -> dict[str, ast.NamedDecl]:
    return {
        d.name: d
        for d in module.decls
        if isinstance(d, ast.NamedDecl) and not isinstance(d, ast.ExportDecl)
    }


def _apply(
    item: Override, module: ast.Module, named: dict[str, ast.NamedDecl], errors: Collector
) -> None:
    parts = item.path.split(".")
    if len(parts) < 2:
        errors.error(
            "KD0401",
            f"override path `{item.path}` names no setting",
            item.path_span,
            help="paths look like distill.lr or recipe.seed",
        )
        return
    head, rest = parts[0], parts[1:]
    if head == "recipe":
        header = next((d for d in module.decls if isinstance(d, ast.RecipeDecl)), None)
        if header is None:
            title = ast.String(item.path_span, module.file, f'"{module.file}"')
            header = ast.RecipeDecl(item.path_span, "recipe", title, ast.Block(item.path_span, []))
            module.decls.insert(0, header)
        _set(header, None, header.block, rest, RecipeHeader, item, errors)
        return
    decl = named[head]
    if rest[0] == "loss" and isinstance(decl, ast.TrainDecl):
        _set_loss(decl, rest[1:], item, errors)
        return
    cls, call = _target(decl)
    if cls is None:
        errors.error(
            "KD0401",
            f"override path `{item.path}`: `{head}` has no settings to override",
            item.path_span,
        )
        return
    _set(decl, call, _settings_block(decl), rest, cls, item, errors)


def _settings_block(decl: ast.NamedDecl) -> ast.Block | None:
    """The block of ``decl``'s settings, made (empty) where the declaration may have one and
    has none; None for a model, whose settings are all in its call."""
    if isinstance(decl, ast.DatasetDecl | ast.StageDecl | ast.EvalDecl | ast.ExportDecl):
        if decl.block is None:
            decl.block = ast.Block(decl.span, [])
        return decl.block
    if isinstance(decl, ast.TrainDecl):
        return decl.block
    return None


def _target(decl: ast.NamedDecl) -> tuple[type[Node] | None, ast.Call | None]:
    """The class validating ``decl``'s settings, and the call holding some of them."""
    if isinstance(decl, ast.ModelDecl) and isinstance(decl.value, ast.Call):
        return MODEL_KINDS.get(decl.value.name), decl.value
    if isinstance(decl, ast.DatasetDecl) and isinstance(decl.value, ast.Call):
        return DATASET_KINDS.get(decl.value.name), decl.value
    if isinstance(decl, ast.StageDecl):
        return STAGE_OPERATORS.get(decl.op.name), decl.op
    if isinstance(decl, ast.TrainDecl):
        return Train, None
    if isinstance(decl, ast.EvalDecl):
        return Evaluate, decl.op
    return None, None


def _set(
    decl: ast.Decl,
    call: ast.Call | None,
    block: ast.Block | None,
    rest: list[str],
    cls: type[Node],
    item: Override,
    errors: Collector,
) -> None:
    key = rest[0]
    known = [name for name in reading_order(cls) if name not in _INTERNAL]
    if len(rest) != 1 or key not in known:
        errors.error(
            "KD0401",
            f"override path `{item.path}`: no setting `{'.'.join(rest)}` here",
            item.path_span,
            help=suggestion(key, known) or _listing(known),
        )
        return
    if call is not None:
        positional = _positional(decl, call)
        if key in positional and positional.index(key) < len(call.args):
            call.args[positional.index(key)] = item.value
            return
        for kw in call.kwargs:
            if kw.name == key:
                kw.value = item.value
                return
    if block is None:
        if call is None:
            return
        call.kwargs.append(ast.Keyword(key, item.value, item.path_span))
        return
    for stmt in block.stmts:
        if isinstance(stmt, ast.Setting) and stmt.key == key:
            stmt.value = item.value
            return
    block.stmts.append(ast.Setting(item.path_span, key, item.path_span, item.value))


def _positional(decl: ast.Decl, call: ast.Call) -> tuple[str, ...]:
    """Names of the settings a call takes positionally (`hf("path")`, `label(input)`)."""
    if isinstance(decl, ast.ModelDecl):
        return MODEL_POSITIONAL.get(call.name, ())
    if isinstance(decl, ast.DatasetDecl):
        return DATASET_POSITIONAL.get(call.name, ())
    if isinstance(decl, ast.StageDecl):
        return ("input",)
    if isinstance(decl, ast.EvalDecl):
        return ("model", "data")
    return ()


def _set_loss(decl: ast.TrainDecl, rest: list[str], item: Override, errors: Collector) -> None:
    losses = {s.name: s for s in decl.block.stmts if isinstance(s, ast.LossStmt)}
    if len(rest) != 2 or rest[0] not in losses:
        errors.error(
            "KD0401",
            f"override path `{item.path}`: expected {decl.name}.loss.LOSS.SETTING with LOSS one of "
            + ", ".join(losses),
            item.path_span,
            help=suggestion(rest[0], losses) if rest else None,
        )
        return
    stmt, key = losses[rest[0]], rest[1]
    known = [name for name in LOSSES[stmt.name].model_fields if name not in _INTERNAL]
    if key not in known:
        errors.error(
            "KD0401",
            f"override path `{item.path}`: loss `{stmt.name}` has no setting `{key}`",
            item.path_span,
            help=suggestion(key, known) or _listing(known),
        )
        return
    if key == "weight":
        stmt.weight = item.value
    elif key == "temperature":
        stmt.temperature = item.value
    else:
        if stmt.args is None:
            stmt.args = ast.Call(item.path_span, ast.Ref(stmt.name_span, (stmt.name,)), [], [])
        for kw in stmt.args.kwargs:
            if kw.name == key:
                kw.value = item.value
                return
        stmt.args.kwargs.append(ast.Keyword(key, item.value, item.path_span))


def _listing(known: list[str]) -> str | None:
    return "settings: " + ", ".join(known) if known else None


def _shift(span: Span, offset: int) -> Span:
    return Span(
        span.file,
        span.line,
        max(1, span.column + offset),
        span.end_line,
        max(1, span.end_column + offset),
    )


def _shift_tree(node, offset: int):
    """Move every span of an expression parsed behind a prefix back onto the override's text."""
    if isinstance(node, Span):
        return _shift(node, offset)
    if isinstance(node, list):
        return [_shift_tree(n, offset) for n in node]
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        changes = {
            f.name: _shift_tree(getattr(node, f.name), offset) for f in dataclasses.fields(node)
        }
        return dataclasses.replace(node, **changes)
    return node
