"""The grammar and the positioned syntax tree: every construct of the language parses to the
expected node, with the expected span (1-based lines and columns, end column exclusive)."""

from __future__ import annotations

import pytest

from kdlang.syntax import ast
from kdlang.syntax.diagnostics import DiagnosticError
from kdlang.syntax.grammar import parser
from kdlang.syntax.parser import parse, parse_expression
from kdlang.syntax.span import Span

PREFIX = "model m = "  # expressions are parsed as a model's value; they start at column 11


def expr(text: str) -> ast.Expr:
    decl = parse(PREFIX + text).decls[0]
    assert isinstance(decl, ast.ModelDecl)
    return decl.value


def pos(node) -> tuple[int, int, int, int]:
    span = node if isinstance(node, Span) else node.span
    return span.line, span.column, span.end_line, span.end_column


def shape(node):
    """A node without positions, as nested tuples (easy to compare and read)."""
    if isinstance(node, ast.String):
        return ("str", node.value)
    if isinstance(node, ast.Number):
        return ("num", node.value)
    if isinstance(node, ast.Percent):
        return ("pct", node.value)
    if isinstance(node, ast.Bool):
        return node.value
    if isinstance(node, ast.Null):
        return None
    if isinstance(node, ast.Ref):
        return ("ref", node.dotted)
    if isinstance(node, ast.Call):
        return (
            "call",
            node.name,
            [shape(a) for a in node.args],
            {k.name: shape(k.value) for k in node.kwargs},
        )
    if isinstance(node, ast.ListExpr):
        return ("list", [shape(i) for i in node.items])
    if isinstance(node, ast.MapExpr):
        return ("map", {e.key: shape(e.value) for e in node.entries})
    if isinstance(node, ast.Range):
        return ("..", shape(node.low), shape(node.high))
    if isinstance(node, ast.Transition):
        return ("->", shape(node.start), shape(node.end))
    if isinstance(node, ast.Unary):
        return (node.op, shape(node.operand))
    if isinstance(node, ast.Binary):
        return (node.op, shape(node.left), shape(node.right))
    raise AssertionError(type(node))


def syntax_error(source: str):
    with pytest.raises(DiagnosticError) as caught:
        parse(source)
    return caught.value.diagnostics[0]


# -- the grammar itself ----------------------------------------------------------------------------


def test_grammar_builds_without_conflicts_or_colliding_terminals():
    strict = parser(strict=True)  # raises on shift/reduce conflicts and terminal collisions
    assert strict.options.parser == "lalr"
    names = {t.name for t in strict.terminals}
    assert {"NAME", "STRING", "INT", "FLOAT", "PERCENT", "COMMENT", "COMPARE"} <= names


def test_empty_file_and_comment_only_file():
    assert parse("").decls == []
    module = parse("# nothing yet\n\n   # still nothing\n")
    assert module.decls == []
    assert [c.text for c in module.comments] == ["# nothing yet", "# still nothing"]
    assert pos(module.comments[1]) == (3, 4, 3, 19)


# -- declarations ----------------------------------------------------------------------------------

ALL_DECLARATIONS = """\
recipe "arith" { seed = 1 }
import "common.kd"
model teacher = hf("t")
dataset problems = jsonl("p.jsonl") { limit = 10 }
dataset plain = csv("p.csv")
prompt solve = "Q: {{ q }}"
stage rationales = label(problems) { teacher = teacher }
stage copy = filter(rationales)
train distill { student = s }
eval accuracy = evaluate(distill, problems) { metric m }
eval quick = evaluate(distill, problems)
export distill to "out" { card = false }
export distill to "out2"
"""


def test_every_declaration_kind():
    decls = parse(ALL_DECLARATIONS, "all.kd").decls
    kinds = [(type(d).__name__, d.keyword) for d in decls]
    assert kinds == [
        ("RecipeDecl", "recipe"),
        ("ImportDecl", "import"),
        ("ModelDecl", "model"),
        ("DatasetDecl", "dataset"),
        ("DatasetDecl", "dataset"),
        ("PromptDecl", "prompt"),
        ("StageDecl", "stage"),
        ("StageDecl", "stage"),
        ("TrainDecl", "train"),
        ("EvalDecl", "eval"),
        ("EvalDecl", "eval"),
        ("ExportDecl", "export"),
        ("ExportDecl", "export"),
    ]
    names = [getattr(d, "name", None) for d in decls]
    assert names == [
        None,
        None,
        "teacher",
        "problems",
        "plain",
        "solve",
        "rationales",
        "copy",
        "distill",
        "accuracy",
        "quick",
        "distill",
        "distill",
    ]
    # Every declaration spans its whole line (these are one-liners).
    lines = ALL_DECLARATIONS.splitlines()
    for number, decl in enumerate(decls, start=1):
        assert pos(decl) == (number, 1, number, len(lines[number - 1]) + 1)
        assert decl.span.file == "all.kd"


