"""What the parser saw where it failed: the facts :mod:`kdlang.syntax.syntax_errors` reads to
name the mistake.

The tokens of the file up to its first bad character (lexed again), the terminals the parser
would have accepted at the failure, brackets left open, and the code of the broken example
whose failure looks like ours (Lark's ``match_examples`` replays small snippets and compares
the parser state at their failure with ours) or, when none does, the code the accepted
terminals point to.
"""

from __future__ import annotations

from typing import NamedTuple

from lark import Token
from lark.exceptions import UnexpectedInput

from kdlang.syntax.grammar import parser as lark_parser
from kdlang.syntax.span import Span

# Broken snippets, by the code of the mistake they show. Each must fail at its last token.
EXAMPLES = {
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

HUMAN = {
    "$END": "end of file",
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "FLOAT": "a number",
    "PERCENT": "a percentage",
    "COMPARE": "a comparison",
    "MUL_OP": "`*`",
}
"""How a terminal is named in a message; the others are their text (keywords, punctuation)."""

DECLARATION_KEYWORDS = {
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
VALUE_STARTS = {
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
STATEMENT_KEYWORDS = {"LOSS", "KEEP", "DEDUP", "DECONTAMINATE", "METRIC"}
NEEDS_VALUE = {
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
"""Tokens that an expression must follow."""
OPENERS = {"LBRACE": "RBRACE", "LSQB": "RSQB", "LPAR": "RPAR"}
CLOSERS = {v: k for k, v in OPENERS.items()}


class Lexed(NamedTuple):
    """A token as the lexer produced it. Lark's tokens leave their positions optional (a token
    made by hand may have none); one that was lexed always has them."""

    type: str
    value: str
    start_pos: int
    end_pos: int
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def of(cls, token: Token) -> Lexed:
        start, end = token.start_pos, token.end_pos
        line, column, end_line, end_column = (
            token.line,
            token.column,
            token.end_line,
            token.end_column,
        )
        assert start is not None and end is not None, f"{token!r} was not lexed"
        assert line is not None and column is not None, f"{token!r} was not lexed"
        assert end_line is not None and end_column is not None, f"{token!r} was not lexed"
        return cls(token.type, str(token), start, end, line, column, end_line, end_column)


def lex_prefix(source: str) -> list[Lexed]:
    """The tokens of ``source`` up to the first character that no terminal matches."""
    tokens: list[Lexed] = []
    try:
        for token in lark_parser().lex(source):
            tokens.append(Lexed.of(token))
    except UnexpectedInput:
        pass
    return tokens


def accepted(error: UnexpectedInput) -> set[str]:
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


def matching_example(error: UnexpectedInput) -> str | None:
    """The code of the broken example that fails as ``error`` does."""
    try:
        return error.match_examples(lark_parser().parse, EXAMPLES, use_accepts=True)
    except Exception:  # an example that fails differently must not hide the real error
        return None


def classify(token: Lexed, expected: set[str], previous: Lexed | None) -> str | None:
    """The code the accepted terminals point to, when no example matched."""
    if "WEIGHT" in expected:  # only a `loss NAME` line waits for `weight`
        return "KD0009"
    if "EQUAL" in expected and token.type != "EQUAL" and token.type in VALUE_STARTS | {"MINUS"}:
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
    ends_value = token.type in CLOSERS or token.type == "COMMA" or token.value.isidentifier()
    if "STRING" in expected and token.type not in VALUE_STARTS and ends_value:
        return "KD0008"
    if token.type in CLOSERS and not (expected & {token.type}):
        return "KD0010"
    return None


# -- the tokens around the failure ---------------------------------------------------------------


def before(tokens: list[Lexed], token: Lexed) -> list[Lexed]:
    """The tokens that end before ``token`` starts."""
    return [t for t in tokens if t.end_pos <= token.start_pos]


def following(tokens: list[Lexed], token: Lexed, count: int) -> list[Lexed]:
    """The first ``count`` tokens that start after ``token`` ends."""
    return [t for t in tokens if t.start_pos >= token.end_pos][:count]


def previous_token(tokens: list[Lexed], token: Lexed) -> Lexed | None:
    earlier = before(tokens, token)
    return earlier[-1] if earlier else None


def first_on_line(tokens: list[Lexed], index: int) -> bool:
    return index == 0 or tokens[index - 1].end_line < tokens[index].line


def unclosed_opener(tokens: list[Lexed]) -> Lexed | None:
    """The innermost bracket that ``tokens`` leave open."""
    stack: list[Lexed] = []
    for token in tokens:
        if token.type in OPENERS:
            stack.append(token)
        elif token.type in CLOSERS and stack and stack[-1].type == CLOSERS[token.type]:
            stack.pop()
    return stack[-1] if stack else None


def value_left_empty(tokens: list[Lexed], token: Lexed) -> Lexed | None:
    """The token whose value is missing, when the next line's statement keyword was read as it.

    After `weight` (or `=`, `keep`, `and` ...) the parser reads a name as the value, so in
    `loss sft weight` + newline + `loss kl weight 1` the second `loss` becomes the weight and the
    error surfaces later, at `weight`. A statement keyword that starts its line and follows a
    token still waiting for its value on an earlier line shows what happened."""
    earlier = before(tokens, token)
    for index in range(len(earlier) - 1, 0, -1):
        word = earlier[index]
        if word.type in STATEMENT_KEYWORDS and first_on_line(earlier, index):
            waiting = earlier[index - 1]
            needs_value = waiting.type in NEEDS_VALUE or waiting.value in ("..", "->")
            return waiting if needs_value else None
    return None


def missing_separator(tokens: list[Lexed], token: Lexed, expected: set[str]) -> str | None:
    """What lacks a comma, when a value follows a value inside brackets: `f(a b)`, `[a b]`."""
    if "COMMA" not in expected or token.type not in VALUE_STARTS | {"MINUS"}:
        return None
    earlier = before(tokens, token)
    opener = unclosed_opener(earlier)
    if opener is None:
        return None
    if opener.type == "LPAR":
        return "arguments"
    if opener.type == "LSQB":
        return "list items"
    previous = previous_token(earlier, opener)
    if previous is not None and previous.type in {"EQUAL", "COMMA", "LPAR", "LSQB", "COLON"}:
        return "map entries"
    return None


def keyword_setting_without_equals(tokens: list[Lexed], token: Lexed, expected: set[str]) -> bool:
    """`prompt solve` inside a block: a keyword that names a setting, without its `=`.

    The same keyword starting a declaration (`prompt solve = "..."`) after a block left open is
    reported as the unclosed block instead."""
    if token.type not in DECLARATION_KEYWORDS - {"RECIPE", "IMPORT"} or "NAME" not in expected:
        return False
    after = following(tokens, token, 2)
    if not after or after[0].type not in VALUE_STARTS | {"MINUS"}:
        return False
    declares = (
        after[0].type == "NAME" and len(after) > 1 and after[1].type in {"EQUAL", "LBRACE", "TO"}
    )
    return not declares


def current_declaration(tokens: list[Lexed], token: Lexed) -> Lexed | None:
    """The keyword of the declaration ``token`` is in: the last one starting a line before it."""
    for index in range(len(tokens) - 1, -1, -1):
        candidate = tokens[index]
        if candidate.end_pos > token.start_pos:
            continue
        if candidate.type in DECLARATION_KEYWORDS and first_on_line(tokens, index):
            return candidate
    return None


# -- positions and words for the messages --------------------------------------------------------


def span_of(file: str, token: Lexed) -> Span:
    return Span(file, token.line, token.column, token.end_line, token.end_column)


def after(file: str, token: Lexed) -> Span:
    """The column just after ``token``: where something missing belongs."""
    return Span(file, token.end_line, token.end_column, token.end_line, token.end_column + 1)


def pair(opener: str) -> str:
    return {"{": "}", "[": "]", "(": ")"}[opener]


def expected_help(expected: set[str]) -> str | None:
    if not expected:
        return None
    names = sorted({describe(name) for name in expected})
    if len(names) > 12:
        return None
    return "expected " + ", ".join(names)


def describe(terminal: str) -> str:
    if terminal in HUMAN:
        return HUMAN[terminal]
    try:
        pattern = lark_parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()
