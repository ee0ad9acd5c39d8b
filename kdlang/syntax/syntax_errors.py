"""Turning Lark's parse errors into diagnostics that name the mistake.

Only the first syntax error of a file is reported (after it, the parser's picture of the file is
a guess). The rules below go from the most specific mistake to the least, each reading what
:mod:`kdlang.syntax.parse_failure` found about the failure: brackets left open, a value left
empty, a setting outside any block, a missing comma or ``=``. Common mistakes otherwise get
their own code from the broken example whose failure matches ours and, when none does, from the
set of tokens the parser would have accepted. "Missing X" errors point just after the previous
token, where the X belongs, rather than at whatever follows.
"""

from __future__ import annotations

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from kdlang.syntax.diagnostics import Diagnostic
from kdlang.syntax.parse_failure import (
    CLOSERS,
    DECLARATION_KEYWORDS,
    OPENERS,
    VALUE_STARTS,
    Lexed,
    accepted,
    after,
    before,
    classify,
    current_declaration,
    expected_help,
    following,
    keyword_setting_without_equals,
    lex_prefix,
    matching_example,
    missing_separator,
    pair,
    previous_token,
    span_of,
    unclosed_opener,
    value_left_empty,
)
from kdlang.syntax.span import Span, source_lines

GIVE_A_VALUE = "give a value: a string, number, list, name or call"

BLOCKLESS = {
    "MODEL": 'give its settings in the call: `hf("...", dtype = bfloat16, lora = lora(r = 16))`',
    "PROMPT": 'a prompt is its template string: `prompt NAME = "..."`',
    "IMPORT": 'an import is a file name alone: `import "common.kd"`',
}
"""Declarations written without a ``{ ... }`` block, and how their settings are given instead."""


def syntax_diagnostic(error: UnexpectedInput, source: str, file: str) -> Diagnostic:
    """The one diagnostic describing a parse failure."""
    if isinstance(error, UnexpectedCharacters):
        return _bad_character(error, source, file)
    assert isinstance(error, UnexpectedToken | UnexpectedEOF)
    tokens = lex_prefix(source)
    expected = accepted(error)
    if isinstance(error, UnexpectedEOF) or error.token.type == "$END":
        return _end_of_file(tokens, expected, file)
    return _unexpected_token(Lexed.of(error.token), error, tokens, expected, file)


def _end_of_file(tokens: list[Lexed], expected: set[str], file: str) -> Diagnostic:
    opener = unclosed_opener(tokens)
    if opener is not None:
        return Diagnostic(
            "KD0004",
            f"unclosed `{opener.value}`: the file ends before it is closed",
            span_of(file, opener),
            help=f"add the matching `{pair(opener.value)}`",
        )
    after_last = after(file, tokens[-1]) if tokens else Span.point(file, 1, 1)
    if expected & (VALUE_STARTS - {"NAME"}):
        return Diagnostic("KD0008", "missing value at end of file", after_last)
    return Diagnostic("KD0002", "unexpected end of file", after_last, help=expected_help(expected))


def _unexpected_token(
    token: Lexed, error: UnexpectedInput, tokens: list[Lexed], expected: set[str], file: str
) -> Diagnostic:
    """A token the parser could not take: the rules from the most specific mistake to the
    least."""
    at = span_of(file, token)
    previous = previous_token(tokens, token)
    after_previous = after(file, previous) if previous is not None else Span.point(file, 1, 1)

    left_empty = value_left_empty(tokens, token)
    if left_empty is not None:
        return Diagnostic(
            "KD0008",
            f"missing value after `{left_empty.value}`",
            after(file, left_empty),
            help=GIVE_A_VALUE,
        )
    if token.type in DECLARATION_KEYWORDS and token.column == 1:
        opener = unclosed_opener(before(tokens, token))
        if opener is not None:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}` before the next declaration",
                span_of(file, opener),
                help=f"add the matching `{pair(opener.value)}` before line {token.line}",
            )
    # `samples =` left empty reads the next setting's name (or keyword: `prompt`) as its value.
    if token.type == "EQUAL" and previous is not None and previous.value.isidentifier():
        setting = previous_token(tokens, previous)
        if setting is not None and setting.type == "EQUAL":
            return Diagnostic("KD0008", "missing value", after(file, setting), help=GIVE_A_VALUE)
    if token.type in CLOSERS and token.type not in expected:
        opener = unclosed_opener(before(tokens, token))
        if opener is not None and OPENERS[opener.type] != token.type:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}`: `{token.value}` on line {token.line} does not close it",
                span_of(file, opener),
                help=f"add the matching `{pair(opener.value)}` before that `{token.value}`",
            )
    if token.type == "LBRACE" and expected <= DECLARATION_KEYWORDS | {"$END"}:
        declaration = current_declaration(tokens, token)
        if declaration is not None and declaration.type in BLOCKLESS:
            return Diagnostic(
                "KD0002",
                f"a `{declaration.value}` declaration takes no block",
                at,
                help=BLOCKLESS[declaration.type],
            )
    if token.type == "NAME" and expected <= DECLARATION_KEYWORDS | {"$END"}:
        next_token = following(tokens, token, 1)
        if next_token and next_token[0].type == "EQUAL":
            return Diagnostic(
                "KD0002",
                f"setting `{token.value}` outside any block",
                at,
                help="settings belong inside a declaration's `{ ... }`; "
                "check whether a `}` above closes its block too early",
            )
    separator = missing_separator(tokens, token, expected)
    if separator is not None:
        return Diagnostic(
            "KD0002",
            f"missing `,` between {separator}",
            after_previous,
            help=f"separate {separator} with commas",
        )
    if keyword_setting_without_equals(tokens, token, expected):
        return Diagnostic(
            "KD0005",
            "missing `=`",
            after(file, token),
            help=f"write `{token.value} = ...` to give the setting its value",
        )
    return _coded(token, error, expected, previous, at, after_previous)