def test_declaration_parts_and_spans():
    (
        recipe,
        imported,
        model,
        dataset,
        plain,
        prompt,
        stage,
        bare,
        train,
        evaluate,
        quick,
        export,
        export2,
    ) = parse(ALL_DECLARATIONS).decls
    assert recipe.title.value == "arith" and pos(recipe.title) == (1, 8, 1, 15)
    assert pos(recipe.block) == (1, 16, 1, 28)
    assert imported.path.value == "common.kd" and pos(imported.path) == (2, 8, 2, 19)
    assert pos(model.name_span) == (3, 7, 3, 14)
    assert shape(model.value) == ("call", "hf", [("str", "t")], {})
    assert shape(dataset.value) == ("call", "jsonl", [("str", "p.jsonl")], {})
    assert [s.key for s in dataset.block.stmts] == ["limit"]
    assert plain.block is None
    assert shape(prompt.value) == ("str", "Q: {{ q }}")
    assert shape(stage.op) == ("call", "label", [("ref", "problems")], {})
    assert pos(stage.op) == (7, 20, 7, 35)
    assert bare.block is None
    assert pos(train.name_span) == (9, 7, 9, 14)
    assert shape(evaluate.op) == ("call", "evaluate", [("ref", "distill"), ("ref", "problems")], {})
    assert quick.block is None
    assert export.name == "distill" and shape(export.path) == ("str", "out")
    assert pos(export.path) == (12, 19, 12, 24)
    assert [s.key for s in export.block.stmts] == ["card"]
    assert export2.block is None


def test_multi_line_declaration_span():
    source = "stage s = label(d) {\n  teacher = t\n  samples = 4\n}\n"
    (decl,) = parse(source).decls
    assert pos(decl) == (1, 1, 4, 2)
    assert pos(decl.block) == (1, 20, 4, 2)
    first, second = decl.block.stmts
    assert pos(first) == (2, 3, 2, 14)
    assert pos(first.key_span) == (2, 3, 2, 10)
    assert pos(second.value) == (3, 13, 3, 14)


def test_empty_block():
    (decl,) = parse("train t {}").decls
    assert decl.block.stmts == []
    assert pos(decl.block) == (1, 9, 1, 11)


# -- statements ------------------------------------------------------------------------------------


def test_settings_are_separated_by_whitespace_alone():
    (decl,) = parse("train t { a = 1  b = x.y  c = f(2) d = [1] }").decls
    assert [(s.key, shape(s.value)) for s in decl.block.stmts] == [
        ("a", ("num", 1)),
        ("b", ("ref", "x.y")),
        ("c", ("call", "f", [("num", 2)], {})),
        ("d", ("list", [("num", 1)])),
    ]


def test_loss_statements():
    source = (
        "train t {\n"
        "  loss sft weight 0.5\n"
        "  loss jsd(beta = 0.1) weight linear(0.0 -> 1.0, over = 30%) temperature 2.0\n"
        "}"
    )
    first, second = parse(source).decls[0].block.stmts
    assert isinstance(first, ast.LossStmt)
    assert (first.name, first.args, shape(first.weight), first.temperature) == (
        "sft",
        None,
        ("num", 0.5),
        None,
    )
    assert pos(first) == (2, 3, 2, 22)
    assert pos(first.name_span) == (2, 8, 2, 11)
    assert second.name == "jsd"
    assert shape(second.args) == ("call", "jsd", [], {"beta": ("num", 0.1)})
    assert pos(second.args) == (3, 8, 3, 23)
    assert shape(second.weight) == (
        "call",
        "linear",
        [("->", ("num", 0.0), ("num", 1.0))],
        {"over": ("pct", 0.3)},
    )
    assert pos(second.weight) == (3, 31, 3, 61)
    assert pos(second.weight.args[0]) == (3, 38, 3, 48)
    assert shape(second.temperature) == ("num", 2.0)
    assert pos(second.temperature) == (3, 74, 3, 77)
    assert pos(second) == (3, 3, 3, 77)


