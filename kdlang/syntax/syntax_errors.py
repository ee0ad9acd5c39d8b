"""Turning Lark's parse errors into diagnostics that name the mistake.

Only the first syntax error of a file is reported (after it, the parser's picture of the file is
a guess). Common mistakes get their own code through ``match_examples`` (Lark replays small
broken snippets and compares the parser state at their failure with ours) and, when no example
matches, through the set of tokens the parser would have accepted. "Missing X" errors point just
after the previous token, where the X belongs, rather than at whatever follows.
"""

from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from kdlang.syntax.diagnostics import Diagnostic
from kdlang.syntax.grammar import parser as lark_parser
from kdlang.syntax.span import Span

# Broken snippets, by the code of the mistake they show. Each must fail at its last token.
_EXAMPLES = {
    "KD0005": [
        'model m hf("x")',
        'dataset d jsonl("x")',
        'prompt p "x"',
        "stage s label(d)",
        "eval e evaluate(t, d)",
        'recipe "r" { seed 1 }',
        "train t { lr 1 }",
        "train t { lr = 1 epochs 2 }",
        "stage s = label(d) { teacher t }",
        "stage s = label(d) { prompt = p teacher t }",
    ],
    "KD0006": [
        'recipe "r" { seed = 1, }',
        "train t { lr = 1, epochs = 2 }",
        "stage s = label(d) { teacher = t, prompt = p }",
        "stage s = label(d) { samples = 4, prompt = p }",
        'stage s = label(d) { prompt = "x", teacher = t }',
        'model m = hf("x"), ',
    ],
    "KD0009": [
        "train t { loss sft 1.0 }",
        "train t { loss sft temperature 2 }",
        "train t { loss jsd(beta = 0.5) 1.0 }",
        "train t { loss sft }",
    ],
}

_HUMAN = {
    "$END": "end of file",
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "FLOAT": "a number",
    "PERCENT": "a percentage",
    "COMPARE": "a comparison",
    "MUL_OP": "`*`",
}
_DECLARATION_KEYWORDS = {
    "RECIPE",
    "IMPORT",
    "MODEL",
    "DATASET",
    "PROMPT",
    "STAGE",
    "TRAIN",
    "EVAL",
    "EXPORT",
}

_VALUE_STARTS = {
    "STRING",
    "INT",
    "FLOAT",
    "PERCENT",
    "NAME",
    "LSQB",
    "LBRACE",
    "TRUE",
    "FALSE",
    "NULL",
}
_OPENERS = {"LBRACE": "RBRACE", "LSQB": "RSQB", "LPAR": "RPAR"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


def syntax_diagnostic(error: UnexpectedInput, source: str, file: str) -> Diagnostic:
    """The one diagnostic describing a parse failure."""
    if isinstance(error, UnexpectedCharacters):
        return _bad_character(error, source, file)
    assert isinstance(error, UnexpectedToken | UnexpectedEOF)
    tokens = _lex_prefix(source)
    token = getattr(error, "token", None)
    at = _token_span(file, token) if token is not None and token.type != "$END" else None
    previous = _previous_token(tokens, token)
    after_previous = _after(file, previous) if previous is not None else Span.point(file, 1, 1)
    expected = set(getattr(error, "expected", set()) or set())

    if token is None or token.type == "$END":
        opener = _unclosed_opener(tokens)
        if opener is not None:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}`: the file ends before it is closed",
                _token_span(file, opener),
                help=f"add the matching `{_pair(opener.value)}`",
            )
        if expected & _VALUE_STARTS:
            return Diagnostic("KD0008", "missing value at end of file", after_previous)
        return Diagnostic(
            "KD0002", "unexpected end of file", after_previous, help=_expected_help(expected)
        )

    if token.type in _DECLARATION_KEYWORDS and token.column == 1:
        opener = _unclosed_opener([t for t in tokens if t.end_pos <= token.start_pos])
        if opener is not None:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}` before the next declaration",
                _token_span(file, opener),
                help=f"add the matching `{_pair(opener.value)}` before line {token.line}",
            )
    if token.type == "EQUAL" and previous is not None and previous.type == "NAME":
        before = _previous_token(tokens, previous)
        if before is not None and before.type == "EQUAL":
            return Diagnostic(
                "KD0008",
                "missing value",
                _after(file, before),
                help="give a value: a string, number, list, name or call",
            )
    code = _matching_example(error)
    if code == "KD0006" and token.type != "COMMA":
        code = None
    if code == "KD0005" and token.type not in _VALUE_STARTS | {"MINUS"}:
        code = None
    if code is None:
        code = _classify(token, expected, previous)
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
            help="give a value: a string, number, list, name or call",
        )
    if code == "KD0010":
        return Diagnostic(
            "KD0010",
            f"unexpected `{token.value}`: it closes nothing",
            at,
            help="remove it, or add the opening bracket it was meant to close",
        )
    found = "a name" if token.type == "NAME" else f"`{token.value}`"
    return Diagnostic("KD0002", f"unexpected {found}", at, help=_expected_help(expected))


