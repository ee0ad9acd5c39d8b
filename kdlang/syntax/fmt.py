"""``kdlang fmt``: the canonical layout of a ``.kd`` file.

One declaration or statement per line, two-space indentation, single spaces around ``=`` and
operators, the minimal parentheses, at most one blank line where the source had any. Literals
keep their source text (``3e-4`` stays ``3e-4``, a prompt's triple-quoted text is untouched).
Comments are kept: a comment on its own line stays before the statement it preceded, a comment
after code stays at the end of that line; comments inside an expression that is printed on one
line move before its statement. The output parses to the same IR (spans aside), and formatting
it again changes nothing.
"""

from __future__ import annotations

from kdlang.syntax import ast
from kdlang.syntax.parser import parse
from kdlang.syntax.span import source_lines

INDENT = "  "
MAX_WIDTH = 100

# Binding strength: higher binds tighter.
_PREC = {
    "or": 1,
    "and": 2,
    "not": 3,
    "compare": 4,
    "range": 5,
    "+": 6,
    "-": 6,
    "*": 7,
    "/": 7,
    "neg": 8,
    "atom": 9,
}
_COMPARE = {"==", "!=", "<", "<=", ">", ">=", "in", "not in"}


def format_source(source: str, file: str = "<string>") -> str:
    """The canonical text of ``source``. Raises ``DiagnosticError`` if it does not parse."""
    return _Printer(parse(source, file)).run()


