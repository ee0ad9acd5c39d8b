"""Prompt templates: undefined variables (KD0206) reported at their place in the `.kd` file,
inside triple-quoted, raw and escaped strings alike, and template syntax errors (KD0207)."""

from __future__ import annotations

from pathlib import Path

from kdlang.check.templates import template_variables
from tests.check.support import HEADER, diagnose, found, only, write

LABEL = "stage answers = label(problems) { teacher = teacher  prompt = solve }\n"


def test_typo_in_a_triple_quoted_prompt_points_at_its_line(project: Path):
    text = HEADER + (
        'prompt solve = """\n'  # line 5
        "You are a careful tutor.\n"
        "\n"
        "Question: {{ questoin }}\n"  # line 8
        'Answer:"""\n'
        "\n" + LABEL  # line 11
    )
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column, d.span.end_line, d.span.end_column) == (8, 14, 8, 22)
    assert d.message == "`questoin` in prompt `solve` is not a column of the data it is rendered on"
    assert d.help == 'did you mean "question"?'
    [(note, use)] = d.notes
    assert note == "the prompt is rendered here"
    assert (use.line, use.column) == (11, 63)


def test_typo_on_the_first_line_of_a_prompt(project: Path):
    text = HEADER + 'prompt solve = """Q: {{ questoin }}\nA:"""\n' + LABEL
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column) == (5, 25)


def test_positions_after_escapes_are_those_of_the_source(project: Path):
    # `\t` and `\u00e9` are one character of text each, but two and six of source.
    text = HEADER + 'prompt solve = "Q\\t\\u00e9: {{ questoin }}"\n' + LABEL
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column, d.span.end_column) == (5, 31, 39)


def test_positions_after_a_line_continuation(project: Path):
    # A backslash before a newline joins two source lines into one line of text.
    text = HEADER + (
        'prompt solve = """Answer briefly, \\\n'  # line 5
        "and show the steps.\n"
        "Q: {{ questoin }}\n"  # line 7
        '"""\n' + LABEL
    )
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column) == (7, 7)


def test_raw_prompts_map_one_to_one(project: Path):
    text = HEADER + 'prompt solve = r"""\\d+ \\t\n  {{ questoin }}"""\n' + LABEL
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column) == (6, 6)


def test_typo_in_an_imported_prompt_points_into_that_file(project: Path):
    write(project, {"prompts.kd": '# shared\nprompt solve = """\nQ: {{ questoin }}\n"""\n'})
    d = only(diagnose(project, 'import "prompts.kd"\n' + HEADER + LABEL), "KD0206")
    assert (d.span.file, d.span.line, d.span.column) == (str(project / "prompts.kd"), 3, 7)
    [(_, use)] = d.notes
    assert (use.file, use.line) == (str(project / "recipe.kd"), 6)


def test_a_prompt_used_twice_is_reported_once(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ questoin }}"\n'
        + LABEL
        + "stage again = label(heldout) { teacher = teacher  prompt = solve }\n"
    )
    assert found(diagnose(project, text)) == [("KD0206", 5, 23)]


def test_a_prompt_is_checked_against_the_data_it_is_rendered_on(project: Path):
    # `rationale` exists after the label stage, not in the held-out set the eval renders on.
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        'prompt recap = "{{ question }} {{ rationale }}"\n'
        "stage rationales = label(problems) { teacher = teacher  prompt = solve  output = rationale }\n"
        "train distill {\n"
        "  student = student  data = rationales  prompt = recap  target = rationale\n"
        "  loss sft weight 1.0\n"
        "}\n"
        "eval accuracy = evaluate(distill, heldout) {\n"
        "  prompt = recap\n"
        "  metric exact_match(output, answer)\n"
        "}\n"
    )
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column) == (6, 35)
    [(_, use)] = d.notes
    assert (use.line, use.column) == (13, 12)


def test_loop_and_set_variables_are_not_columns(project: Path):
    text = HEADER + (
        'prompt solve = """{% set prefix = "Q" %}{{ prefix }}: {{ question }}\n'
        '{% for word in question.split() %}{{ word }} {% endfor %}"""\n' + LABEL
    )
    assert diagnose(project, text) == []


def test_expand_prompts_see_the_expansion_variables(project: Path):
    text = HEADER + (
        'prompt evolve = "{{ operation }} {{ item }} {{ demos }} {{ n }} {{ itme }}"\n'
        "stage more = expand(problems) { teacher = teacher  column = question  prompt = evolve }\n"
    )
    d = only(diagnose(project, text), "KD0206")
    assert (d.span.line, d.span.column) == (5, 68)
    assert d.help == 'did you mean "item"?'


def test_template_syntax_error_points_at_its_line(project: Path):
    text = HEADER + (
        'prompt solve = """\n'
        "Question: {{ question }}\n"
        "Answer: {{ answer \n"  # line 7: unclosed tag
        '"""\n' + LABEL
    )
    d = only(diagnose(project, text), "KD0207")
    assert (d.span.line, d.span.column) == (7, 1)
    assert d.message.startswith("prompt `solve` is not a valid template: ")


def test_template_syntax_error_with_an_unknown_tag(project: Path):
    text = HEADER + 'prompt solve = """Q: {{ question }}\n{% frobnicate %}"""\n' + LABEL
    d = only(diagnose(project, text), "KD0207")
    assert (d.span.line, d.span.column) == (6, 1)
    assert "frobnicate" in d.message


