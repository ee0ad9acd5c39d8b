"""``kdlang fmt``: idempotent, meaning-preserving, comment-keeping; on written and generated recipes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings

from kdlang.ir import strip_spans
from kdlang.lower import lower
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, DiagnosticError
from kdlang.syntax.fmt import format_source
from kdlang.syntax.parser import parse
from kdlang.syntax.span import source_lines
from tests.syntax.recipe_strategies import syntactic_recipes, valid_recipes
from tests.syntax.support import BAD, GOOD

GENERATED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Lowering validates every setting with pydantic: valid recipes cost more per example.
GENERATED_VALID = settings(GENERATED, max_examples=50)


def tree(node):
    """A syntax tree without positions (and without the source text it came from)."""
    if isinstance(node, ast.Module):
        return [tree(d) for d in node.decls]
    if dataclasses.is_dataclass(node):
        fields = {
            f.name: tree(getattr(node, f.name))
            for f in dataclasses.fields(node)
            if f.name != "span" and not f.name.endswith("_span")
        }
        return (type(node).__name__, fields)
    if isinstance(node, list | tuple):
        return [tree(item) for item in node]
    return node


def meaning(module: ast.Module):
    errors = Collector()
    recipe = lower(module, errors)
    assert errors.diagnostics == [], errors.diagnostics
    return strip_spans(recipe)


def comment_texts(module: ast.Module) -> list[str]:
    return sorted(c.text for c in module.comments)


def assert_formats_well(source: str) -> tuple[ast.Module, ast.Module]:
    """Checks fmt on ``source``; returns the syntax trees of the source and of its formatting."""
    module = parse(source)
    formatted = format_source(source)
    again = parse(formatted)
    assert format_source(formatted) == formatted, "not idempotent"
    assert tree(again) == tree(module)
    assert comment_texts(again) == comment_texts(module)
    assert formatted.endswith("\n") or formatted == ""
    assert "\n\n\n" not in formatted
    for line in source_lines(formatted):
        assert line == line.rstrip() or _inside_string(formatted, line)
    return module, again


def _inside_string(formatted: str, line: str) -> bool:
    return '"""' in formatted or "'''" in formatted


# -- hand-written cases ----------------------------------------------------------------------------

MESSY = """\
# Arithmetic with chain-of-thought.
recipe   "arith-cot"{seed=1234}
model teacher=hf( "Qwen/Qwen2.5-1.5B-Instruct" )   # white-box
model student = hf("Qwen/Qwen2.5-0.5B-Instruct",
                   lora = lora(r = 8,   alpha = 16.0))



dataset problems = inline([{question: "2 + 3?", answer: "5"},
  {question: "7 * 6?", answer: "42"},])
prompt solve = \"\"\"
Q: {{ question }}
A:\"\"\"
stage rationales = label(problems) { teacher = teacher  prompt = solve  samples = 4 # four
  temperature = 0.8
    output = rationale }
stage clean = filter(rationales) {
  # rules run in order
  keep matches(rationale, r"#### -?\\d+\\s*$")
  keep (len(rationale)) in (8)..(400) and not (answer == "0")
  dedup rationale by minhash(threshold = 0.9)
}
train distill {
  student = student  teacher = teacher  data = clean  prompt = solve  target = rationale
  lr = 3e-4  lr_schedule = cosine(warmup = 5%)
  loss sft weight 0.5
  loss forward_kl weight linear(0.0 -> 1.0, over = 30%)   temperature 2.0
}
eval accuracy = evaluate(distill, problems) {
  prompt = solve
  metric exact_match(extract(output, r"#### (-?\\d+)"), answer)
}
export distill to "runs/arith" {}
# the end
"""

