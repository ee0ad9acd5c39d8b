"""Prompts render in jinja2's sandbox with undefined variables as errors, at run time too."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from kdlang.runtime.context import PromptTemplate
from kdlang.runtime.errors import RunError

from kdlang.check.templates import environment
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
    "{{ lipsum.__globals__['os'] }}",
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
