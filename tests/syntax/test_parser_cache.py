"""The parser's tables kept between runs (:func:`kdlang.syntax.grammar.parser`).

They are written once, whole, into kdlang's folder of the user's cache and nowhere else; a parser
read back from them gives the trees, tokens (terminal, text, position) and errors of one built
from the grammar, on every recipe of the repository, the test corpora and generated texts (valid,
or token soup that mostly is not); a damaged file, or no folder to write in, still gives a
working parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from kdlang.syntax import grammar
from kdlang.syntax.parser import KEYWORDS
from tests.syntax.recipe_strategies import syntactic_recipes

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(
    [
        *ROOT.glob("recipes/**/*.kd"),
        *(ROOT / "tests/syntax/good").glob("*.kd"),
        *(ROOT / "tests/syntax/bad").glob("*.kd"),
    ]
)
READ_BACK = "<deserialized>"
"""The ``source_path`` lark gives a parser whose tables it read from a saved file."""


def fresh_parser() -> Lark:
    """What :func:`grammar.parser` gives in a new process (not this process's parser)."""
    return grammar.parser.__wrapped__()


def cache_files(home: Path) -> list[str]:
    return sorted(p.name for p in home.rglob("*"))


@pytest.fixture(scope="module")
def parsers(tmp_path_factory) -> dict[str, Lark]:
    """A parser built from the grammar alone, and one read back from the cache."""
    home = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        fresh_parser()  # writes the cache
        loaded = fresh_parser()
    assert loaded.source_path == READ_BACK
    built = grammar.build(grammar.grammar_text())
    assert built.source_path != READ_BACK
    return {"built": built, "loaded": loaded}


def shape(node):
    """The tree in pre-order, each tree with its number of children (walked without recursion:
    the corpus holds trees deeper than Python's stack)."""
    flat, stack = [], [node]
    while stack:
        node = stack.pop()
        if isinstance(node, Tree):
            flat.append((node.data, len(node.children)))
            stack.extend(reversed(node.children))
        elif isinstance(node, Token):
            flat.append(
                (node.type, str(node), node.line, node.column, node.end_line, node.end_column)
            )
        else:
            flat.append(node)
    return flat


def outcome(parser: Lark, text: str):
    try:
        with grammar.comments_lexed() as comments:
            tree = parser.parse(text)
        return "tree", shape(tree), [shape(c) for c in comments]
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


def same(parsers: dict[str, Lark], text: str) -> None:
    assert outcome(parsers["loaded"], text) == outcome(parsers["built"], text)


def test_the_tables_are_written_once_whole_in_kdlangs_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = fresh_parser()
    written = cache_files(tmp_path)
    assert len(written) == 2 and written[0] == "kdlang"
    assert written[1].startswith("parser-") and written[1].endswith(".lark")
    assert first.source_path != READ_BACK
    again = fresh_parser()
    assert again.source_path == READ_BACK
    assert cache_files(tmp_path) == written


def test_another_grammar_has_a_file_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    text = grammar.grammar_text()
    one, other = grammar.cache_file(text), grammar.cache_file(text + "\n// changed\n")
    assert one is not None and other is not None
    assert one.parent == other.parent == tmp_path / "kdlang"
    assert one != other


def test_the_strict_parser_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grammar.parser.__wrapped__(strict=True)
    assert cache_files(tmp_path) == []


def test_a_damaged_cache_file_gives_a_working_parser(tmp_path, monkeypatch, parsers):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = grammar.cache_file(grammar.grammar_text())
    assert cached is not None
    cached.write_bytes(b"not a parser\n")
    text = (ROOT / "recipes/quickstart.kd").read_text(encoding="utf-8")
    assert outcome(fresh_parser(), text) == outcome(parsers["built"], text)


def test_no_cache_folder_to_write_in_gives_a_working_parser(tmp_path, monkeypatch, parsers):
    blocked = tmp_path / "a file"
    blocked.write_text("", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert grammar.cache_file(grammar.grammar_text()) is None
    text = (ROOT / "recipes/quickstart.kd").read_text(encoding="utf-8")
    assert outcome(fresh_parser(), text) == outcome(parsers["built"], text)
    assert cache_files(tmp_path) == ["a file"]


def test_the_corpora_are_there():
    assert len(FILES) > 80


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_file_parses_as_with_tables_built_from_the_grammar(path, parsers):
    same(parsers, path.read_text(encoding="utf-8"))


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
def test_keywords_names_and_operators_that_share_a_prefix(text, parsers):
    same(parsers, text)


@settings(max_examples=150, deadline=None)
@given(text=syntactic_recipes())
def test_generated_recipes(text, parsers):
    same(parsers, text)


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
@given(
    lexemes=st.lists(st.sampled_from(LEXEMES), max_size=25),
    joiner=st.sampled_from(["", " ", "\n"]),
)
def test_token_soup(lexemes, joiner, parsers):
    same(parsers, joiner.join(lexemes))