CANONICAL = """\
# Arithmetic with chain-of-thought.
recipe "arith-cot" {
  seed = 1234
}
model teacher = hf("Qwen/Qwen2.5-1.5B-Instruct")  # white-box
model student = hf("Qwen/Qwen2.5-0.5B-Instruct", lora = lora(r = 8, alpha = 16.0))

dataset problems = inline([{question: "2 + 3?", answer: "5"}, {question: "7 * 6?", answer: "42"}])
prompt solve = \"\"\"
Q: {{ question }}
A:\"\"\"
stage rationales = label(problems) {
  teacher = teacher
  prompt = solve
  samples = 4  # four
  temperature = 0.8
  output = rationale
}
stage clean = filter(rationales) {
  # rules run in order
  keep matches(rationale, r"#### -?\\d+\\s*$")
  keep len(rationale) in 8..400 and not answer == "0"
  dedup rationale by minhash(threshold = 0.9)
}
train distill {
  student = student
  teacher = teacher
  data = clean
  prompt = solve
  target = rationale
  lr = 3e-4
  lr_schedule = cosine(warmup = 5%)
  loss sft weight 0.5
  loss forward_kl weight linear(0.0 -> 1.0, over = 30%) temperature 2.0
}
eval accuracy = evaluate(distill, problems) {
  prompt = solve
  metric exact_match(extract(output, r"#### (-?\\d+)"), answer)
}
export distill to "runs/arith" {}
# the end
"""


def test_messy_recipe_gets_the_canonical_layout():
    assert format_source(MESSY) == CANONICAL
    assert meaning(parse(CANONICAL)) == meaning(parse(MESSY))
    assert_formats_well(MESSY)


def test_canonical_text_is_a_fixed_point():
    assert format_source(CANONICAL) == CANONICAL


def test_good_recipes_are_formatted():
    for path in sorted(GOOD.glob("*.kd")):
        source = path.read_text(encoding="utf-8")
        assert format_source(source) == source, path.name


def test_long_values_wrap_level_by_level_until_every_line_fits():
    rows = ", ".join(f'{{country: "Country number {i}", capital: "Capital {i}"}}' for i in range(3))
    source = f"dataset d = inline([{rows}], limit = 2)\nmodel m = hf({{a: [{rows}]}})\n"
    expected = """\
dataset d = inline(
  [
    {country: "Country number 0", capital: "Capital 0"},
    {country: "Country number 1", capital: "Capital 1"},
    {country: "Country number 2", capital: "Capital 2"},
  ],
  limit = 2,
)
model m = hf(
  {
    a: [
      {country: "Country number 0", capital: "Capital 0"},
      {country: "Country number 1", capital: "Capital 1"},
      {country: "Country number 2", capital: "Capital 2"},
    ],
  },
)
"""
    assert format_source(source) == expected
    assert format_source(expected) == expected
    assert tree(parse(expected)) == tree(parse(source))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("model m = (1 + 2) * 3", "model m = (1 + 2) * 3\n"),
        ("model m = 1 + (2 * 3)", "model m = 1 + 2 * 3\n"),
        ("model m = a - (b - c)", "model m = a - (b - c)\n"),
        ("model m = (a - b) - c", "model m = a - b - c\n"),
        ("model m = -(a + b)", "model m = -(a + b)\n"),
        ("model m = (-a) * b", "model m = -a * b\n"),
        ("model m = not (a and b)", "model m = not (a and b)\n"),
        ("model m = (not a) and b", "model m = not a and b\n"),
        ("model m = (a or b) and c", "model m = (a or b) and c\n"),
        ("model m = (a == b) == c", "model m = (a == b) == c\n"),
        ("model m = (1..2) in x", "model m = 1..2 in x\n"),
        ("model m = 1..(2 in x)", "model m = 1..(2 in x)\n"),
        ("model m = (a + 1)..(b * 2)", "model m = a + 1..b * 2\n"),
        ("model m = x not  in [1,2,]", "model m = x not in [1, 2]\n"),
        ("model m = f(a->b,over=1)", "model m = f(a -> b, over = 1)\n"),
        ("model m = {}", "model m = {}\n"),
        ("model m = {'k': 1,}", "model m = {'k': 1}\n"),
        ("model m = 3E-4", "model m = 3E-4\n"),
        ("model m = - 1", "model m = -1\n"),
    ],
)
def test_expression_layout_and_minimal_parentheses(source, expected):
    assert format_source(source) == expected
    assert tree(parse(expected)) == tree(parse(source))


