"""``label`` with several teachers: ``route = round_robin | all | sample(n = N)`` sends each row
to its teachers (distilabel's UltraFeedback sends each prompt to 3 of 6 generators), the answers
come back in the row (a list column with ``all`` and ``sample``), each teacher's work is logged
on its own, and the settings are checked."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from kdlang.runtime.stages.label import _ROUTE_SALT, assign

from kdlang.check import check_files
from tests.fixtures.openai_server import FakeOpenAIServer
from tests.fixtures.served_models import WORDS, ScriptedModel, last_text, limit
from tests.runtime.stages.support import BASE_URL_ENV, node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)


class ByModel(ScriptedModel):
    """Answers ``<model> on <last word of the prompt>``: which teacher wrote what shows."""

    def generate(self, body, prompt, seed, k):
        text = f"{body['model']} on {last_text(prompt).split()[-1]}"
        found, finish = limit([self._row(t, k) for t in WORDS.findall(text)], body)
        return "".join(r[0] for r in found), found, finish


def recipe_text(route: str, teachers: str = "[alpha, beta, gamma]", extra: str = "") -> str:
    models = "".join(
        f'model {name} = openai("{name}-model", base_url = env("{BASE_URL_ENV}"))\n'
        for name in ("alpha", "beta", "gamma")
    )
    questions = ", ".join(f'{{q: "q{i}"}}' for i in range(5))
    return (
        f"dataset qs = inline([{questions}])\n{models}"
        'prompt ask = "Answer {{ q }}"\n'
        f"stage answers = label(qs) {{ teachers = {teachers}  {route}  prompt = ask {extra}}}\n"
    )


def run(tmp_path, monkeypatch, text: str):
    recipe = write_recipe(tmp_path, text, seed=9)
    with FakeOpenAIServer(ByModel()) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
        return document, server.requests


def test_round_robin_gives_each_row_one_teacher_in_turn(tmp_path, monkeypatch):
    document, requests = run(tmp_path, monkeypatch, recipe_text("route = round_robin"))
    names = ["alpha", "beta", "gamma", "alpha", "beta"]
    assert rows(document, "answers") == [
        {"q": f"q{i}", "output": f"{name}-model on q{i}", "teacher": name}
        for i, name in enumerate(names)
    ]
    assert requests == 5
    assert node(document, "answers")["stats"]["rows_per_teacher"] == {
        "alpha": 2,
        "beta": 2,
        "gamma": 1,
    }


def test_all_and_sample_gather_the_answers_in_list_columns(tmp_path, monkeypatch):
    document, requests = run(
        tmp_path / "all", monkeypatch, recipe_text("route = all", extra=" teacher_column = by ")
    )
    first = rows(document, "answers")[0]
    assert first == {
        "q": "q0",
        "output": ["alpha-model on q0", "beta-model on q0", "gamma-model on q0"],
        "by": ["alpha", "beta", "gamma"],
    }
    assert requests == 15
    document, requests = run(tmp_path / "sample", monkeypatch, recipe_text("route = sample(n = 2)"))
    got = rows(document, "answers")
    assert requests == 10 and all(len(r["teacher"]) == 2 for r in got)
    for r in got:  # each answer is its teacher's, teachers in their declared order
        assert r["output"] == [f"{name}-model on {r['q']}" for name in r["teacher"]]
        assert r["teacher"] == sorted(r["teacher"], key=["alpha", "beta", "gamma"].index)


def test_a_sampled_route_is_a_function_of_the_row_seed():
    stage = SimpleNamespace(
        teachers=["a", "b", "c", "d"], route=SimpleNamespace(kind="sample", n=2)
    )

    def seed_of(i):
        return 1000 + i

    chosen = assign(stage, 50, seed_of)
    expected = [
        sorted(random.Random((1000 + i) ^ _ROUTE_SALT).sample(range(4), 2)) for i in range(50)
    ]
    assert chosen == expected
    assert len({tuple(c) for c in chosen}) > 3  # not one choice for every row


@pytest.mark.parametrize(
    ("route", "teachers", "extra", "code"),
    [
        ("route = sample(n = 4)", "[alpha, beta, gamma]", "", "KD0237"),  # more than there are
        ("route = all", "[alpha, beta]", " teacher = alpha ", "KD0237"),  # both forms
        ("route = all", "[alpha, beta]", " samples = 2 ", "KD0237"),
        ("route = sample", "[alpha, beta]", "", "KD0103"),  # sample needs n
        ("route = spread", "[alpha, beta]", "", "KD0103"),
        ("route = all", "[alpha]", "", "KD0104"),  # one teacher is no routing
    ],
)
def test_routing_settings_are_checked(tmp_path, route, teachers, extra, code):
    recipe = write_recipe(tmp_path, recipe_text(route, teachers, extra))
    diagnostics, _ = check_files([str(recipe)])
    assert [d.code for d in diagnostics if d.severity.name == "ERROR"] == [code]


def test_a_single_teacher_label_takes_no_route(tmp_path):
    text = (
        'dataset qs = inline([{q: "a"}])\n'
        f'model alpha = openai("m", base_url = env("{BASE_URL_ENV}"))\n'
        'prompt ask = "{{ q }}"\n'
        "stage answers = label(qs) { teacher = alpha  prompt = ask  route = all }\n"
        "stage again = label(qs) { prompt = ask }\n"
    )
    diagnostics, _ = check_files([str(write_recipe(tmp_path, text))])
    assert [d.code for d in diagnostics if d.severity.name == "ERROR"] == ["KD0237", "KD0105"]
