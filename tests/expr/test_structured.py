"""Items, fields and the functions over lists, maps and conversations: the syntax they parse
to, their types (``messages``, ``turn``, lists of strings), their errors at their positions
(KD0208 wrong type, KD0230 no such field) and their values on rows."""

from __future__ import annotations

import pytest

from kdlang.expr import evaluate, typecheck
from kdlang.ir import expr as ir
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.fmt import format_source
from kdlang.syntax.parser import parse
from tests.expr.support import KEEP_COLUMN, keep

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 6 * 7?"},
    {"role": "assistant", "content": "Six sevens. <answer>42</answer>"},
]
ROW = {
    "chat": CHAT,
    "text": "alpha, beta ,gamma",
    "meta": {"lang": "en", "tags": ["x", "y"], "score": None},
    "raw": '{"answer": {"value": 42, "steps": ["a", "b"]}, "ok": true}',
    "items": [10, 20, 30],
    "n": 2,
    "empty": [],
    "none": None,
}
COLUMNS = {
    "chat": "messages",
    "text": "str",
    "meta": "map",
    "raw": "str",
    "items": "list",
    "n": "int",
    "empty": "list",
    "none": "any",
}


def check(text: str) -> tuple[str, list]:
    errors = Collector()
    kind = typecheck(keep(text), COLUMNS, errors)
    return kind, errors.diagnostics


# -- syntax ----------------------------------------------------------------------------------


def test_postfix_items_and_fields_parse_to_their_nodes():
    decl = parse("model m = last(chat).content[0]").decls[0]
    node = decl.value
    assert isinstance(node, ast.Index)
    assert isinstance(node.base, ast.Member) and node.base.name == "content"
    assert isinstance(node.base.base, ast.Call) and node.base.base.name == "last"
    assert isinstance(node.index, ast.Number) and node.index.value == 0
    # spans: the whole chain, and the field's name alone
    assert (node.span.column, node.span.end_column) == (11, 32)
    assert (node.base.name_span.column, node.base.name_span.end_column) == (22, 29)


def test_a_negative_index_is_a_literal_and_fmt_keeps_items_and_fields():
    node = parse("model m = chat[-1].role").decls[0].value
    assert isinstance(node.base.index, ast.Number) and node.base.index.value == -1
    source = 'stage f = filter(d) {\n  keep split( text , "," )[ -1 ]=="x" and last(chat).role == "user"\n}\n'
    assert format_source(source) == (
        'stage f = filter(d) {\n  keep split(text, ",")[-1] == "x" and last(chat).role == "user"\n}\n'
    )


def test_a_dotted_column_name_is_a_column_and_its_fields():
    node = keep('meta.lang == "en"').left
    assert isinstance(node, ir.Member) and node.name == "lang"
    assert isinstance(node.base, ir.Column) and node.base.name == "meta"
    # each node spans the text up to its own part
    assert (node.base.span.column, node.base.span.end_column) == (KEEP_COLUMN, KEEP_COLUMN + 4)
    assert (node.span.column, node.span.end_column) == (KEEP_COLUMN, KEEP_COLUMN + 9)
    assert [c.name for c in ir.columns_used(keep("chat[n].role == text"))] == ["chat", "n", "text"]


# -- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("last(chat).content", "str"),
        ("first(chat)", "turn"),
        ("chat[0].role", "str"),
        ('chat[0]["content"]', "str"),
        ("len(chat)", "int"),
        ("chat[n]", "turn"),
        ('split(text, ",")', "list[str]"),
        ('split(text, ",")[0]', "str"),
        ('strip(last(split(text, ",")))', "str"),
        ('join(split(text, ","), "+")', "str"),
        ("text[0]", "str"),
        ("items[1]", "any"),  # a list column's items are of unknown type
        ("meta.lang", "any"),
        ("meta.tags[0]", "any"),
        ("json(raw).answer.value", "any"),
        ('get(meta, "lang", "?")', "any"),
        ('get(chat[0], "role")', "str"),
        ('if(n > 1, "many", "one")', "str"),
        ("if(n > 1, n, 2.5)", "float"),
        ('if(n > 1, "x")', "str"),  # the missing branch is null
        ('format("{} / {}", text, n)', "str"),
        ('"user" in chat[0].role', "bool"),
        ("first(chat) in chat", "bool"),
    ],
)
def test_types(text: str, kind: str):
    assert check(text) == (kind, [])


