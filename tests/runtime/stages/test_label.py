"""``label``: self-knowledge (the student as generator), samples, system prompts, usage."""

from __future__ import annotations

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    row_seed,
    rows,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(120)

QUESTIONS = ["What is 2 + 3?", "What is 7 * 6?", "Name a colour."]
DATA = "dataset qs = inline([" + ", ".join(f'{{question: "{q}"}}' for q in QUESTIONS) + "])\n"
PROMPT = 'prompt solve = """Q: {{ question }}\nA:"""\n'


def direct(path, samples: int) -> list[list[str]]:
    """What the model at ``path`` writes for the recipe's requests, called directly."""
    from kdlang.runtime.teachers import GenerationRequest
    from kdlang.runtime.teachers.hf import HFTeacher

    requests = [
        GenerationRequest(
            f"Q: {q}\nA:", n=samples, temperature=0.8, max_tokens=6, seed=row_seed(7, "label", i)
        )
        for i, q in enumerate(QUESTIONS)
    ]
    with HFTeacher(path, device="cpu") as model:
        return [[g.text for g in gens] for gens in model.generate(requests)]


def test_self_knowledge_the_student_labels_its_own_data(tmp_path, tiny_pair):
    recipe = write_recipe(
        tmp_path,
        DATA
        + PROMPT
        + f"""
model student = hf("{tiny_pair.student}")
stage attempts = label(qs) {{
  teacher = student  prompt = solve  samples = 2  temperature = 0.8  max_tokens = 6
  output = rationale
}}
stage again = label(qs) {{
  teacher = student  prompt = solve  temperature = 0.8  max_tokens = 6  output = other
}}
""",
    )
    document = run_recipe(recipe)
    made = rows(document, "attempts")
    texts = direct(tiny_pair.student, 2)
    assert made == [
        {"question": q, "rationale": texts[i][k], "sample": k}
        for i, q in enumerate(QUESTIONS)
        for k in range(2)
    ]
    assert texts != direct(tiny_pair.teacher, 2)  # it was the student that wrote
    # one model shared by both stages; each stage reports its own usage
    assert node(document, "attempts")["teacher"]["requests"] == 3
    assert node(document, "again")["teacher"]["requests"] == 3
    assert node(document, "again")["teacher"]["completion_tokens"] <= 3 * 6
    assert [r["other"] for r in rows(document, "again")] == [t[0] for t in texts]


def test_system_prompt_and_settings_reach_the_model(tmp_path, monkeypatch):
    recipe = write_recipe(
        tmp_path,
        DATA
        + PROMPT
        + api_model("api")
        + """
prompt explain = "You are a patient teacher. Explain: {{ question }}"
stage answered = label(qs) {
  teacher = api  prompt = solve  system = explain  temperature = 0.5  top_p = 0.9
  max_tokens = 40  stop = ["###"]
}
""",
    )
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert [r["output"] for r in rows(document, "answered")] == [
        f"reply {row_seed(7, 'label', i)}: Q: {q}\nA:" for i, q in enumerate(QUESTIONS)
    ]
    body = next(b for b in server.bodies if "2 + 3" in b["messages"][-1]["content"])
    assert body["messages"][0] == {
        "role": "system",
        "content": "You are a patient teacher. Explain: What is 2 + 3?",
    }
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["stop"]) == (
        0.5,
        0.9,
        40,
        ["###"],
    )
