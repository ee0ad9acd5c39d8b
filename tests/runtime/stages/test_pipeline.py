"""End to end on CPU: label -> filter -> expand -> label (self-knowledge) -> judge -> pairs.

Tiny random hf models write the answers (only shapes and counts matter there); the local
OpenAI-compatible server plays the model whose content matters (new items, judgements).
"""

from __future__ import annotations

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    rows,
    run_recipe,
    statuses,
    write_recipe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUESTIONS = ["What is 12 plus 7?", "What is 30 minus 4?", "Name a sea animal.", "Define a fox."]


def respond(prompt: str, seed: int | None) -> str:
    if prompt.startswith("Rate: "):
        return f"Fair attempt.\nScore: {1 + len(prompt) % 10}"
    return f"Question number {seed}?"


def test_label_filter_expand_judge_pairs(tmp_path, tiny_pair, monkeypatch):
    data = ", ".join(f'{{question: "{q}"}}' for q in QUESTIONS)
    recipe = write_recipe(
        tmp_path,
        f"""
dataset seeds = inline([{data}])
model teacher = hf("{tiny_pair.teacher}")
model student = hf("{tiny_pair.student}")
{api_model("api")}

prompt solve = \"\"\"Q: {{{{ question }}}}
A:\"\"\"
prompt rubric = "Rate: {{{{ answer }}}}"

stage answers = label(seeds) {{
  teacher = teacher  prompt = solve  samples = 2  temperature = 0.9  max_tokens = 8
  output = answer
}}
stage clean = filter(answers) {{
  keep len(answer) <= 1000
  dedup answer by exact
}}
stage more = expand(seeds) {{ teacher = api  method = self_instruct  column = question  n = 3 }}
stage attempts = label(more) {{
  teacher = student  prompt = solve  samples = 2  temperature = 1.0  max_tokens = 8
  output = answer
}}
stage scored = judge(attempts) {{ judge = api  prompt = rubric }}
stage prefs = pairs(scored) {{ group = question  response = answer }}
""",
    )
    with FakeOpenAIServer(ScriptedModel(respond)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert set(statuses(document).values()) == {"ran"}

    answers = rows(document, "answers")
    assert len(answers) == 8 and all(set(r) == {"question", "answer", "sample"} for r in answers)
    assert [(r["question"], r["sample"]) for r in answers] == [
        (q, k) for q in QUESTIONS for k in (0, 1)
    ]
    distinct = len({" ".join(r["answer"].split()) for r in answers})
    assert node(document, "clean")["rows_out"] == distinct

    more = rows(document, "more")
    assert [r["origin"] for r in more] == ["seed"] * 4 + ["self_instruct"] * 3
    assert all(r["question"].startswith("Question number ") for r in more[4:])

    attempts = rows(document, "attempts")
    assert len(attempts) == 14
    assert node(document, "attempts")["teacher"]["requests"] == 7

    scored = rows(document, "scored")
    assert [r["score"] for r in scored] == [1 + len(f"Rate: {r['answer']}") % 10 for r in attempts]
    assert all(set(r) == {"question", "origin", "answer", "sample", "score"} for r in scored)

    expected = []
    for question in dict.fromkeys(r["question"] for r in scored):
        first, second = (r for r in scored if r["question"] == question)
        if first["score"] != second["score"]:
            best, worst = (first, second) if first["score"] > second["score"] else (second, first)
            expected.append(
                {
                    "question": question,
                    "chosen": best["answer"],
                    "rejected": worst["answer"],
                    "margin": best["score"] - worst["score"],
                }
            )
    assert rows(document, "prefs") == expected and expected
    assert node(document, "prefs")["dropped"]["tie"] == 7 - len(expected)
    assert server.requests == 3 + 14