def at(d) -> tuple[str, int, int]:
    """(code, start, end) of a diagnostic within the expression's text."""
    return d.code, d.span.column - KEEP_COLUMN, d.span.end_column - KEEP_COLUMN


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("last(chat).contents", ("KD0230", 0, 19), "a turn has no field `contents`"),
        ("chat[0].text", ("KD0230", 0, 12), "a turn has no field `text`"),
        ('get(chat[0], "rol")', ("KD0230", 13, 18), "a turn has no field `rol`"),
        ("text.length", ("KD0208", 0, 4), "`.length`: a string has no fields"),
        (
            "n[0]",
            ("KD0208", 0, 1),
            "cannot index an integer: only lists, strings and maps have items",
        ),
        (
            'chat["x"]',
            ("KD0208", 5, 8),
            "an index of a conversation is an integer, not a string",
        ),
        ("meta[0]", ("KD0208", 5, 6), "a key of a map is a string, not an integer"),
        (
            "upper(chat[0])",
            ("KD0208", 6, 13),
            "argument `s` of `upper` must be a string, not a turn",
        ),
        (
            'split(text, ",")[0].x',
            ("KD0208", 0, 19),
            "`.x`: a string has no fields",
        ),
        (
            "join(text)",
            ("KD0208", 5, 9),
            "argument `items` of `join` must be a list, not a string",
        ),
        (
            'format("{} and {}", text)',
            ("KD0208", 7, 18),
            "the `format` template wants value 2, which is not given",
        ),
        (
            'format("{who}", text)',
            ("KD0208", 7, 14),
            "the `format` template wants `who`, which is not given",
        ),
        (
            'format("{0.__class__}", text)',
            ("KD0208", 7, 22),
            "invalid `format` template: `{0.__class__}`: a field is empty, a position or a "
            "keyword's name",
        ),
        (
            "format(3)",
            ("KD0208", 7, 8),
            "the template of `format` must be a string, not an integer",
        ),
    ],
)
def test_errors_at_their_position(text: str, where: tuple, message: str):
    _, diagnostics = check(text)
    assert [(at(d), d.message) for d in diagnostics] == [(where, message)]


def test_a_misspelled_field_of_a_turn_gets_a_suggestion():
    _, [d] = check("last(chat).contnet")
    assert d.help == 'did you mean "content"?'


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("last(chat).content", "Six sevens. <answer>42</answer>"),
        ("chat[0].role", "system"),
        ("chat[-1].role", "assistant"),
        ("chat[-3].role", "system"),
        ("chat[3]", None),  # past the end
        ("chat[-4]", None),
        ("chat[n].content", "Six sevens. <answer>42</answer>"),
        ('chat[1]["content"]', "What is 6 * 7?"),
        ("len(chat)", 3),
        ('extract(last(chat).content, r"<answer>(.*?)</answer>")', "42"),
        ('extract(first(chat).content, r"<answer>(.*?)</answer>")', None),
        ("text[0]", "a"),
        ("text[-1]", "a"),
        ('strip(split(text, ",")[1])', "beta"),
        ('split(text, ",")[-1]', "gamma"),
        ("meta.lang", "en"),
        ("meta.tags[1]", "y"),
        ("meta.missing", None),
        ("meta.score", None),
        ('get(meta, "score", 0)', 0),  # a null value takes the default
        ("json(raw).answer.value", 42),
        ("json(raw).answer.steps[0]", "a"),
        ('json(raw)["ok"]', True),
        ("json(raw).answer.value + 1", 43),
        ("json(text)", None),  # no JSON
        ("json(raw).answer.value.deeper", None),  # a number has no fields: null
        ("items[1] + items[-1]", 50),
        ("first(empty)", None),
        ("none[0]", None),
        ("none.x", None),
        ('items["a"]', None),
        ('format("{}: {} turns", chat[1].role, len(chat))', "user: 3 turns"),
        ('format("{lang}/{n}", lang = meta.lang, n = n)', "en/2"),
        ('if(len(chat) > 2, "long", "short")', "long"),
        ('if(none, "yes", "no")', "no"),
        ('join(meta.tags, ", ")', "x, y"),
        ('lower(last(chat).role) == "assistant"', True),
    ],
)
def test_values(text: str, expected):
    value = evaluate(keep(text), ROW)
    assert value == expected
    assert type(value) is type(expected)


def test_if_evaluates_only_the_chosen_branch():
    # the other branch would be null (a division by zero); null would make any function null
    assert evaluate(keep("if(n > 1, n * 10, n / 0)"), ROW) == 20
    assert evaluate(keep('if(otherwise = "b", then = "a", condition = false)'), ROW) == "b"
    assert evaluate(keep('if(n == 2, otherwise = "b", then = "a")'), ROW) == "a"
