"""The shared-scanner contextual lexer gives the tokens lark's own contextual lexer gives.

Differential: the same grammar is parsed with lark's lexer and with ours, on every recipe of the
repository, the test corpora and generated texts (valid, or token soup that mostly is not); the
trees, every token's terminal, text and position, and every error must be the same.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from kdlang.syntax import grammar
from kdlang.syntax import parser as syntax_parser
from kdlang.syntax.lexer import SharedScanContextualLexer
from kdlang.syntax.parser import KEYWORDS, parse
from tests.syntax.recipe_strategies import syntactic_recipes

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [
        *ROOT.glob("recipes/**/*.kd"),
        *(ROOT / "tests/syntax/good").glob("*.kd"),
        *(ROOT / "tests/syntax/bad").glob("*.kd"),
    ]
)


@lru_cache(maxsize=2)
def parser(shared: bool) -> Lark:
    options = {"_plugins": {"ContextualLexer": SharedScanContextualLexer}} if shared else {}
    return Lark(
        grammar.grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        **options,
    )


def shape(node):
    if isinstance(node, Tree):
        return (node.data, [shape(child) for child in node.children])
    if isinstance(node, Token):
        return (node.type, str(node), node.line, node.column, node.end_line, node.end_column)
    return node


def outcome(shared: bool, text: str):
    try:
        return "tree", shape(parser(shared).parse(text))
    except UnexpectedInput as error:
        token = getattr(error, "token", None)
        expected = getattr(error, "expected", None) or getattr(error, "allowed", None) or ()
        return (
            type(error).__name__,
            error.line,
            error.column,
            sorted(expected),
            shape(token) if isinstance(token, Token) else None,
        )


def test_the_corpora_are_there():
    assert len(FILES) > 80


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_lexes_and_parses_as_with_lark_alone(path):
    text = path.read_text(encoding="utf-8")
    assert outcome(True, text) == outcome(False, text)


@pytest.mark.parametrize(
    "text",
    [
        'prompt prompt = "x"\nstage s = label(d) { prompt = prompt temperature = 1 }',
        "model m = f(a -> b, over = -3) - -1",
        'dataset d = inline([{model: 1, "in": 2, weight: 3}])',
        "stage f = filter(d) { keep x not in 1..3 and not y or z >= 2.5e-3 }",
        "train t { loss sft weight 1 temperature 2 loss jsd(beta = 0.5) weight 30% }",
        "model model = hf(model)",
        "stage s = label(d) { keep = 1 }",  # a keyword where a name was wanted: an error
        'model m = hf("x") @',
        "train t {\n  lr = 1\nmodel m = hf()",
    ],
)
def test_keywords_names_and_operators_that_share_a_prefix(text):
    assert outcome(True, text) == outcome(False, text)


@settings(max_examples=150, deadline=None)
@given(syntactic_recipes())
def test_generated_recipes(text):
    assert outcome(True, text) == outcome(False, text)


LEXEMES = [
    *sorted(KEYWORDS),
    "x",
    "model_2",
    "input",
    "=",
    "==",
    "->",
    "-",
    "..",
    ".",
    ",",
    ":",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    '"s"',
    "'t'",
    '"""a\nb"""',
    'r"\\d"',
    "3",
    "2.5",
    "1e-3",
    "30%",
    "+",
    "*",
    "/",
    "<=",
    "!=",
    "# note\n",
    "\n",
    "@",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LEXEMES), max_size=25), st.sampled_from(["", " ", "\n"]))
def test_token_soup(lexemes, joiner):
    text = joiner.join(lexemes)
    assert outcome(True, text) == outcome(False, text)


def test_states_mostly_scan_with_the_shared_scanner(monkeypatch):
    """The point of it: a recipe's parse compiles few scanners of its own."""
    fresh = grammar.parser.__wrapped__()  # not the process's parser, which other tests used
    monkeypatch.setattr(syntax_parser, "lark_parser", lambda: fresh)
    parse((ROOT / "recipes/quickstart.kd").read_text(encoding="utf-8"))
    lexer = fresh.parser.lexer
    assert isinstance(lexer, SharedScanContextualLexer)
    used = {
        id(state): state._scanner
        for state in lexer.lexers.values()
        if getattr(state, "_scanner", None) is not None
    }
    own = [scanner for scanner in used.values() if scanner._own is not None]
    assert len(used) >= 10
    assert len(own) <= len(used) // 3, (len(own), len(used))