def _bad_character(error: UnexpectedCharacters, source: str, file: str) -> Diagnostic:
    char = error.char
    line_text = source.splitlines()[error.line - 1] if source else ""
    if char in "\"'":
        end = len(line_text) + 1
        column, pos = error.column, error.pos_in_stream
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
    return Diagnostic(
        "KD0001",
        f"unexpected character `{char}`",
        Span.point(file, error.line, error.column),
        help=_expected_help(set(error.allowed or ())),
    )


def _matching_example(error: UnexpectedInput) -> str | None:
    try:
        return error.match_examples(lark_parser().parse, _EXAMPLES, use_accepts=True)
    except Exception:  # an example that fails differently must not hide the real error
        return None


def _classify(token: Token, expected: set[str], previous: Token | None) -> str | None:
    if "WEIGHT" in expected and "LPAR" in expected:
        return "KD0009"
    if "EQUAL" in expected and token.type != "EQUAL" and token.type in _VALUE_STARTS | {"MINUS"}:
        return "KD0005"
    if token.type == "COMMA":
        return "KD0006"
    if previous is not None and previous.type in {
        "EQUAL",
        "WEIGHT",
        "TEMPERATURE",
        "KEEP",
        "COLON",
    }:
        return "KD0008"
    if token.type in _CLOSERS and not (expected & {token.type}):
        return "KD0010"
    return None


def _lex_prefix(source: str) -> list[Token]:
    tokens: list[Token] = []
    try:
        for token in lark_parser().lex(source):
            tokens.append(token)
    except UnexpectedInput:
        pass
    return tokens


def _previous_token(tokens: list[Token], token: Token | None) -> Token | None:
    if not tokens:
        return None
    if token is None or token.type == "$END" or token.start_pos is None:
        return tokens[-1]
    before = [t for t in tokens if t.end_pos is not None and t.end_pos <= token.start_pos]
    return before[-1] if before else None


def _unclosed_opener(tokens: list[Token]) -> Token | None:
    stack: list[Token] = []
    for token in tokens:
        if token.type in _OPENERS:
            stack.append(token)
        elif token.type in _CLOSERS and stack and stack[-1].type == _CLOSERS[token.type]:
            stack.pop()
    return stack[-1] if stack else None


def _after(file: str, token: Token) -> Span:
    return Span(file, token.end_line, token.end_column, token.end_line, token.end_column + 1)


def _pair(opener: str) -> str:
    return {"{": "}", "[": "]", "(": ")"}[opener]


def _token_span(file: str, token: Token) -> Span:
    return Span.of_token(file, token)


def _expected_help(expected: set[str]) -> str | None:
    if not expected:
        return None
    names = sorted({_describe(name) for name in expected})
    if len(names) > 12:
        return None
    return "expected " + ", ".join(names)


def _describe(terminal: str) -> str:
    if terminal in _HUMAN:
        return _HUMAN[terminal]
    try:
        pattern = lark_parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()
