"""Syntax diagnostics on small inputs: which code, where, and what the message says.

The corpus in ``bad/`` holds whole recipes; these cases pin the classification rules one by one.
"""

from __future__ import annotations

import pytest

from kdlang.syntax import ast
from kdlang.syntax.diagnostics import DiagnosticError
from kdlang.syntax.parser import parse


def diagnostic(source: str):
    with pytest.raises(DiagnosticError) as caught:
        parse(source, "x.kd")
    (found,) = caught.value.diagnostics  # one syntax error per file
    return found


def where(found) -> tuple[str, int, int]:
    return found.code, found.span.line, found.span.column


@pytest.mark.parametrize(
    ("source", "code", "line", "column", "message"),
    [
        ('model m = hf("x") @', "KD0001", 1, 19, "unexpected character `@`"),
        ("model m = hf(`x`)", "KD0001", 1, 14, "unexpected character '`'"),
        ("import other.kd", "KD0002", 1, 8, "unexpected name `other`"),
        (
            'model m = hf("x") { dtype = auto }',
            "KD0002",
            1,
            19,
            "a `model` declaration takes no block",
        ),
        ('prompt p = "x" {}', "KD0002", 1, 16, "a `prompt` declaration takes no block"),
        ('model m = hf("x")\n  lr = 1', "KD0002", 2, 3, "setting `lr` outside any block"),
        ("stage s = label(d) {} stage", "KD0002", 1, 28, "unexpected end of file"),
        ('model m = hf("x', "KD0003", 1, 14, "unclosed string"),
        ("prompt p = r'abc", "KD0003", 1, 12, "unclosed string"),
        ('prompt p = """abc\n\ndef', "KD0003", 1, 12, "unclosed string"),
        ("train t {\n  lr = 1", "KD0004", 1, 9, "unclosed `{`: the file ends before it is closed"),
        (
            'model m = hf("x"\nmodel n = hf("y")',
            "KD0004",
            1,
            13,
            "unclosed `(` before the next declaration",
        ),
        ("model m = f([1, 2)", "KD0004", 1, 13, "unclosed `[`: `)` on line 1 does not close it"),
        ('model m hf("x")', "KD0005", 1, 8, "missing `=`"),
        ("train t { prompt solve }", "KD0005", 1, 17, "missing `=`"),
        ("train t { a = 1, b = 2 }", "KD0006", 1, 16, "unexpected `,` between settings"),
        (r'prompt p = "a\d"', "KD0007", 1, 14, "unknown escape sequence `\\d` in a string"),
        ("model m =", "KD0008", 1, 10, "missing value at end of file"),
        ("train t { a = }", "KD0008", 1, 14, "missing value before `}`"),
        ("train t {\n  a =\n  prompt = p\n}", "KD0008", 2, 6, "missing value"),
        (
            "train t {\n  loss sft weight\n  loss tvd weight 1\n}",
            "KD0008",
            2,
            18,
            "missing value after `weight`",
        ),
        ("stage c = filter(r) { keep x > }", "KD0008", 1, 31, "missing value before `}`"),
        (
            "stage c = filter(r) {\n  keep x or\n  dedup x by exact\n}",
            "KD0008",
            2,
            12,
            "missing value after `or`",
        ),
        ("stage c = filter(r) { keep x\n  metric\n}", "KD0008", 2, 9, "missing value before `}`"),
        ("train t { loss sft 1.0 }", "KD0009", 1, 19, "loss line without `weight`"),
        ("train t { loss jsd(beta = 0.5) 1.0 }", "KD0009", 1, 31, "loss line without `weight`"),
        (
            "train t {\n  loss sft\n  loss tvd weight 1\n}",
            "KD0009",
            2,
            11,
            "loss line without `weight`",
        ),
        ('model m = hf("x"))', "KD0010", 1, 18, "unexpected `)`: it closes nothing"),
        ("train t { }\n}", "KD0010", 2, 1, "unexpected `}`: it closes nothing"),
        ("model m = f(a b)", "KD0002", 1, 14, "missing `,` between arguments"),
        ("model m = [a b]", "KD0002", 1, 13, "missing `,` between list items"),
        ("model m = {a: 1 b: 2}", "KD0002", 1, 16, "missing `,` between map entries"),
    ],
)
def test_classification(source, code, line, column, message):
    found = diagnostic(source)
    assert where(found) == (code, line, column)
    assert found.message == message
    assert found.span.file == "x.kd"


def test_missing_equals_suggests_the_value():
    found = diagnostic("train t { epochs 3 }")
    assert where(found) == ("KD0005", 1, 17)
    assert found.help == "write `= 3` to give the value"


def test_unclosed_string_help_depends_on_the_quotes():
    assert 'use """..."""' in diagnostic('prompt p = "abc').help
    assert diagnostic('prompt p = """abc').help == 'close it with """'


def test_help_lists_exactly_what_the_parser_accepts():
    found = diagnostic("stage c = filter(r) { keep a < b < c }")
    assert where(found) == ("KD0002", 1, 34)
    assert found.help == (
        "expected `and`, `decontaminate`, `dedup`, `keep`, `loss`, `metric`, `or`, `}`, a name"
    )


def test_unknown_escape_is_reported_at_the_escape_in_a_multi_line_string():
    found = diagnostic('prompt p = """line one\n  then \\q here"""')
    assert where(found) == ("KD0007", 2, 8)
    assert (found.span.end_line, found.span.end_column) == (2, 10)


def test_every_bad_escape_of_a_file_is_reported():
    with pytest.raises(DiagnosticError) as caught:
        parse(r'prompt a = "\d"' + "\n" + r'prompt b = "\w \s"')
    assert [where(d) for d in caught.value.diagnostics] == [
        ("KD0007", 1, 13),
        ("KD0007", 2, 13),
        ("KD0007", 2, 16),
    ]


def test_statement_keyword_inside_an_expression_is_a_name():
    (decl,) = parse("stage c = filter(r) { keep metric > 3 and loss < 2 }").decls
    (keep,) = decl.block.stmts
    assert isinstance(keep.condition.left.left, ast.Ref)
    assert keep.condition.left.left.dotted == "metric"
    assert keep.condition.right.left.dotted == "loss"


def test_a_statement_keyword_starting_a_line_starts_a_statement():
    (decl,) = parse("stage c = filter(r) {\n  keep a\n  keep b\n}").decls
    assert [type(s).__name__ for s in decl.block.stmts] == ["KeepStmt", "KeepStmt"]