def test_comments_in_every_place_are_kept():
    source = (
        "# top\n"
        "\n"
        "model m = hf(  # after the paren\n"
        '  "x",  # after the path\n'
        "  # before a keyword\n"
        "  dtype = auto\n"
        ")  # after the call\n"
        "train t {  # after the brace\n"
        "  # first\n"
        "  a = 1\n"
        "\n"
        "  # between\n"
        "  b = 2  # trailing\n"
        "  # last, before the brace\n"
        "}  # after the block\n"
        "# bottom\n"
    )
    assert_formats_well(source)
    assert format_source(source) == (
        "# top\n"
        "\n"
        "# after the paren\n"
        "# after the path\n"
        "# before a keyword\n"
        'model m = hf("x", dtype = auto)  # after the call\n'
        "train t {  # after the brace\n"
        "  # first\n"
        "  a = 1\n"
        "\n"
        "  # between\n"
        "  b = 2  # trailing\n"
        "  # last, before the brace\n"
        "}  # after the block\n"
        "# bottom\n"
    )


def test_blank_lines_collapse_to_one_and_trailing_ones_go():
    source = "model a = 1\n\n\n\nmodel b = 2\n\n\n"
    assert format_source(source) == "model a = 1\n\nmodel b = 2\n"


def test_strings_keep_their_source_text():
    source = 'prompt p = """\n  keep  my   spacing\n\t"""\nprompt q = r\'\\d+\'\nprompt s = "\\u00e9\\n"\n'
    assert format_source(source) == source


def test_line_separators_in_strings_and_comments_are_no_new_lines():
    source = 'prompt p = "a\u2028b"  # x\x0cy\n\nmodel m = hf("x")\n'
    assert format_source(source) == source


def test_empty_source_formats_to_empty():
    assert format_source("") == ""
    assert format_source("\n\n") == ""
    assert format_source("# only\n") == "# only\n"


def test_format_refuses_a_file_that_does_not_parse():
    with pytest.raises(DiagnosticError) as caught:
        format_source('model m = hf("x"', "broken.kd")
    assert caught.value.diagnostics[0].code == "KD0004"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.kd")), ids=lambda p: p.stem)
def test_bad_recipes_that_parse_format_stably(path):
    source = path.read_text(encoding="utf-8")
    try:
        parse(source)
    except DiagnosticError:
        return  # a syntax error: fmt refuses it (tested above)
    assert_formats_well(source)


# -- generated recipes -----------------------------------------------------------------------------


@GENERATED
@given(syntactic_recipes())
def test_generated_recipes_format_to_the_same_tree(source):
    assert_formats_well(source)


@GENERATED_VALID
@given(valid_recipes())
def test_generated_valid_recipes_keep_their_meaning(source):
    module, formatted = assert_formats_well(source)
    assert meaning(formatted) == meaning(module)


# -- the command line ------------------------------------------------------------------------------


def _fmt(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlang", "fmt", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_fmt_stdin_to_stdout():
    result = _fmt("-", stdin=MESSY)
    assert result.returncode == 0, result.stderr
    assert result.stdout == CANONICAL


def test_fmt_check_and_rewrite_files(tmp_path):
    messy, clean = tmp_path / "messy.kd", tmp_path / "clean.kd"
    messy.write_text(MESSY, encoding="utf-8")
    clean.write_text(CANONICAL, encoding="utf-8")

    checked = _fmt("--check", str(messy), str(clean))
    assert checked.returncode == 1
    assert f"would reformat {messy}" in checked.stderr
    assert str(clean) not in checked.stderr
    assert messy.read_text(encoding="utf-8") == MESSY  # --check changes nothing

    rewritten = _fmt(str(messy), str(clean))
    assert rewritten.returncode == 0
    assert messy.read_text(encoding="utf-8") == CANONICAL
    assert _fmt("--check", str(messy), str(clean)).returncode == 0


def test_fmt_reports_syntax_errors_and_exits_1(tmp_path):
    broken = tmp_path / "broken.kd"
    broken.write_text('model m = hf("x"\n', encoding="utf-8")
    result = _fmt(str(broken))
    assert result.returncode == 1
    assert "error[KD0004]" in result.stderr
    assert broken.read_text(encoding="utf-8") == 'model m = hf("x"\n'


def test_fmt_usage_errors_exit_2(tmp_path):
    assert _fmt(str(tmp_path / "absent.kd")).returncode == 2
    assert _fmt("-", str(tmp_path / "x.kd"), stdin="").returncode == 2