def test_template_syntax_is_checked_where_nothing_valid_renders_the_prompt(project: Path):
    # Unused, and used by a stage with an error of its own: both syntax errors are reported with
    # that error, in one run.
    text = HEADER + (
        'prompt unused = "{{ question }"\n'  # line 5
        'prompt solve = "Q: {{ question }} {% if x %}"\n'  # line 6
        "stage answers = label(problems) { teacher = teacher  prompt = solve  samples = 2.5 }\n"
    )
    assert found(diagnose(project, text)) == [
        ("KD0207", 5, 18),
        ("KD0207", 6, 17),
        ("KD0103", 7, 80),
    ]


def test_template_variables():
    assert template_variables("{{ a }} {{ b.c }} {% if d %}{{ e | upper }}{% endif %}") == {
        "a",
        "b",
        "d",
        "e",
    }
    assert template_variables("{% for x in xs %}{{ x }}{% endfor %}") == {"xs"}
    assert template_variables("no variables") == set()


# The scan agrees with jinja2's own variable scan (``meta.find_undeclared_variables``) on
# templates that scan can compile safely; it differs only in never compiling.
AGREEING = [
    "{{ a }}{% set a = 1 %}{{ a }}",
    "{% set a = b %}{{ a }}",
    "{% for k, v in pairs if v > limit %}{{ k }}{{ loop.index }}{% else %}{{ none_left }}{% endfor %}",
    "{% macro m(x, y=default_y) %}{{ x }}{{ y }}{{ caller() }}{{ varargs }}{% endmacro %}{{ m(1) }}",
    "{% call(item) m(items) %}{{ item }}{% endcall %}{% macro m(xs) %}{% endmacro %}",
    "{% with total = n * 2 %}{{ total }}{{ other }}{% endwith %}{{ total }}",
    "{% set ns = namespace(s='') %}{% for t in turns %}{% set ns.s = ns.s ~ t.content %}{% endfor %}",
    "{% set block_text %}{{ inner }}{% endset %}{{ block_text }}",
    "{% filter upper %}{{ shouted }}{% endfilter %}{{ range(n) | list }}{{ dict(a=x) }}",
    "{% if a %}{% set b = 1 %}{% endif %}{{ b }}",
    "{% for i in range(3) %}{% set inside = i %}{% endfor %}{{ inside }}",
    "{{ cycler('a', 'b').next() }}{{ joiner(',')() }}",
]


def test_the_scan_finds_the_variables_jinja2_finds():
    from jinja2 import Environment, meta

    reference = Environment()
    for text in AGREEING:
        assert template_variables(text) == meta.find_undeclared_variables(reference.parse(text)), (
            text
        )
    # One deliberate difference: a name every branch of an `if` sets is bound after it, and one
    # an `if` sets but nothing reads is not read (jinja2's scan lists both, as fallbacks).
    every = (
        "{% if a %}{% set b = 1 %}{% elif c %}{% set b = 2 %}{% else %}{% set b = 3 %}{% endif %}"
    )
    assert template_variables(every + "{{ b }}") == {"a", "c"}
    assert reference.from_string(every + "{{ b }}").render(c=True) == "2"
    assert template_variables("{% if a %}{% set d = 2 %}{% endif %}") == {"a"}


def test_check_never_evaluates_a_template(project: Path):
    # jinja2's own variable scan compiles, and folds constants: 10**5000 and a 1 GB string
    # would be computed (an internal error, a MemoryError). The scan reads the tree only.
    for expression in ("10**5000", "'a' * 10**9", "2 ** 2 ** 2 ** 2 ** 2 ** 2", "1 / 0"):
        text = HEADER + f'prompt solve = "Q: {{{{ question }}}} {{{{ {expression} }}}}"\n' + LABEL
        assert found(diagnose(project, text)) == [], expression


def test_a_template_that_loads_another_template_is_refused(project: Path):
    for tag, shown in [
        ("{% include 'header.txt' %}", "include"),
        ("{% import 'macros.j2' as m %}", "import"),
        ("{% from 'macros.j2' import m %}", "from ... import"),
        ("{% extends 'base.j2' %}", "extends"),
    ]:
        text = HEADER + f'prompt solve = """Q: {{{{ question }}}}\n\n{tag}"""\n' + LABEL
        d = only(diagnose(project, text), "KD0212")
        assert (d.span.line, d.span.column) == (7, 1), tag
        assert d.message == (
            f"prompt `solve` cannot be used: `{{% {shown} %}}` loads another template, "
            "which a prompt cannot"
        )


def test_a_template_nested_too_deep_is_reported_at_its_deepest_line(project: Path):
    deep = "(" * 400 + "question" + ")" * 400
    text = HEADER + f'prompt solve = """Q: {{{{ question }}}}\n{{{{ {deep} }}}}"""\n' + LABEL
    d = only(diagnose(project, text), "KD0213")
    assert d.span.line == 6
    assert (
        d.message == "prompt `solve` is not a valid template: the template nests too deep to read"
    )
    blocks = "{% if question %}" * 300 + "x" + "{% endif %}" * 300
    text = HEADER + f'prompt solve = """{blocks}"""\n' + LABEL
    assert found(diagnose(project, text)) == [("KD0213", 5, 19)]
