"""The contextual lexer: keywords are reserved only where the grammar can see them, and terminals
that share a prefix (``-`` and ``->``, ``.`` and ``..``, ``1``, ``2.5``, ``1e-3`` and ``30%``,
``in`` and ``inline``) are told apart, with every token's position kept."""

from __future__ import annotations

import pytest

from kdlang.syntax import ast
from kdlang.syntax.diagnostics import DiagnosticError
from kdlang.syntax.grammar import comments_lexed, parser
from kdlang.syntax.parser import parse


def shape(node):
    """A node as nested tuples: its class, then its fields, positions left out."""
    if isinstance(node, list | tuple):
        return [shape(item) for item in node]
    if isinstance(node, ast.Node):
        fields = {
            name: shape(value)
            for name, value in vars(node).items()
            if name not in ("span", "name_span", "key_span", "column_span", "raw", "key_raw")
        }
        return (type(node).__name__, fields)
    return node


def ref(*parts: str) -> tuple:
    return ("Ref", {"parts": list(parts)})


def number(value: float) -> tuple:
    return ("Number", {"value": value})


def setting(key: str, value: tuple) -> tuple:
    return ("Setting", {"key": key, "value": value})


def test_a_keyword_is_a_name_where_the_grammar_wants_one():
    (decl,) = parse("model model = hf(model)").decls
    assert isinstance(decl, ast.ModelDecl)
    assert (decl.name, decl.name_span.column, decl.name_span.end_column) == ("model", 7, 12)
    assert shape(decl.value) == ("Call", {"func": ref("hf"), "args": [ref("model")], "kwargs": []})


def test_keywords_as_setting_keys_and_values():
    prompt, stage = parse(
        'prompt prompt = "x"\nstage s = label(d) { prompt = prompt temperature = 1 }'
    ).decls
    assert isinstance(prompt, ast.PromptDecl) and prompt.name == "prompt"
    assert isinstance(stage, ast.StageDecl) and stage.block is not None
    assert shape(stage.block.stmts) == [
        setting("prompt", ref("prompt")),
        setting("temperature", number(1)),
    ]
    value = stage.block.stmts[0]
    assert isinstance(value, ast.Setting)
    assert (value.value.span.line, value.value.span.column) == (2, 31)


def test_keywords_as_map_keys():
    (decl,) = parse('dataset d = inline([{model: 1, "in": 2, weight: 3}])').decls
    assert isinstance(decl, ast.DatasetDecl) and isinstance(decl.value, ast.Call)
    (items,) = decl.value.args
    assert isinstance(items, ast.ListExpr)
    (entries,) = items.items
    assert isinstance(entries, ast.MapExpr)
    assert [(e.key, e.key_raw, e.span.column) for e in entries.entries] == [
        ("model", "model", 22),
        ("in", '"in"', 32),
        ("weight", "weight", 41),
    ]


def test_arrows_and_minus_signs():
    (decl,) = parse("model m = f(a -> b, over = -3) - -1").decls
    assert isinstance(decl, ast.ModelDecl)
    assert shape(decl.value) == (
        "Binary",
        {
            "op": "-",
            "left": (
                "Call",
                {
                    "func": ref("f"),
                    "args": [("Transition", {"start": ref("a"), "end": ref("b")})],
                    "kwargs": [("Keyword", {"name": "over", "value": number(-3)})],
                },
            ),
            "right": number(-1),
        },
    )


def test_operators_words_ranges_and_numbers():
    (decl,) = parse("stage f = filter(d) { keep x not in 1..3 and not y or z >= 2.5e-3 }").decls
    assert isinstance(decl, ast.StageDecl) and decl.block is not None
    (keep,) = decl.block.stmts
    assert isinstance(keep, ast.KeepStmt)
    assert shape(keep.condition) == (
        "Binary",
        {
            "op": "or",
            "left": (
                "Binary",
                {
                    "op": "and",
                    "left": (
                        "Binary",
                        {
                            "op": "not in",
                            "left": ref("x"),
                            "right": ("Range", {"low": number(1), "high": number(3)}),
                        },
                    ),
                    "right": ("Unary", {"op": "not", "operand": ref("y")}),
                },
            ),
            "right": ("Binary", {"op": ">=", "left": ref("z"), "right": number(0.0025)}),
        },
    )


def test_loss_lines_with_their_keywords():
    (decl,) = parse(
        "train t { loss sft weight 1 temperature 2 loss jsd(beta = 0.5) weight 30% }"
    ).decls
    assert isinstance(decl, ast.TrainDecl)
    first, second = decl.block.stmts
    assert isinstance(first, ast.LossStmt) and isinstance(second, ast.LossStmt)
    assert (first.name, first.args, shape(first.weight), shape(first.temperature)) == (
        "sft",
        None,
        number(1),
        number(2),
    )
    assert second.name == "jsd" and second.args is not None
    assert shape(second.args.kwargs) == [("Keyword", {"name": "beta", "value": number(0.5)})]
    assert isinstance(second.weight, ast.Percent)
    assert (second.weight.value, second.weight.raw) == (0.3, "30%")
    assert second.temperature is None


def test_dotted_names_and_the_numbers_they_hold():
    (decl,) = parse("model m = f(a.b, 1e-3, 2.5, 7)").decls
    assert isinstance(decl, ast.ModelDecl) and isinstance(decl.value, ast.Call)
    assert [(type(a).__name__, a.span.column, a.span.end_column) for a in decl.value.args] == [
        ("Ref", 13, 16),
        ("Number", 18, 22),
        ("Number", 24, 27),
        ("Number", 29, 30),
    ]
    assert [getattr(a, "raw", None) for a in decl.value.args] == [None, "1e-3", "2.5", "7"]


@pytest.mark.parametrize(
    ("text", "code", "message", "position"),
    [
        ("stage s = label(d) { metric = 1 }", "KD0008", "missing value before `=`", (1, 28)),
        ('model m = hf("x") @', "KD0001", "unexpected character `@`", (1, 19)),
        (
            "train t {\n  lr = 1\nmodel m = hf()",
            "KD0004",
            "unclosed `{` before the next declaration",
            (1, 9),
        ),
    ],
)
def test_a_keyword_where_the_grammar_reserves_it_is_an_error(text, code, message, position):
    with pytest.raises(DiagnosticError) as caught:
        parse(text)
    found = caught.value.diagnostics[0]
    assert (found.code, found.message, (found.span.line, found.span.column)) == (
        code,
        message,
        position,
    )


def test_comments_are_collected_while_parsing():
    with comments_lexed() as comments:
        parser().parse('# head\nmodel m = hf("x")  # trailing\n')
    assert [(str(c), c.line, c.column) for c in comments] == [
        ("# head", 1, 1),
        ("# trailing", 2, 20),
    ]