def _coded(
    token: Lexed,
    error: UnexpectedInput,
    expected: set[str],
    previous: Lexed | None,
    at: Span,
    after_previous: Span,
) -> Diagnostic:
    """The diagnostic of the code a broken example or the accepted terminals give."""
    code = matching_example(error)
    if code == "KD0006" and token.type != "COMMA":
        code = None
    if code == "KD0005" and token.type not in VALUE_STARTS | {"MINUS"}:
        code = None
    if code is None:
        code = classify(token, expected, previous)
    if code == "KD0005":
        return Diagnostic(
            "KD0005",
            "missing `=`",
            after_previous,
            help=f"write `= {token.value}` to give the value",
        )
    if code == "KD0006":
        return Diagnostic(
            "KD0006",
            "unexpected `,` between settings",
            at,
            help="settings in a block are separated by spaces or new lines; remove the comma",
        )
    if code == "KD0009":
        return Diagnostic(
            "KD0009",
            "loss line without `weight`",
            after_previous,
            help="write `loss NAME weight 1.0` (the weight is required)",
        )
    if code == "KD0008":
        return Diagnostic(
            "KD0008",
            f"missing value before `{token.value}`",
            after_previous,
            help=GIVE_A_VALUE,
        )
    if code == "KD0010":
        return Diagnostic(
            "KD0010",
            f"unexpected `{token.value}`: it closes nothing",
            at,
            help="remove it, or add the opening bracket it was meant to close",
        )
    found = f"name `{token.value}`" if token.type == "NAME" else f"`{token.value}`"
    return Diagnostic("KD0002", f"unexpected {found}", at, help=expected_help(expected))


def _bad_character(error: UnexpectedCharacters, source: str, file: str) -> Diagnostic:
    char = error.char
    line_text = source_lines(source)[error.line - 1] if source else ""
    if char in "\"'":
        end = len(line_text) + 1
        # Lark declares `pos_in_stream` None on its base class; the lexer's error sets the index.
        pos_in_stream: object = error.pos_in_stream
        assert isinstance(pos_in_stream, int)
        column, pos = error.column, pos_in_stream
        if source[max(0, pos - 2) : pos + 1] == '"""':  # `""` lexed as an empty string first
            column, pos = column - 2, pos - 2
        if column > 1 and line_text[column - 2] == "r":
            column, pos = column - 1, pos - 1
        quote = '"""' if '"""' in source[pos : pos + 4] else char
        return Diagnostic(
            "KD0003",
            "unclosed string",
            Span(file, error.line, column, error.line, max(end, column + 1)),
            help=f"close it with {quote}"
            + ("" if len(quote) == 3 else '; use """...""" for text over several lines'),
        )
    if char == "`":
        return Diagnostic(
            "KD0001",
            "unexpected character '`'",
            Span.point(file, error.line, error.column),
            help="strings are quoted with \" or ', not backticks",
        )
    return Diagnostic(
        "KD0001",
        f"unexpected character `{char}`",
        Span.point(file, error.line, error.column),
        help="remove it, or put it inside a string",
    )