class _Printer:
    def __init__(self, module: ast.Module):
        self.module = module
        self.source_lines = source_lines(module.source)
        self.comments = sorted(module.comments, key=lambda c: (c.span.line, c.span.column))
        self.out: list[str] = []

    def run(self) -> str:
        previous_end = 0
        decls = self.module.decls
        for decl, following in _with_next(decls):
            self.leading(decl.span.line, "", previous_end)
            self.declaration(decl, _start(following))
            previous_end = decl.span.end_line
        self.leading(len(self.source_lines) + 1, "", previous_end, closing=True)
        while self.out and self.out[-1] == "":
            self.out.pop()
        return "\n".join(self.out) + "\n" if self.out else ""

    # -- comments and blank lines ------------------------------------------------------------

    def leading(self, line: int, indent: str, previous_end: int, closing: bool = False) -> None:
        """Comments before source line ``line``, and the blank lines that separated things."""
        cursor = previous_end
        while self.comments and self.comments[0].span.line < line:
            comment = self.comments.pop(0)
            self.blank_if_gap(cursor, comment.span.line)
            self.out.append(indent + comment.text)
            cursor = comment.span.line
        if not closing:
            self.blank_if_gap(cursor, line)

    def blank_if_gap(self, after: int, before: int) -> None:
        if after <= 0 or not self.out or self.out[-1] == "" or self.out[-1].endswith("{"):
            return
        if any(
            not self.source_lines[n - 1].strip()
            for n in range(after + 1, before)
            if n <= len(self.source_lines)
        ):
            self.out.append("")

    def emit(
        self, text: str, source_line: int, indent: str, before: tuple[int, int] | None = None
    ) -> None:
        """One output line for what ends on ``source_line``, with that line's trailing comment.

        Comments that sat inside a multi-line construct printed here on one line go first. A
        comment at or after ``before`` (where the next thing on the same source line starts)
        belongs to that next thing."""
        inner = [c for c in self.comments if c.span.line < source_line]
        for comment in inner:
            self.comments.remove(comment)
            self.out.append(indent + comment.text)
        trailing = [
            c
            for c in self.comments
            if c.span.line == source_line
            and (before is None or (c.span.line, c.span.column) < before)
        ]
        for comment in trailing:
            self.comments.remove(comment)
        suffix = "".join("  " + c.text for c in trailing)
        self.out.append(indent + text + suffix)

    # -- declarations ------------------------------------------------------------------------

    def declaration(self, decl: ast.Decl, before: tuple[int, int] | None = None) -> None:
        head, block = _head(decl, self.expr)
        if len(head) > MAX_WIDTH:
            head, _ = _head(decl, lambda node: self.wrapped(node, ""))
        if block is None:
            self.emit(head, decl.span.end_line, "", before)
            return
        self.block(head, block, "", before)

    def block(
        self, head: str, block: ast.Block, indent: str, before: tuple[int, int] | None = None
    ) -> None:
        if not block.stmts and not any(
            block.span.line <= c.span.line < block.span.end_line for c in self.comments
        ):
            self.emit(head + " {}", block.span.end_line, indent, before)
            return
        stmts = block.stmts
        self.emit(head + " {", block.span.line, indent, _start(stmts[0] if stmts else None))
        inner = indent + INDENT
        previous_end = block.span.line
        for stmt, following in _with_next(stmts):
            self.leading(stmt.span.line, inner, previous_end)
            self.emit(self.statement(stmt, inner), stmt.span.end_line, inner, _start(following))
            previous_end = stmt.span.end_line
        self.leading(block.span.end_line, inner, previous_end, closing=True)
        self.emit("}", block.span.end_line, indent, before)

    def statement(self, stmt: ast.Stmt, indent: str = INDENT) -> str:
        if isinstance(stmt, ast.Setting):
            text = f"{stmt.key} = {self.expr(stmt.value)}"
            if len(indent + text) > MAX_WIDTH:
                text = f"{stmt.key} = {self.wrapped(stmt.value, indent)}"
            return text
        if isinstance(stmt, ast.LossStmt):
            text = f"loss {stmt.name}"
            if stmt.args is not None:
                text += self.arguments(stmt.args)
            text += f" weight {self.expr(stmt.weight)}"
            if stmt.temperature is not None:
                text += f" temperature {self.expr(stmt.temperature)}"
            return text
        if isinstance(stmt, ast.KeepStmt):
            return f"keep {self.expr(stmt.condition)}"
        if isinstance(stmt, ast.DedupStmt):
            return f"dedup {stmt.column} by {self.expr(stmt.method)}"
        if isinstance(stmt, ast.DecontaminateStmt):
            text = f"decontaminate {stmt.column} against {stmt.against.dotted}"
            return text + (f" by {self.expr(stmt.method)}" if stmt.method is not None else "")
        if isinstance(stmt, ast.MetricStmt):
            return "metric " + (f"{stmt.name} = " if stmt.name else "") + self.expr(stmt.expr)
        raise AssertionError(type(stmt))

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, node: ast.Expr, need: int = 0) -> str:
        text, prec = self._expr(node)
        return f"({text})" if prec < need else text

    def _expr(self, node: ast.Expr) -> tuple[str, int]:
        atom = _PREC["atom"]
        if isinstance(node, ast.String | ast.Number | ast.Percent):
            if isinstance(node, ast.Number | ast.Percent) and node.raw.startswith("-"):
                return node.raw, _PREC["neg"]
            return node.raw, atom
        if isinstance(node, ast.Bool):
            return ("true" if node.value else "false"), atom
        if isinstance(node, ast.Null):
            return "null", atom
        if isinstance(node, ast.Ref):
            return node.dotted, atom
        if isinstance(node, ast.Call):
            return node.name + self.arguments(node), atom
        if isinstance(node, ast.Index):
            return f"{self.expr(node.base, atom)}[{self.expr(node.index)}]", atom
        if isinstance(node, ast.Member):
            return f"{self.expr(node.base, atom)}.{node.name}", atom
        if isinstance(node, ast.ListExpr):
            return "[" + ", ".join(self.expr(i) for i in node.items) + "]", atom
        if isinstance(node, ast.MapExpr):
            return "{" + ", ".join(
                f"{e.key_raw}: {self.expr(e.value)}" for e in node.entries
            ) + "}", atom
        if isinstance(node, ast.Transition):
            return f"{self.expr(node.start)} -> {self.expr(node.end)}", 0
        if isinstance(node, ast.Range):
            level = _PREC["range"]
            return f"{self.expr(node.low, level + 1)}..{self.expr(node.high, level + 1)}", level
        if isinstance(node, ast.Unary):
            if node.op == "not":
                return f"not {self.expr(node.operand, _PREC['not'])}", _PREC["not"]
            return f"-{self.expr(node.operand, _PREC['neg'])}", _PREC["neg"]
        if isinstance(node, ast.Binary):
            if node.op in _COMPARE:
                level = _PREC["compare"]
                return (
                    f"{self.expr(node.left, level + 1)} {node.op} {self.expr(node.right, level + 1)}",
                    level,
                )
            level = _PREC[node.op]
            return (
                f"{self.expr(node.left, level)} {node.op} {self.expr(node.right, level + 1)}",
                level,
            )
        raise AssertionError(type(node))

    def wrapped(self, node: ast.Expr, indent: str) -> str:
        """A call, list or map too long for one line: one argument, item or entry per line, each
        of them wrapped the same way while it is still too long."""
        inner = indent + INDENT

        def part(prefix: str, value: ast.Expr) -> str:
            text = prefix + self.expr(value)
            if len(inner + text) + 1 > MAX_WIDTH:  # + 1: the comma that ends the line
                text = prefix + self.wrapped(value, inner)
            return text

        def lines(opening: str, parts: list[str], closing: str) -> str:
            return opening + "\n" + "".join(f"{inner}{p},\n" for p in parts) + indent + closing

        if isinstance(node, ast.Call) and (node.args or node.kwargs):
            parts = [part("", a) for a in node.args]
            parts += [part(f"{k.name} = ", k.value) for k in node.kwargs]
            return lines(node.name + "(", parts, ")")
        if isinstance(node, ast.ListExpr) and node.items:
            return lines("[", [part("", i) for i in node.items], "]")
        if isinstance(node, ast.MapExpr) and node.entries:
            return lines("{", [part(f"{e.key_raw}: ", e.value) for e in node.entries], "}")
        return self.expr(node)

    def arguments(self, call: ast.Call) -> str:
        parts = [self.expr(a) for a in call.args]
        parts += [f"{k.name} = {self.expr(k.value)}" for k in call.kwargs]
        return "(" + ", ".join(parts) + ")"


def _with_next(items: list) -> zip:
    """Each item with the one after it (None after the last)."""
    return zip(items, [*items[1:], None], strict=False)


def _start(node: ast.Decl | ast.Stmt | None) -> tuple[int, int] | None:
    return (node.span.line, node.span.column) if node is not None else None


def _head(decl: ast.Decl, expr) -> tuple[str, ast.Block | None]:
    if isinstance(decl, ast.RecipeDecl):
        return f"recipe {decl.title.raw}", decl.block
    if isinstance(decl, ast.ImportDecl):
        return f"import {decl.path.raw}", None
    if isinstance(decl, ast.ModelDecl | ast.PromptDecl):
        return f"{decl.keyword} {decl.name} = {expr(decl.value)}", None
    if isinstance(decl, ast.DatasetDecl):
        return f"dataset {decl.name} = {expr(decl.value)}", decl.block
    if isinstance(decl, ast.StageDecl | ast.EvalDecl):
        return f"{decl.keyword} {decl.name} = {expr(decl.op)}", decl.block
    if isinstance(decl, ast.TrainDecl):
        return f"train {decl.name}", decl.block
    if isinstance(decl, ast.ExportDecl):
        return f"export {decl.name} to {expr(decl.path)}", decl.block
    raise AssertionError(type(decl))
