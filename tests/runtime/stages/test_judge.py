"""``judge``: scores parsed from a scripted judge; malformed and out-of-scale ones dropped."""

from __future__ import annotations

import pytest
from kdlang.runtime.stages.judge import parse_score

from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    rows,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("judgement", "score"),
    [
        ("Score: 8", 8.0),
        ("Helpful and correct.\nScore: 9", 9.0),
        ("**Score:** 7/10", 7.0),
        ("score = 4.5", 4.5),
        ("Score: 3. On reflection, Score: 5", 5.0),  # the last verdict counts
        ("Score: -1", -1.0),
        ("I would give it 6 out of 10.", 6.0),  # no label: the first number
        ("Model v1.2 did fine: 7", 7.0),  # digits inside a word are no number
        ("Rating: .5", 0.5),
        ("No idea.", None),
        ("", None),
    ],
)
def test_parse_score(judgement, score):
    assert parse_score(judgement) == score


JUDGEMENTS = {
    "great answer": "Accurate and complete.\nScore: 9",
    "fine answer": "6/10",
    "weak answer": "**Score:** 2",
    "odd answer": "I cannot judge this response.",
    "wild answer": "Score: 11",
    "negative answer": "Score: -3",
}


def judge_recipe(tmp_path, scale=""):
    data = ", ".join(f'{{id: {i}, answer: "{a}"}}' for i, a in enumerate(JUDGEMENTS))
    return write_recipe(
        tmp_path,
        f"""
dataset answers = inline([{data}])
{api_model("referee")}
prompt rubric = \"\"\"Rate this answer from 1 to 10.
Answer: {{{{ answer }}}}
Reply with "Score: N".\"\"\"
stage scored = judge(answers) {{ judge = referee  prompt = rubric  output = grade {scale} }}
""",
    )


def respond(prompt: str, seed: int | None) -> str:
    answer = prompt.split("Answer: ")[1].split("\n")[0]
    return JUDGEMENTS[answer]


def test_judge_keeps_parsed_scores_and_counts_what_it_drops(tmp_path, monkeypatch):
    recipe = judge_recipe(tmp_path)
    with FakeOpenAIServer(ScriptedModel(respond)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert rows(document, "scored") == [
        {"id": 0, "answer": "great answer", "grade": 9.0},
        {"id": 1, "answer": "fine answer", "grade": 6.0},
        {"id": 2, "answer": "weak answer", "grade": 2.0},
    ]
    result = node(document, "scored")
    assert result["dropped"] == {"unparsable": 1, "out_of_scale": 2}
    assert result["stats"]["mean_score"] == pytest.approx(17 / 3)
    assert result["rows_in"] == 6 and result["rows_out"] == 3
    assert result["teacher"]["requests"] == 6
    # greedy, short judgements by default
    assert {(b["temperature"], b["max_tokens"]) for b in server.bodies} == {(0.0, 64)}
    report = (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "unparsable: 1, out_of_scale: 2" in report


def test_judge_scale_is_inclusive_and_configurable(tmp_path, monkeypatch):
    recipe = judge_recipe(tmp_path, scale="scale = [-3, 6]")
    with FakeOpenAIServer(ScriptedModel(respond)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert [r["grade"] for r in rows(document, "scored")] == [6.0, 2.0, -3.0]
    assert node(document, "scored")["dropped"] == {"unparsable": 1, "out_of_scale": 2}


ASPECTS = {
    "great answer": 'Looks right.\n```json\n{"helpfulness": 5, "honesty": 4, "rationale": "complete"}\n```',
    "fine answer": '{"helpfulness": "3/5", "honesty": 5} It is fine.',
    "odd answer": "I will not give numbers.",
    "gap answer": '{"helpfulness": 4}',
    "wild answer": '{"helpfulness": 9, "honesty": 1}',
}


@pytest.mark.parametrize(
    ("text", "scores", "reason", "why"),
    [
        (ASPECTS["great answer"], {"helpfulness": 5.0, "honesty": 4.0}, "complete", ""),
        (ASPECTS["fine answer"], {"helpfulness": 3.0, "honesty": 5.0}, "It is fine.", ""),
        (
            '{"not": [1}, then {"helpfulness": 2, "honesty": 2}',
            {"helpfulness": 2.0, "honesty": 2.0},
            '{"not": [1}, then',
            "",
        ),
        (ASPECTS["odd answer"], None, "", "no_json"),
        (ASPECTS["gap answer"], None, "", "missing_metric"),
        ('{"helpfulness": true, "honesty": 2}', None, "", "missing_metric"),
        (ASPECTS["wild answer"], None, "", "out_of_scale"),
    ],
)
def test_parse_metrics(text, scores, reason, why):
    from kdlang.runtime.stages.judge import parse_metrics

    assert parse_metrics(text, {"helpfulness": [1, 5], "honesty": [1, 5]}) == (scores, reason, why)


def test_a_multi_metric_judge_adds_a_column_per_metric_and_the_rationale(tmp_path, monkeypatch):
    data = ", ".join(f'{{id: {i}, answer: "{a}"}}' for i, a in enumerate(ASPECTS))
    recipe = write_recipe(
        tmp_path,
        f"""
dataset answers = inline([{data}])
{api_model("referee")}
prompt rubric = \"\"\"Rate helpfulness and honesty from 1 to 5, as JSON.
Answer: {{{{ answer }}}}
\"\"\"
stage scored = judge(answers) {{
  judge = referee  prompt = rubric  max_tokens = 128
  metrics = {{helpfulness: [1, 5], honesty: [1, 5]}}  rationale = why
}}
""",
    )

    def aspects(prompt: str, seed: int | None) -> str:
        return ASPECTS[prompt.split("Answer: ")[1].split("\n")[0]]

    with FakeOpenAIServer(ScriptedModel(aspects)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert rows(document, "scored") == [
        {"id": 0, "answer": "great answer", "helpfulness": 5.0, "honesty": 4.0, "why": "complete"},
        {
            "id": 1,
            "answer": "fine answer",
            "helpfulness": 3.0,
            "honesty": 5.0,
            "why": "It is fine.",
        },
    ]
    result = node(document, "scored")
    assert result["dropped"] == {"no_json": 1, "missing_metric": 1, "out_of_scale": 1}
    assert result["stats"]["mean_scores"] == {"helpfulness": 4.0, "honesty": 4.5}


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        ("metrics = {a: [1, 5]}  output = s", "KD0236"),
        ("metrics = {a: [1, 5]}  scale = [1, 5]", "KD0236"),
        ("rationale = why", "KD0236"),
        ("metrics = {a: [1]}", "KD0104"),
    ],
)
def test_judge_metric_settings_are_checked(tmp_path, settings, code):
    from kdlang.check import check_files

    recipe = write_recipe(
        tmp_path,
        'dataset answers = inline([{answer: "x"}])\n'
        + api_model("referee")
        + '\nprompt rubric = "{{ answer }}"\n'
        + f"stage scored = judge(answers) {{ judge = referee  prompt = rubric  {settings} }}\n",
    )
    diagnostics, _ = check_files([str(recipe)])
    assert [d.code for d in diagnostics if d.severity.name == "ERROR"] == [code]
