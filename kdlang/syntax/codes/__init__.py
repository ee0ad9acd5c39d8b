"""Every diagnostic code kdlang emits, with the explanation ``kdlang explain CODE`` prints.

Ranges: KD00xx syntax, KD01xx structure and values (lowering to the IR), KD02xx names, columns,
templates and expression types (the checker), KD03xx compatibility between models, data and
losses, KD04xx files and command-line overrides; each range (or theme) has its table in a module
of this package, and :data:`CODES` joins them in code order. ``docs/diagnostics.md`` is generated
from it (``python -m kdlang.ir.vocabulary > docs/diagnostics.md``) and a test keeps them equal.

An explanation that lists what the language has (its stage operators, its losses ...) names the
list as a placeholder (``{losses}``): the IR's registries fill it in (:mod:`kdlang.ir.vocabulary`),
so a new operator or loss is listed without an edit here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kdlang.syntax.codes import (
    captured,
    checker,
    compat,
    conversations,
    datapath,
    decode,
    ecosystem,
    evaluation,
    files,
    minillm,
    operators,
    packing,
    storage,
    syntax,
    values,
)


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str


def _table() -> dict[str, Code]:
    entries = [
        Code(*entry)
        for module in (
            syntax,
            values,
            checker,
            compat,
            files,
            operators,
            conversations,
            captured,
            storage,
            evaluation,
            minillm,
            datapath,
            ecosystem,
            packing,
            decode,
        )
        for entry in module.TABLE
    ]
    table = {entry.code: entry for entry in sorted(entries, key=lambda entry: entry.code)}
    assert len(table) == len(entries), "a diagnostic code is defined twice"
    return table


CODES: dict[str, Code] = _table()


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(text: str, words: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of ``words`` replaced (other braces are the language's)."""
    return _PLACEHOLDER.sub(lambda found: words.get(found[1], found[0]), text)


def explain(code: str, words: Mapping[str, str]) -> str | None:
    """What ``code`` means, its lists filled in from ``words`` (:mod:`kdlang.ir.vocabulary`)."""
    entry = CODES.get(code.upper())
    if entry is None:
        return None
    return f"{entry.code}: {entry.title}\n\n{fill(entry.explanation, words)}\n"


def markdown(words: Mapping[str, str]) -> str:
    """The text of ``docs/diagnostics.md``."""
    lines = [
        "# Diagnostics",
        "",
        "Every error and warning kdlang reports has a code. `kdlang explain CODE` prints the",
        "explanation below; `kdlang check --format json` gives each diagnostic as an object with",
        "`severity, code, message, file, line, column, end_line, end_column, help, notes`.",
        "",
        "Codes: KD00xx syntax, KD01xx structure and values, KD02xx names, columns, templates and",
        "expressions, KD03xx compatibility between models, data and losses, KD04xx files and",
        "overrides.",
        "",
    ]
    for entry in CODES.values():
        lines += [f"## {entry.code}: {entry.title}", "", fill(entry.explanation, words), ""]
    return "\n".join(lines)
