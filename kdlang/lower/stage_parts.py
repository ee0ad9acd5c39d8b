"""Lowering of the lines of a stage's block that are no settings: the ``COLUMN = EXPR`` lines
of ``map`` and ``explode``, the inputs after the first of ``union(a, b, ...)``, and a filter's
``keep``, ``dedup`` and ``decontaminate`` rules (their expressions are the expression
language's, :mod:`kdlang.expr.lower`)."""

from __future__ import annotations

# The module, its functions read when called (see kdlang.lower.declarations).
from kdlang.expr import lower as expressions
from kdlang.ir.expr import ExprNode
from kdlang.ir.selection import DecontaminateRule, DedupRule, KeepRule
from kdlang.ir.transforms import ComputedColumn, Computing, ExplodeStage, MapStage
from kdlang.ir.validation import Fields, Unlowerable
from kdlang.ir.values import Node, Ref
from kdlang.lower.settings import SettingsLowering
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import suggestion
from kdlang.syntax.span import Span

FILTER_STMTS: tuple[type[ast.Stmt], ...] = (ast.KeepStmt, ast.DedupStmt, ast.DecontaminateStmt)
"""The statements that are a filter's rules."""


def _block_settings(cls: type[Computing]) -> set[str]:
    """The names that are settings in the block of a ``map`` or ``explode``; every other
    ``NAME = EXPR`` line computes a column (``input = instruction + context`` too: the input
    is the call's argument)."""
    return set(cls.model_fields) - set(cls.syntax_fields) - {"input", "op", "span", "spans"}