def test_filter_statements():
    source = (
        "stage c = filter(r) {\n"
        "  keep len(x) > 3\n"
        "  dedup x by minhash(threshold = 0.9)\n"
        "  dedup y by exact\n"
        "  decontaminate x against heldout by ngram(n = 13)\n"
        "  decontaminate y against other.set\n"
        "}"
    )
    keep, dedup, dedup_exact, decon, decon_plain = parse(source).decls[0].block.stmts
    assert isinstance(keep, ast.KeepStmt)
    assert shape(keep.condition) == (">", ("call", "len", [("ref", "x")], {}), ("num", 3))
    assert pos(keep) == (2, 3, 2, 18)
    assert isinstance(dedup, ast.DedupStmt)
    assert (dedup.column, pos(dedup.column_span)) == ("x", (3, 9, 3, 10))
    assert shape(dedup.method) == ("call", "minhash", [], {"threshold": ("num", 0.9)})
    assert shape(dedup_exact.method) == ("ref", "exact")
    assert isinstance(decon, ast.DecontaminateStmt)
    assert (decon.column, decon.against.dotted) == ("x", "heldout")
    assert pos(decon.against) == (5, 27, 5, 34)
    assert shape(decon.method) == ("call", "ngram", [], {"n": ("num", 13)})
    assert decon_plain.against.parts == ("other", "set")
    assert decon_plain.method is None


def test_metric_statements_named_and_unnamed():
    source = (
        "eval e = evaluate(t, d) {\n  metric exact_match(output, answer)\n  metric acc = x == y\n}"
    )
    unnamed, named = parse(source).decls[0].block.stmts
    assert isinstance(unnamed, ast.MetricStmt)
    assert unnamed.name is None and unnamed.name_span is None
    assert shape(unnamed.expr) == (
        "call",
        "exact_match",
        [("ref", "output"), ("ref", "answer")],
        {},
    )
    assert named.name == "acc" and pos(named.name_span) == (3, 10, 3, 13)
    assert shape(named.expr) == ("==", ("ref", "x"), ("ref", "y"))
    assert pos(named) == (3, 3, 3, 22)


@pytest.mark.parametrize(
    "key", ["prompt", "model", "dataset", "temperature", "weight", "to", "by", "against"]
)
def test_keywords_are_setting_names_inside_blocks(key):
    (decl,) = parse(f"stage s = label(d) {{\n  {key} = solve\n  samples = 2\n}}").decls
    first, second = decl.block.stmts
    assert isinstance(first, ast.Setting)
    assert (first.key, shape(first.value)) == (key, ("ref", "solve"))
    assert pos(first.key_span) == (2, 3, 2, 3 + len(key))
    assert second.key == "samples"


def test_keywords_as_setting_names_on_one_line():
    (decl,) = parse("eval e = evaluate(t, d) { prompt = solve  model = m  metric x }").decls
    prompt, model, metric = decl.block.stmts
    assert (prompt.key, model.key) == ("prompt", "model")
    assert isinstance(metric, ast.MetricStmt)


def test_keywords_as_keyword_arguments_and_map_keys():
    value = expr("f(model = a, prompt = b, temperature = 1, in_ = 2, weight = 3)")
    assert list(shape(value)[3]) == ["model", "prompt", "temperature", "in_", "weight"]
    assert shape(expr('{prompt: 1, model: 2, "with space": 3}')) == (
        "map",
        {"prompt": ("num", 1), "model": ("num", 2), "with space": ("num", 3)},
    )


# -- literals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value", "is_raw", "triple"),
    [
        ('"plain"', "plain", False, False),
        ("'single'", "single", False, False),
        (r'"tab\tnew\nline"', "tab\tnew\nline", False, False),
        (r'"q\"uote\\back"', 'q"uote\\back', False, False),
        (r"'it\'s'", "it's", False, False),
        (r'"\u00e9t\u00E9"', "été", False, False),
        (r'"nul\0cr\r"', "nul\0cr\r", False, False),
        ('"""one\n"two"\n"""', 'one\n"two"\n', False, True),
        ('"""a \\\ncontinued"""', "a continued", False, True),
        (r'r"#### (-?\d+)"', r"#### (-?\d+)", True, False),
        (r"r'\s*$'", r"\s*$", True, False),
        ('r"""\\d+\n\\w"""', "\\d+\n\\w", True, True),
        ('""', "", False, False),
        ('"#not a comment"', "#not a comment", False, False),
    ],
)
def test_strings(source, value, is_raw, triple):
    node = expr(source)
    assert isinstance(node, ast.String)
    assert (node.value, node.is_raw, node.triple, node.raw) == (value, is_raw, triple, source)
    lines = source.split("\n")
    end = (1 + len(lines) - 1, (11 if len(lines) == 1 else 1) + len(lines[-1]))
    assert pos(node) == (1, 11, *end)


