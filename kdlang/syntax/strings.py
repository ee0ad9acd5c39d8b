"""String literals: the four quoting forms and their escapes."""

from __future__ import annotations

from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.span import Span

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'", "\n": ""}


def decode_string(raw: str, span: Span, errors: Collector) -> tuple[str, bool, bool]:
    """Decode a STRING token. Returns (value, is_raw, triple).

    Raw strings (``r"..."``) keep every backslash, as regular expressions need. Ordinary strings
    understand ``\\n \\t \\r \\0 \\\\ \\" \\'``, ``\\uXXXX`` and a backslash before a newline
    (line continuation); any other escape is an error (KD0007) pointing at it, since a silently
    kept backslash (``"\\d"``) is almost always a regex that wanted ``r"..."``.
    """
    is_raw = raw.startswith("r")
    body = raw[1:] if is_raw else raw
    triple = body.startswith('"""')
    quote = 3 if triple else 1
    content = body[quote:-quote]
    if is_raw:
        return content, True, triple
    if "\\" not in content:  # nothing to decode (most strings; a 1 MB prompt in 1 ms)
        return content, False, triple
    out: list[str] = []
    i = 0
    line, column = span.line, span.column + quote
    while i < len(content):
        ch = content[i]
        if ch == "\\" and i + 1 < len(content):
            nxt = content[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt == "u" and _is_hex(content[i + 2 : i + 6]):
                out.append(chr(int(content[i + 2 : i + 6], 16)))
                i += 6
            else:
                where = Span(span.file, line, column, line, column + 2)
                errors.error(
                    "KD0007",
                    f"unknown escape sequence `\\{nxt}` in a string",
                    where,
                    help=f'write a raw string, r"...", to keep backslashes (regular expressions), or "\\\\{nxt}"',
                )
                out.append(content[i : i + 2])
                i += 2
            column += 2
            continue
        out.append(ch)
        if ch == "\n":
            line, column = line + 1, 1
        else:
            column += 1
        i += 1
    return "".join(out), False, triple


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
