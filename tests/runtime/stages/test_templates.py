"""Prompts render in jinja2's sandbox with undefined variables as errors, at run time too."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from kdlang.runtime.context import PromptTemplate
from kdlang.runtime.errors import RunError

from kdlang.check.sandbox import environment
from tests.fixtures.openai_server import FakeOpenAIServer
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    run_recipe,
    statuses,
    write_recipe,
)

pytestmark = pytest.mark.timeout(60)

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ question.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ '{0.__class__.__mro__}'.format(question) }}",
]


@pytest.mark.parametrize("text", ESCAPES)
def test_a_template_cannot_reach_python_internals(text):
    with pytest.raises(SecurityError):
        environment().from_string(text).render(question="q")
    with pytest.raises(RunError, match="prompt `p` cannot be rendered"):
        PromptTemplate("p", text).render(question="q")


def test_an_undefined_variable_fails_at_render_time():
    with pytest.raises(UndefinedError, match="'answer' is undefined"):
        environment().from_string("Q: {{ question }} A: {{ answer }}").render(question="q")
    with pytest.raises(UndefinedError):
        environment().from_string("{{ question.missing }}").render(question="q")
    with pytest.raises(RunError, match="'answer' is undefined"):
        PromptTemplate("p", "{{ answer }}").render(question="q")
    # text is kept as written: no autoescaping, trailing newline kept
    assert environment().from_string("<{{ x }}>\n").render(x="&") == "<&>\n"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ question.__class__ }}", "unsafe"),
        ("{{ question.no_such_attribute }}", "has no attribute 'no_such_attribute'"),
    ],
)
def test_a_run_reports_a_prompt_that_fails_to_render_as_the_stage_s_error(
    tmp_path, monkeypatch, template, message
):
    recipe = write_recipe(
        tmp_path,
        'dataset qs = inline([{question: "q"}])\n'
        + api_model("api")
        + f'\nprompt bad = "{template}"\nstage answered = label(qs) {{ teacher = api  prompt = bad }}\n',
    )
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe, expect=1)
    assert statuses(document) == {"qs": "ran", "answered": "failed"}
    error = node(document, "answered")["error"]
    assert error.startswith("prompt `bad` cannot be rendered") and message in error
    assert server.requests == 0


# What a prompt may not ask of a render: each is stopped before the work is done (a bound on
# the value it would build) or when the render's time runs out, and named as the stage's error.
BOUNDED = [
    ("{{ 'a' * 10**9 }}", "a `*` repetition would hold 1,000,000,000 characters"),
    ("{{ [0] * 10**8 }}", "a `*` repetition would hold 100,000,000 characters or items"),
    ("{{ 10**5000 }}", "an integer grew past 16,384 bits"),
    ("{{ 7 ** 100000 }}", "an integer grew past 16,384 bits"),
    ("{{ question.ljust(10**9) }}", "`str.ljust` asked for 1,000,000,000"),
    ("{{ question | center(10**9) }}", "filter `center` asked for 1,000,000,000"),
    ("{{ '%999999999s' | format(1) }}", "a format width or precision over 4,000,000"),
    ("{{ '%999999999s' % 1 }}", "a format width or precision over 4,000,000"),
    ("{{ '{:>999999999}'.format(1) }}", "a format width or precision over 4,000,000"),
    ("{{ big | replace('a', big) }}", "filter `replace` would hold 1,000,000,000,000 characters"),
    ("{{ big.replace('a', big) }}", "`str.replace` would hold 1,000,000,000,000 characters"),
    ("{{ ([big] * 1000) | join }}", "filter `join` would hold 1,000,000,000 characters"),
    (
        "{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "a `~` concatenation would hold 4,194,304 characters",
    ),
    (
        "{% set ns = namespace(s=big) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        "a `+` concatenation would hold 8,000,000 characters",
    ),
    (
        "{% for i in range(3000) %}{{ big[:2000] }}{% endfor %}",
        "the rendered prompt would hold 4,002,000",
    ),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "it recurses too deep"),
    ("{{ lipsum(10**6) }}", "'lipsum' is undefined"),
    (
        "{% set xs = [1] %}{{ xs.extend(xs) }}",
        "access to attribute 'extend' of 'list' object is unsafe",
    ),
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
]


@pytest.mark.parametrize(("text", "reason"), BOUNDED, ids=range(len(BOUNDED)))
def test_a_prompt_is_bounded_in_what_it_builds(text, reason):
    big = "a" * 1_000_000
    with pytest.raises(RunError) as raised:
        PromptTemplate("p", text).render(4, question="q", big=big)
    assert str(raised.value).startswith("prompt `p` cannot be rendered on row 5: ")
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% for i in question * 1000000 %}{% for j in question * 1000000 %}{% endfor %}{% endfor %}",
    ],
)
def test_a_render_that_would_not_end_is_stopped_at_its_deadline(monkeypatch, text):
    from kdlang.check import sandbox

    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.2)
    with pytest.raises(RunError, match=r"on row 1: rendering took longer than 0.2 s"):
        PromptTemplate("p", text).render(0, question="qq")


def test_bounded_rendering_renders_what_real_prompts_use():
    text = (
        "{% for t in turns %}{{ t.role | upper }}: {{ t.content ~ '!' }}\n{% endfor %}"
        "{{ '%-6s|' | format(name) }}{{ '{:>4}'.format(n * 2) }} {{ tags | join(', ') }} "
        "{{ (name + '-') * 2 }}{{ 2 ** 10 }} {{ name.replace('o', '0') }}{{ body | indent(2) }}"
    )
    out = PromptTemplate("p", text).render(
        turns=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        name="bob",
        n=21,
        tags=["a", "b"],
        body="x\ny",
    )
    assert out == "USER: hi!\nASSISTANT: yo!\nbob   |  42 a, b bob-bob-1024 b0bx\n  y"