def test_string_content_start():
    assert expr('"abc"').content_start == (1, 12)
    assert expr('r"abc"').content_start == (1, 13)
    assert expr('"""abc"""').content_start == (1, 14)
    assert expr('r"""abc"""').content_start == (1, 15)


@pytest.mark.parametrize(
    ("source", "kind", "value"),
    [
        ("3", ast.Number, 3),
        ("0", ast.Number, 0),
        ("3.25", ast.Number, 3.25),
        ("3e-4", ast.Number, 3e-4),
        ("1.5E+3", ast.Number, 1500.0),
        ("2e3", ast.Number, 2000.0),
        ("30%", ast.Percent, 0.3),
        ("2.5%", ast.Percent, 0.025),
        ("-1", ast.Number, -1),
        ("-3e-4", ast.Number, -3e-4),
        ("-5%", ast.Percent, -0.05),
    ],
)
def test_numbers_and_percentages(source, kind, value):
    node = expr(source)
    assert type(node) is kind
    assert node.value == pytest.approx(value)
    assert type(node.value) is type(value)
    assert node.raw == source
    assert pos(node) == (1, 11, 1, 11 + len(source))


def test_booleans_null_and_refs():
    assert shape(expr("true")) is True
    assert shape(expr("false")) is False
    assert shape(expr("null")) is None
    node = expr("distill.student.path")
    assert isinstance(node, ast.Ref) and node.parts == ("distill", "student", "path")
    assert pos(node) == (1, 11, 1, 31)


def test_lists_and_maps():
    assert shape(expr("[]")) == ("list", [])
    assert shape(expr("[1, 'a', [2], ]")) == (
        "list",
        [("num", 1), ("str", "a"), ("list", [("num", 2)])],
    )
    node = expr("{q: 1, 'a b': [x],}")
    assert shape(node) == ("map", {"q": ("num", 1), "a b": ("list", [("ref", "x")])})
    first, second = node.entries
    assert (first.key_raw, second.key_raw) == ("q", "'a b'")
    assert pos(first) == (1, 12, 1, 16)
    assert pos(second) == (1, 18, 1, 28)
    assert shape(expr("{}")) == ("map", {})


def test_multi_line_list():
    node = expr("[\n  1,\n  2,\n]")
    assert shape(node) == ("list", [("num", 1), ("num", 2)])
    assert pos(node) == (1, 11, 4, 2)
    assert pos(node.items[1]) == (3, 3, 3, 4)


# -- calls -----------------------------------------------------------------------------------------


def test_call_with_positional_and_keyword_arguments():
    node = expr('hf("path", lora = lora(r = 8), dtype = bfloat16)')
    assert shape(node) == (
        "call",
        "hf",
        [("str", "path")],
        {"lora": ("call", "lora", [], {"r": ("num", 8)}), "dtype": ("ref", "bfloat16")},
    )
    assert pos(node) == (1, 11, 1, 59)
    assert pos(node.func) == (1, 11, 1, 13)
    lora = node.kwarg("lora")
    assert pos(lora) == (1, 22, 1, 40)
    assert pos(lora.value) == (1, 29, 1, 40)
    assert node.kwarg("absent") is None


def test_call_forms():
    assert shape(expr("f()")) == ("call", "f", [], {})
    assert shape(expr("f(1,)")) == ("call", "f", [("num", 1)], {})
    assert shape(expr("a.b(1)")) == ("call", "a.b", [("num", 1)], {})
    assert shape(expr("f(g(h(1)))")) == (
        "call",
        "f",
        [("call", "g", [("call", "h", [("num", 1)], {})], {})],
        {},
    )


def test_transitions_inside_call_arguments():
    node = expr("cosine(2.0 -> 0.5, start = 10%, over = 100)")
    transition = node.args[0]
    assert isinstance(transition, ast.Transition)
    assert shape(transition) == ("->", ("num", 2.0), ("num", 0.5))
    assert pos(transition) == (1, 18, 1, 28)
    assert shape(expr("f(-1 -> x + 1)")) == (
        "call",
        "f",
        [("->", ("num", -1), ("+", ("ref", "x"), ("num", 1)))],
        {},
    )


def test_transition_outside_call_arguments_is_a_syntax_error():
    found = syntax_error("model m = 0.0 -> 1.0")
    assert (found.code, found.span.column) == ("KD0002", 15)


