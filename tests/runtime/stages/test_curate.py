"""``curate``: topics x templates, ``per_item`` samples per row, each a row with ``output``."""

from __future__ import annotations

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel
from tests.runtime.stages.support import (
    BASE_URL_ENV,
    api_model,
    node,
    row_seed,
    rows,
    run_recipe,
    write_recipe,
)

pytestmark = pytest.mark.timeout(60)

TAXONOMY = """
dataset taxonomy = inline([
  {topic: "tides", task: "quiz"},
  {topic: "bread", task: "advice"},
  {topic: "rust", task: "explain"},
])
prompt write_item = \"\"\"{% if task == "quiz" %}Write one quiz question about {{ topic }}.
{% elif task == "advice" %}Give one piece of advice about {{ topic }}.
{% else %}Explain {{ topic }} to a student.{% endif %}\"\"\"
"""


def test_every_row_is_rendered_and_written_per_item_times(tmp_path, monkeypatch):
    empty_seed = row_seed(7, "curate", 1) + 1  # the second sample of the second row
    respond = lambda prompt, seed: "  " if seed == empty_seed else f"{prompt.strip()} [{seed}]"  # noqa: E731
    recipe = write_recipe(
        tmp_path,
        TAXONOMY
        + api_model("api")
        + """
stage written = curate(taxonomy) { teacher = api  prompt = write_item  per_item = 3  output = text }
""",
    )
    with FakeOpenAIServer(ScriptedModel(respond)) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    prompts = [
        "Write one quiz question about tides.",
        "Give one piece of advice about bread.",
        "Explain rust to a student.",
    ]
    topics = [("tides", "quiz"), ("bread", "advice"), ("rust", "explain")]
    expected = [
        {"topic": topic, "task": task, "text": f"{prompt} [{row_seed(7, 'curate', i) + k}]"}
        for i, ((topic, task), prompt) in enumerate(zip(topics, prompts, strict=True))
        for k in range(3)
        if row_seed(7, "curate", i) + k != empty_seed
    ]
    assert rows(document, "written") == expected
    result = node(document, "written")
    assert result["rows_out"] == 8 and result["dropped"] == {"empty": 1}
    assert server.requests == 3 and {b["n"] for b in server.bodies} == {3}


def test_curate_with_a_white_box_teacher(tmp_path, tiny_pair):
    recipe = write_recipe(
        tmp_path,
        TAXONOMY
        + f"""
model teacher = hf("{tiny_pair.teacher}")
stage written = curate(taxonomy) {{
  teacher = teacher  prompt = write_item  per_item = 2  temperature = 0.9  max_tokens = 6
}}
""",
    )
    document = run_recipe(recipe)
    result = node(document, "written")
    made = rows(document, "written")
    assert result["rows_out"] + result["dropped"]["empty"] == 6
    assert all(set(r) == {"topic", "task", "output"} and r["output"].strip() for r in made)
    assert result["teacher"]["requests"] == 3
