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
from kdlang.syntax.span import Span, source_lines

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
_STATEMENT_KEYWORDS = {"LOSS", "KEEP", "DEDUP", "DECONTAMINATE", "METRIC"}
# Tokens that an expression must follow.
_NEEDS_VALUE = {
    "EQUAL",
    "WEIGHT",
    "TEMPERATURE",
    "KEEP",
    "METRIC",
    "BY",
    "COLON",
    "COMPARE",
    "PLUS",
    "MINUS",
    "MUL_OP",
    "AND",
    "OR",
    "NOT",
    "IN",
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
    expected = _accepted(error)

    if token is None or token.type == "$END":
        opener = _unclosed_opener(tokens)
        if opener is not None:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}`: the file ends before it is closed",
                _token_span(file, opener),
                help=f"add the matching `{_pair(opener.value)}`",
            )
        if expected & (_VALUE_STARTS - {"NAME"}):
            return Diagnostic("KD0008", "missing value at end of file", after_previous)
        return Diagnostic(
            "KD0002", "unexpected end of file", after_previous, help=_expected_help(expected)
        )

    left_empty = _value_left_empty(tokens, token)
    if left_empty is not None:
        return Diagnostic(
            "KD0008",
            f"missing value after `{left_empty.value}`",
            _after(file, left_empty),
            help="give a value: a string, number, list, name or call",
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
    # `samples =` left empty reads the next setting's name (or keyword: `prompt`) as its value.
    if token.type == "EQUAL" and previous is not None and previous.value.isidentifier():
        before = _previous_token(tokens, previous)
        if before is not None and before.type == "EQUAL":
            return Diagnostic(
                "KD0008",
                "missing value",
                _after(file, before),
                help="give a value: a string, number, list, name or call",
            )
    if token.type in _CLOSERS and token.type not in expected:
        opener = _unclosed_opener([t for t in tokens if t.end_pos <= token.start_pos])
        if opener is not None and _OPENERS[opener.type] != token.type:
            return Diagnostic(
                "KD0004",
                f"unclosed `{opener.value}`: `{token.value}` on line {token.line} does not close it",
                _token_span(file, opener),
                help=f"add the matching `{_pair(opener.value)}` before that `{token.value}`",
            )
    if token.type == "LBRACE" and expected <= _DECLARATION_KEYWORDS | {"$END"}:
        declaration = _current_declaration(tokens, token)
        if declaration is not None and declaration.type in _BLOCKLESS:
            return Diagnostic(
                "KD0002",
                f"a `{declaration.value}` declaration takes no block",
                at,
                help=_BLOCKLESS[declaration.type],
            )
    if token.type == "NAME" and expected <= _DECLARATION_KEYWORDS | {"$END"}:
        following = [t for t in tokens if t.start_pos >= token.end_pos][:1]
        if following and following[0].type == "EQUAL":
            return Diagnostic(
                "KD0002",
                f"setting `{token.value}` outside any block",
                at,
                help="settings belong inside a declaration's `{ ... }`; "
                "check whether a `}` above closes its block too early",
            )
    separator = _missing_separator(tokens, token, expected)
    if separator is not None:
        return Diagnostic(
            "KD0002",
            f"missing `,` between {separator}",
            after_previous,
            help=f"separate {separator} with commas",
        )
    if _keyword_setting_without_equals(tokens, token, expected):
        return Diagnostic(
            "KD0005",
            "missing `=`",
            _after(file, token),
            help=f"write `{token.value} = ...` to give the setting its value",
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
    found = f"name `{token.value}`" if token.type == "NAME" else f"`{token.value}`"
    return Diagnostic("KD0002", f"unexpected {found}", at, help=_expected_help(expected))


def _accepted(error: UnexpectedInput) -> set[str]:
    """The terminals the parser would have accepted where it failed.

    LALR merges look-aheads, so ``error.expected`` can list tokens that only fit elsewhere
    (after a call, `}` or `]`); the interactive parser replays the pending reductions to give the
    exact set."""
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        try:
            return set(interactive.accepts())
        except Exception:  # the merged set is still a fair description
            pass
    return set(getattr(error, "expected", set()) or set())


def _bad_character(error: UnexpectedCharacters, source: str, file: str) -> Diagnostic:
    char = error.char
    line_text = source_lines(source)[error.line - 1] if source else ""
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


def _value_left_empty(tokens: list[Token], token: Token) -> Token | None:
    """The token whose value is missing, when the next line's statement keyword was read as it.

    After `weight` (or `=`, `keep`, `and` ...) the parser reads a name as the value, so in
    `loss sft weight` + newline + `loss kl weight 1` the second `loss` becomes the weight and the
    error surfaces later, at `weight`. A statement keyword that starts its line and follows a
    token still waiting for its value on an earlier line shows what happened."""
    before = [t for t in tokens if t.end_pos <= token.start_pos]
    for index in range(len(before) - 1, 0, -1):
        word = before[index]
        if word.type in _STATEMENT_KEYWORDS and _first_on_line(before, index):
            waiting = before[index - 1]
            needs_value = waiting.type in _NEEDS_VALUE or waiting.value in ("..", "->")
            return waiting if needs_value else None
    return None


def _first_on_line(tokens: list[Token], index: int) -> bool:
    return index == 0 or tokens[index - 1].end_line < tokens[index].line


def _missing_separator(tokens: list[Token], token: Token, expected: set[str]) -> str | None:
    """What lacks a comma, when a value follows a value inside brackets: `f(a b)`, `[a b]`."""
    if "COMMA" not in expected or token.type not in _VALUE_STARTS | {"MINUS"}:
        return None
    before = [t for t in tokens if t.end_pos <= token.start_pos]
    opener = _unclosed_opener(before)
    if opener is None:
        return None
    if opener.type == "LPAR":
        return "arguments"
    if opener.type == "LSQB":
        return "list items"
    previous = _previous_token(before, opener)
    if previous is not None and previous.type in {"EQUAL", "COMMA", "LPAR", "LSQB", "COLON"}:
        return "map entries"
    return None


def _keyword_setting_without_equals(tokens: list[Token], token: Token, expected: set[str]) -> bool:
    """`prompt solve` inside a block: a keyword that names a setting, without its `=`.

    The same keyword starting a declaration (`prompt solve = "..."`) after a block left open is
    reported as the unclosed block instead."""
    if token.type not in _DECLARATION_KEYWORDS - {"RECIPE", "IMPORT"} or "NAME" not in expected:
        return False
    after = [t for t in tokens if t.start_pos >= token.end_pos][:2]
    if not after or after[0].type not in _VALUE_STARTS | {"MINUS"}:
        return False
    declares = (
        after[0].type == "NAME" and len(after) > 1 and after[1].type in {"EQUAL", "LBRACE", "TO"}
    )
    return not declares


def _matching_example(error: UnexpectedInput) -> str | None:
    try:
        return error.match_examples(lark_parser().parse, _EXAMPLES, use_accepts=True)
    except Exception:  # an example that fails differently must not hide the real error
        return None


def _classify(token: Token, expected: set[str], previous: Token | None) -> str | None:
    if "WEIGHT" in expected:  # only a `loss NAME` line waits for `weight`
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
        "METRIC",
        "BY",
        "COLON",
    }:
        return "KD0008"
    # Only where an expression must come does the parser accept a string: no value follows a
    # value directly. So this is an operator, `in`, `not` ... left without its operand.
    ends_value = token.type in _CLOSERS or token.type == "COMMA" or token.value.isidentifier()
    if "STRING" in expected and token.type not in _VALUE_STARTS and ends_value:
        return "KD0008"
    if token.type in _CLOSERS and not (expected & {token.type}):
        return "KD0010"
    return None


_BLOCKLESS = {
    "MODEL": 'give its settings in the call: `hf("...", dtype = bfloat16, lora = lora(r = 16))`',
    "PROMPT": 'a prompt is its template string: `prompt NAME = "..."`',
    "IMPORT": 'an import is a file name alone: `import "common.kd"`',
}
"""Declarations written without a ``{ ... }`` block, and how their settings are given instead."""


def _current_declaration(tokens: list[Token], token: Token) -> Token | None:
    """The keyword of the declaration ``token`` is in: the last one starting a line before it."""
    for index in range(len(tokens) - 1, -1, -1):
        candidate = tokens[index]
        if candidate.end_pos > token.start_pos:
            continue
        if candidate.type in _DECLARATION_KEYWORDS and _first_on_line(tokens, index):
            return candidate
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