# -- operators -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", ("+", ("num", 1), ("*", ("num", 2), ("num", 3)))),
        ("(1 + 2) * 3", ("*", ("+", ("num", 1), ("num", 2)), ("num", 3))),
        ("a - b - c", ("-", ("-", ("ref", "a"), ("ref", "b")), ("ref", "c"))),
        ("a / b * c", ("*", ("/", ("ref", "a"), ("ref", "b")), ("ref", "c"))),
        ("-a * b", ("*", ("-", ("ref", "a")), ("ref", "b"))),
        ("- -a", ("-", ("-", ("ref", "a")))),
        ("a - -1", ("-", ("ref", "a"), ("num", -1))),
        ("-(1 + 2)", ("-", ("+", ("num", 1), ("num", 2)))),
        ("a or b and c", ("or", ("ref", "a"), ("and", ("ref", "b"), ("ref", "c")))),
        ("a and b or c", ("or", ("and", ("ref", "a"), ("ref", "b")), ("ref", "c"))),
        ("not a and b", ("and", ("not", ("ref", "a")), ("ref", "b"))),
        ("not a == b", ("not", ("==", ("ref", "a"), ("ref", "b")))),
        ("not not a", ("not", ("not", ("ref", "a")))),
        ("a + 1 > b * 2", (">", ("+", ("ref", "a"), ("num", 1)), ("*", ("ref", "b"), ("num", 2)))),
        ("x != 'y'", ("!=", ("ref", "x"), ("str", "y"))),
        ("x <= 1", ("<=", ("ref", "x"), ("num", 1))),
        ("x >= 1", (">=", ("ref", "x"), ("num", 1))),
        ("x < 1", ("<", ("ref", "x"), ("num", 1))),
        ("x in [1, 2]", ("in", ("ref", "x"), ("list", [("num", 1), ("num", 2)]))),
        ("x not in [1]", ("not in", ("ref", "x"), ("list", [("num", 1)]))),
        (
            "len(x) in 8..400",
            ("in", ("call", "len", [("ref", "x")], {}), ("..", ("num", 8), ("num", 400))),
        ),
        ("1..n + 1", ("..", ("num", 1), ("+", ("ref", "n"), ("num", 1)))),
        ("a == b and c", ("and", ("==", ("ref", "a"), ("ref", "b")), ("ref", "c"))),
    ],
)
def test_precedence_and_associativity(source, expected):
    assert shape(expr(source)) == expected


def test_operator_spans():
    node = expr("not (a in [1, 2]) and b.c >= -3.5e-2")
    assert pos(node) == (1, 11, 1, 47)
    left, right = node.left, node.right
    assert isinstance(left, ast.Unary) and left.op == "not"
    assert pos(left) == (1, 11, 1, 28)
    assert pos(left.operand) == (1, 16, 1, 27)  # parentheses are not part of the inner span
    assert pos(right) == (1, 33, 1, 47)
    assert pos(right.right) == (1, 40, 1, 47)
    assert right.right.raw == "-3.5e-2"


def test_not_in_span_covers_both_words():
    node = expr("x not in y")
    assert (node.op, pos(node)) == ("not in", (1, 11, 1, 21))


def test_chained_comparison_is_a_syntax_error():
    found = syntax_error("stage c = filter(r) { keep a < b < c }")
    assert (found.code, found.span.column) == ("KD0002", 34)


# -- comments and whitespace -----------------------------------------------------------------------


def test_comments_are_collected_with_positions():
    source = (
        "# header\n"
        'model m = hf("x#y")  # trailing #2\n'
        "train t {\n"
        "    # inside\n"
        "  a = 1 # after\n"
        "}\n"
    )
    module = parse(source)
    assert [(c.text, pos(c)) for c in module.comments] == [
        ("# header", (1, 1, 1, 9)),
        ("# trailing #2", (2, 22, 2, 35)),
        ("# inside", (4, 5, 4, 13)),
        ("# after", (5, 9, 5, 16)),
    ]
    assert shape(module.decls[0].value) == ("call", "hf", [("str", "x#y")], {})


def test_comments_and_newlines_inside_expressions():
    source = 'model m = hf(\n  # the path\n  "x",  # trailing\n  r = 1\n)\n'
    module = parse(source)
    assert shape(module.decls[0].value) == ("call", "hf", [("str", "x")], {"r": ("num", 1)})
    assert [c.text for c in module.comments] == ["# the path", "# trailing"]


def test_tabs_crlf_and_blank_lines():
    module = parse('model a = hf("x")\r\n\r\n\tmodel b = hf("y")\r\n')
    assert [d.name for d in module.decls] == ["a", "b"]
    assert pos(module.decls[1]) == (3, 2, 3, 19)


def test_parse_expression_helper():
    assert shape(parse_expression("1e-4")) == ("num", 1e-4)
    assert shape(parse_expression("cosine(warmup = 5%)")) == (
        "call",
        "cosine",
        [],
        {"warmup": ("pct", 0.05)},
    )
