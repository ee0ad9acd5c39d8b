"""Prompt templates: jinja2 syntax, and every variable a column of the data it is rendered on.

Templates are parsed by jinja2's ``SandboxedEnvironment`` (the one the runtime renders with, so
a template cannot reach Python internals) and positions inside the template are shifted to
positions in the ``.kd`` file, so a typo'd ``{{ questoin }}`` is reported on its own line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
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


def check_template(
    prompt: Prompt,
    prompt_name: str,
    columns: Mapping[str, str] | None,
    errors: Collector,
    use: Span,
    extra: set[str] = frozenset(),
    reported: set | None = None,
) -> None:
    """Report template syntax errors (KD0207) and variables that are no column (KD0206)."""
    try:
        variables = template_variables(prompt.text)
    except TemplateSyntaxError as error:
        key = (prompt_name, "syntax")
        if reported is None or key not in reported:
            errors.error(
                "KD0207",
                f"prompt `{prompt_name}` is not a valid template: {error.message}",
                _line_span(prompt, error.lineno or 1),
            )
            if reported is not None:
                reported.add(key)
        return
    if columns is None:
        return
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
            variable_span(prompt, name),
            help=suggestion(name, available)
            or ("columns: " + ", ".join(sorted(available)) if available else None),
            notes=[("the prompt is rendered here", use)],
        )


def variable_span(prompt: Prompt, name: str) -> Span:
    """Where ``name`` is first used inside the template, as a position in the ``.kd`` file."""
    word = re.compile(rf"\b{re.escape(name)}\b")
    for tag in _TAG.finditer(prompt.text):
        found = word.search(tag.group(0))
        if found:
            offset = tag.start() + found.start()
            return _offset_span(prompt, offset, len(name))
    return prompt.spans.get("text", prompt.span)


def _offset_span(prompt: Prompt, offset: int, length: int) -> Span:
    before = prompt.text[:offset]
    line = before.count("\n")
    column = offset - (before.rfind("\n") + 1) + 1
    origin_line, origin_column = prompt.origin
    file_line = origin_line + line
    file_column = origin_column + column - 1 if line == 0 else column
    return Span(prompt.span.file, file_line, file_column, file_line, file_column + length)


def _line_span(prompt: Prompt, template_line: int) -> Span:
    lines = prompt.text.split("\n")
    index = min(max(template_line, 1), len(lines)) - 1
    offset = sum(len(line) + 1 for line in lines[:index])
    return _offset_span(prompt, offset, max(1, len(lines[index])))
