"""Prompt templates: jinja2 syntax, and every variable a column of the data it is rendered on.

Templates are parsed (never compiled or evaluated: a check cannot run a user's template) by the
environment the runtime renders with (:mod:`kdlang.check.sandbox`), and their variables are
found by a scoped walk of the syntax tree (:class:`Scan`). Positions inside the template are
shifted to positions in the ``.kd`` file, so a typo'd ``{{ questoin }}`` is reported on its own
line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from jinja2 import TemplateSyntaxError, nodes

from kdlang.check.sandbox import GLOBALS, parse
from kdlang.ir.sources import Prompt
from kdlang.syntax.diagnostics import Collector, suggestion
from kdlang.syntax.span import Span

_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_LOADERS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
}


class TemplateRefused(Exception):
    """A template kdlang will not render: ``code`` says why, ``lineno`` is its template line."""

    def __init__(self, code: str, message: str, lineno: int):
        super().__init__(message)
        self.code, self.message, self.lineno = code, message, lineno


@dataclass
class Scan:
    """What a template reads: ``free`` (names it takes from its context, which must be columns)
    and ``printed`` (those it prints as they are, ``{{ name }}``). A name is bound where jinja2
    binds it: by ``set`` after its value, by a ``for`` in the loop's body (with ``loop``), by a
    macro's parameters (with ``caller``) in its body, by ``with`` in its block; a name used
    before it is bound is free, as it is at run time."""

    free: set[str] = field(default_factory=set)
    printed: set[str] = field(default_factory=set)

    def walk(self, node: nodes.Node, bound: frozenset[str]) -> frozenset[str]:
        """Visit ``node`` with ``bound`` names in scope; the names bound after it."""
        if type(node) in _LOADERS:
            raise TemplateRefused(
                "KD0212",
                f"`{{% {_LOADERS[type(node)]} %}}` loads another template, which a prompt cannot",
                node.lineno,
            )
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name not in bound and node.name not in GLOBALS:
                self.free.add(node.name)
            return bound
        if isinstance(node, nodes.NSRef):
            return self.walk(nodes.Name(node.name, "load", lineno=node.lineno), bound)
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.Name) and child.name not in bound | GLOBALS:
                    self.printed.add(child.name)
            return self.each(node.nodes, bound)
        if isinstance(node, nodes.Assign):
            self.walk(node.node, bound)
            return self.bind(node.target, bound)
        if isinstance(node, nodes.AssignBlock):
            self.each([*([node.filter] if node.filter else []), *node.body], bound)
            return self.bind(node.target, bound)
        if isinstance(node, nodes.For):
            self.walk(node.iter, bound)
            inner = self.bind(node.target, bound | {"loop"})
            if node.test is not None:
                self.walk(node.test, inner)
            self.each(node.body, inner)
            self.each(node.else_, bound)
            return bound
        if isinstance(node, nodes.Macro | nodes.CallBlock):
            self.each(node.defaults, bound)
            inner = bound | {arg.name for arg in node.args} | {"caller", "varargs", "kwargs"}
            if isinstance(node, nodes.CallBlock):
                self.walk(node.call, bound)
            self.each(node.body, inner)
            return bound | {node.name} if isinstance(node, nodes.Macro) else bound
        if isinstance(node, nodes.With):
            self.each(node.values, bound)
            inner = bound
            for target in node.targets:
                inner = self.bind(target, inner)
            self.each(node.body, inner)
            return bound
        if isinstance(node, nodes.If):  # bound after it: what every branch binds
            self.walk(node.test, bound)
            branches = [node.body, *(e.body for e in node.elif_), node.else_]
            for clause in node.elif_:
                self.walk(clause.test, bound)
            after = [self.each(branch, bound) for branch in branches]
            return frozenset.intersection(*after)
        if isinstance(node, nodes.Block):
            self.each(node.body, bound)
            return bound
        return self.each(node.iter_child_nodes(), bound)

    def each(self, children: Iterable[nodes.Node], bound: frozenset[str]) -> frozenset[str]:
        for child in children:
            bound = self.walk(child, bound)
        return bound

    def bind(self, target: nodes.Node, bound: frozenset[str]) -> frozenset[str]:
        if isinstance(target, nodes.NSRef):
            return self.walk(target, bound)  # `set ns.x = ...` reads `ns`
        names = (
            {n.name for n in target.find_all(nodes.Name)}
            if not isinstance(target, nodes.Name)
            else {target.name}
        )
        return bound | names


def scan_template(text: str) -> Scan:
    """The variables of a template; :class:`jinja2.TemplateSyntaxError` for a syntax error,
    :class:`TemplateRefused` for a template kdlang will not render (one that loads another,
    KD0212, or nests past the parser's stack, KD0213)."""
    try:
        tree = parse(text)
        scan = Scan()
        scan.each(tree.body, frozenset())
    except RecursionError:
        raise TemplateRefused(
            "KD0213", "the template nests too deep to read", _deepest_line(text)
        ) from None
    return scan


def _deepest_line(text: str) -> int:
    """The template line where brackets and blocks nest deepest (where to split it)."""
    depth, deepest, line, where = 0, -1, 1, 1
    for match in re.finditer(r"[([{]|[)\]}]|\{%-?\s*(?:end)?\w+|\n", text):
        token = match.group(0)
        if token == "\n":
            line += 1
            continue
        if token.startswith("{%"):
            word = token.lstrip("{%- ").strip()
            if word.startswith("end"):
                depth -= 1
            elif word in {"for", "if", "macro", "call", "filter", "with", "block", "set"}:
                depth += 1
        else:
            depth += 1 if token in "([{" else -1
        if depth > deepest:
            deepest, where = depth, line
    return where


def template_variables(text: str) -> set[str]:
    """Variables a template reads from its context (loop variables and `set` names excluded)."""
    return scan_template(text).free


def printed_variables(text: str) -> set[str]:
    """Variables a template prints as they are (``{{ name }}``, no filter or attribute), less
    the names it binds itself where it prints them (loop variables, ``set``)."""
    return scan_template(text).printed


STRUCTURED = {
    "list": "a list",
    "map": "a map",
    "messages": "a conversation",
    "turn": "a turn of a conversation",
}
"""Column types whose text is no text: printed or trained on, they would be Python's ``str()``."""


def _render_help(name: str, kind: str) -> str:
    if kind == "map":
        return (
            f"print its fields (`{{{{ {name}.field }}}}`) or its JSON (`{{{{ {name} | tojson }}}}`)"
        )
    return (
        f"render its items (`{{% for x in {name} %}}...{{% endfor %}}`) or join them "
        f'(`{{{{ {name} | join(", ") }}}}`)'
    )


def check_template(
    prompt: Prompt,
    prompt_name: str,
    columns: Mapping[str, str] | None,
    errors: Collector,
    use: Span,
    extra: Set[str] = frozenset(),
    reported: set | None = None,
    source: str | None = None,
) -> None:
    """Report template syntax errors (KD0207) and variables that are no column (KD0206).

    ``source`` is the text of the file declaring the prompt: with it, positions inside a string
    whose escapes (``\\t``, ``\\u00e9``, a backslash-newline) make the decoded text differ from
    the source are mapped back exactly."""
    places = SourceMap(prompt, source)
    try:
        scan = scan_template(prompt.text)
    except (TemplateSyntaxError, TemplateRefused) as error:
        key = (prompt_name, "syntax")
        if reported is None or key not in reported:
            code = error.code if isinstance(error, TemplateRefused) else "KD0207"
            what = "cannot be used" if code == "KD0212" else "is not a valid template"
            errors.error(
                code,
                f"prompt `{prompt_name}` {what}: {error.message}",
                places.line_span(error.lineno or 1),
            )
            if reported is not None:
                reported.add(key)
        return
    variables = scan.free
    if columns is None:
        return
    for name in sorted(scan.printed):
        kind = columns.get(name)
        if kind in STRUCTURED and name not in extra:
            errors.error(
                "KD0211",
                f"prompt `{prompt_name}` prints `{name}`, which holds {STRUCTURED[kind]}, not text",
                variable_span(prompt, name, places),
                help=_render_help(name, kind),
                notes=[("the prompt is rendered here", use)],
            )
    available = set(columns) | set(extra)
    for name in sorted(variables - available):
        key = (prompt_name, name)
        if reported is not None:
            if key in reported:
                continue
            reported.add(key)
        errors.error(
            "KD0206",
            f"`{name}` in prompt `{prompt_name}` is not a column of the data it is rendered on",
            variable_span(prompt, name, places),
            help=suggestion(name, available)
            or ("columns: " + ", ".join(sorted(available)) if available else None),
            notes=[("the prompt is rendered here", use)],
        )


def variable_span(prompt: Prompt, name: str, places: SourceMap | None = None) -> Span:
    """Where ``name`` is first used inside the template, as a position in the ``.kd`` file."""
    places = places or SourceMap(prompt, None)
    word = re.compile(rf"\b{re.escape(name)}\b")
    for tag in _TAG.finditer(prompt.text):
        found = word.search(tag.group(0))
        if found:
            offset = tag.start() + found.start()
            return places.span(offset, offset + len(name))
    return prompt.spans.get("text", prompt.span)


class SourceMap:
    """Positions of a prompt's decoded text in its file.

    A raw string's text is its source, character for character; an ordinary string's escapes
    take more source characters than the text they stand for (``\\t`` two for one, a
    backslash-newline two for none), so its positions are found by walking the source literal.
    Without the source, or if the walk does not reproduce the text, the text is taken as its own
    source (exact for raw strings and strings without escapes)."""

    def __init__(self, prompt: Prompt, source: str | None):
        self.prompt = prompt
        self.positions = _walk(prompt, source) if source is not None else None

    def position(self, offset: int) -> tuple[int, int]:
        if self.positions is not None:
            return self.positions[offset]
        text = self.prompt.text
        before = text[:offset]
        line = before.count("\n")
        column = offset - (before.rfind("\n") + 1) + 1
        origin_line, origin_column = self.prompt.origin
        return origin_line + line, (origin_column + column - 1 if line == 0 else column)

    def span(self, start: int, end: int) -> Span:
        (line, column), (end_line, end_column) = self.position(start), self.position(end)
        if (end_line, end_column) <= (line, column):
            end_line, end_column = line, column + 1
        return Span(self.prompt.span.file, line, column, end_line, end_column)

    def line_span(self, template_line: int) -> Span:
        """The span of line ``template_line`` (1-based) of the template."""
        lines = self.prompt.text.split("\n")
        index = min(max(template_line, 1), len(lines)) - 1
        start = sum(len(line) + 1 for line in lines[:index])
        return self.span(start, start + len(lines[index]))


def _walk(prompt: Prompt, source: str) -> list[tuple[int, int]] | None:
    """(line, column) in the file of every character of the prompt's text, and of its end."""
    line, column = prompt.origin
    lines = source.split("\n")
    if not 1 <= line <= len(lines):
        return None
    pos = sum(len(text) + 1 for text in lines[: line - 1]) + column - 1
    text = prompt.text
    positions: list[tuple[int, int]] = []
    while len(positions) < len(text):
        if pos >= len(source):
            return None
        char = source[pos]
        if char == "\\" and not prompt.raw and pos + 1 < len(source):
            follower = source[pos + 1]
            if follower == "\n":  # line continuation: no text
                pos, line, column = pos + 2, line + 1, 1
                continue
            hexdigits = source[pos + 2 : pos + 6]
            width = 6 if follower == "u" and _is_hex(hexdigits) else 2
            positions.append((line, column))
            pos, column = pos + width, column + width
            continue
        if char != text[len(positions)]:
            return None
        positions.append((line, column))
        pos += 1
        line, column = (line + 1, 1) if char == "\n" else (line, column + 1)
    positions.append((line, column))
    return positions


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