class StagePartsLowering(SettingsLowering):
    """The part of the lowering that reads stage blocks' non-setting lines."""

    def computed_columns(
        self, cls: type[Computing], block: ast.Block | None
    ) -> tuple[ast.Block | None, list[ComputedColumn]]:
        """The ``COLUMN = EXPR`` lines of a block (those naming no setting of ``cls``), and the
        block without them; a line with errors is reported and left out."""
        if block is None:
            return None, []
        settings = _block_settings(cls)
        rest: list[ast.Stmt] = []
        columns: list[ComputedColumn] = []
        first: dict[str, Span] = {}
        for stmt in block.stmts:
            if not isinstance(stmt, ast.Setting) or stmt.key in settings:
                rest.append(stmt)
                continue
            if stmt.key in first:
                self.errors.error(
                    "KD0106",
                    f"column `{stmt.key}` is computed twice",
                    stmt.key_span,
                    notes=[("first computed here", first[stmt.key])],
                )
                continue
            first[stmt.key] = stmt.key_span
            try:
                expr = self.expression(stmt.value)
            except Unlowerable:
                continue
            columns.append(
                ComputedColumn(
                    name=stmt.key, expr=expr, span=stmt.span, spans={"name": stmt.key_span}
                )
            )
        return ast.Block(block.span, rest), columns

    def computed_lines(
        self,
        decl: ast.StageDecl,
        cls: type[Computing],
        fields: Fields,
        columns: list[ComputedColumn],
    ) -> None:
        """The computed columns of a ``map`` or ``explode``, and what each needs of them."""
        settings = _block_settings(cls)
        lines = [
            s
            for s in (decl.block.stmts if decl.block else [])
            if isinstance(s, ast.Setting) and s.key not in settings
        ]
        if cls is ExplodeStage and len(lines) != 1:
            self.errors.error(
                "KD0121",
                f"explode `{decl.name}` takes one `COLUMN = EXPR` line, "
                + ("it has none" if not lines else f"it has {len(lines)}"),
                lines[1].key_span if len(lines) > 1 else decl.name_span,
                help="the line names the column each item goes to: "
                '`explode(gen) { instruction = split(output, "\\n") }`',
            )
            fields.reported.add(cls.computed)
        if cls is MapStage:
            if not lines and "keep" not in fields.values and "drop" not in fields.values:
                self.errors.error(
                    "KD0120",
                    f"map `{decl.name}` changes nothing: it has no `COLUMN = EXPR` line",
                    decl.name_span,
                    help='compute a column (`prompt = question + "\\n" + context`), or '
                    "narrow the columns with `keep = [...]` or `drop = [...]`",
                )
            if "keep" in fields.values and "drop" in fields.values:
                self.errors.error(
                    "KD0120",
                    "`keep` and `drop` both narrow the columns: give one of them",
                    fields.key_spans["drop"],
                    notes=[("`keep` is here", fields.key_spans["keep"])],
                )
                fields.reported.add("drop")
        span = decl.block.span if decl.block else decl.op.span
        self.given(cls, fields, cls.computed, columns, span)

    def union_inputs(
        self, decl: ast.StageDecl, cls: type[Node], fields: Fields, others: list[ast.Expr]
    ) -> None:
        """The second and later inputs of ``union(a, b, ...)``."""
        if not others:
            self.errors.error(
                "KD0122",
                f"union `{decl.name}` has one input: it takes two or more",
                decl.op.span,
                help="union(a, b, ...) appends the rows of its inputs, one after another",
            )
            fields.reported.add("others")
            return
        span = others[0].span.to(others[-1].span)
        self.given(cls, fields, "others", [self.value(arg) for arg in others], span)

    def rules(self, block: ast.Block | None) -> list[Node]:
        """A filter's ``keep``, ``dedup`` and ``decontaminate`` lines; those with errors are
        reported and left out."""
        rules: list[Node] = []
        for stmt in block.stmts if block else []:
            if isinstance(stmt, ast.KeepStmt):
                rules.append(KeepRule(condition=self.expression(stmt.condition), span=stmt.span))
            elif isinstance(stmt, ast.DedupStmt):
                fields = Fields()
                fields.add("column", stmt.column, stmt.column_span)
                self.method(fields, stmt.method, ("exact", "minhash"), "method")
                dedup = self.validated(DedupRule, fields, stmt.span, stmt.column_span)
                if dedup is not None:
                    rules.append(dedup)
            elif isinstance(stmt, ast.DecontaminateStmt):
                fields = Fields()
                fields.add("column", stmt.column, stmt.column_span)
                fields.add(
                    "against",
                    Ref(name=stmt.against.dotted, span=stmt.against.span),
                    stmt.against.span,
                )
                if stmt.method is not None:
                    self.method(fields, stmt.method, ("ngram",), None)
                rule = self.validated(DecontaminateRule, fields, stmt.span, stmt.column_span)
                if rule is not None:
                    rules.append(rule)
        return rules

    def method(
        self, fields: Fields, expr: ast.Expr, names: tuple[str, ...], key: str | None
    ) -> None:
        """``by exact`` / ``by minhash(threshold = 0.9)`` / ``by ngram(n = 13)``."""
        name = (
            expr.dotted
            if isinstance(expr, ast.Ref)
            else expr.name
            if isinstance(expr, ast.Call)
            else None
        )
        if name not in names:
            self.errors.error(
                "KD0103",
                "expected " + " or ".join(f"`{n}`" for n in names),
                expr.span,
                help=suggestion(name, names) if name else None,
            )
            return
        if key:
            fields.add(key, name, expr.span)
        if isinstance(expr, ast.Call):
            for arg in expr.args:
                self.errors.error("KD0112", f"`{name}` takes keyword arguments", arg.span)
            for kw in expr.kwargs:
                fields.add(
                    "ngram" if (name, kw.name) == ("ngram", "n") else kw.name,
                    self.value(kw.value),
                    kw.value.span,
                    kw.value,
                    kw.span,
                )

    def expression(self, node: ast.Expr) -> ExprNode:
        """The expression-language IR of a ``keep`` condition or a ``metric``."""
        return expressions.lower_expression(node, self.errors)
