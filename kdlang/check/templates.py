"""Prompt templates: jinja2 syntax, and every variable a column of the data it is rendered on.

Templates are parsed by jinja2's ``SandboxedEnvironment`` (the one the runtime renders with, so
a template cannot reach Python internals) and positions inside the template are shifted to
positions in the ``.kd`` file, so a typo'd ``{{ questoin }}`` is reported on its own line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from kdlang.ir.sources import Prompt
from kdlang.syntax.diagnostics import Collector, suggestion
from kdlang.syntax.span import Span

_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    """The one jinja2 environment of kdlang: sandboxed, undefined variables are errors, text kept
    as written (no whitespace trimming, final newline kept)."""
    return SandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def template_variables(text: str) -> set[str]:
    """Variables a template reads from its context (loop variables and `set` names excluded)."""
    return set(meta.find_undeclared_variables(environment().parse(text)))


def printed_variables(text: str) -> set[str]:
    """Variables a template prints as they are (``{{ name }}``, no filter or attribute), less
    the names it assigns itself (loop variables, ``set``)."""
    tree = environment().parse(text)
    assigned = {
        name.name
        for node in tree.find_all((nodes.For, nodes.Assign))
        if isinstance(node, nodes.For | nodes.Assign)
        for name in node.target.find_all(nodes.Name)
    } | {n.target.name for n in tree.find_all(nodes.Assign) if isinstance(n.target, nodes.Name)}
    printed = {
        child.name
        for output in tree.find_all(nodes.Output)
        for child in output.nodes
        if isinstance(child, nodes.Name)
    }
    return printed - assigned


STRUCTURED = {"list": "a list", "map": "a map"}
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
        variables = template_variables(prompt.text)
    except TemplateSyntaxError as error:
        key = (prompt_name, "syntax")
        if reported is None or key not in reported:
            errors.error(
                "KD0207",
                f"prompt `{prompt_name}` is not a valid template: {error.message}",
                places.line_span(error.lineno or 1),
            )
            if reported is not None:
                reported.add(key)
        return
    if columns is None:
        return
    for name in sorted(printed_variables(prompt.text)):
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
