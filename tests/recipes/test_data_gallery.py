"""The gallery's data-shaping recipes, end to end on the tiny models (as in test_gallery.py):
Self-Instruct's list-per-generation split with ``explode``, UltraFeedback's routing to several
generators and its four-aspect judge, DEITA's score-and-select."""

from __future__ import annotations

import json
import math
import zlib

import pytest

from tests.recipes.test_gallery import FLOAT32_TEACHER, JUDGE_KEY, random_pair, run_gallery

__all__ = ["random_pair"]  # the fixture, shared with the gallery's other runs
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def ratings(prompt: str, scales: dict[str, int]) -> dict[str, int]:
    """Ratings that vary with the text rated: aspect i from bits of the prompt's checksum."""
    digest = zlib.crc32(prompt.encode())
    return {name: 1 + (digest >> (4 * i)) % top for i, (name, top) in enumerate(scales.items())}


def test_self_instruct_lines_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "self_instruct_lines.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "seeds.limit=3",
            "lists.max_tokens=24",
            "answered.max_tokens=12",
            "tuned.max_steps=2",
            "tuned.batch=2",
        ],
    )
    lists = run.rows("lists")
    assert len(lists) == 3 * 2
    lines = [line for row in lists for line in row["generation"].split("\n")]
    assert [r["line"] for r in run.rows("lines")] == lines  # one row a line, in order
    tasks = run.rows("tasks")
    assert [sorted(r) for r in tasks] == [["instruction", "task"]] * len(lines)
    for source, row in zip(run.rows("lines"), tasks, strict=True):  # numbering gone, stripped
        line = source["line"].strip()
        if not line:
            assert row["task"] is None
        elif line[0].isdigit() and line.lstrip("0123456789")[:1] in (".", ")"):
            assert row["task"] == line.lstrip("0123456789")[1:].strip() or row["task"] is None
        else:
            assert row["task"] == line
    assert all(3 <= len(r["task"].split()) <= 60 for r in run.rows("distinct"))


def test_ultrafeedback_routing_runs_end_to_end(tmp_path, random_pair, tiny_llama_dir, monkeypatch):
    from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel

    aspects = {"helpfulness": 5, "honesty": 5, "instruction_following": 5, "truthfulness": 5}

    def verdict(prompt: str, seed: int | None) -> str:
        return json.dumps({**ratings(prompt, aspects), "rationale": "checked"})

    # three different models, so that two writers never write the same answer to a row
    writers = {
        "writer_a": random_pair["teacher"],
        "writer_b": random_pair["student"],
        "writer_c": tiny_llama_dir,
    }
    with FakeOpenAIServer(ScriptedModel(verdict), api_key=JUDGE_KEY) as server:
        monkeypatch.setenv("OPENAI_API_KEY", JUDGE_KEY)
        run = run_gallery(
            "ultrafeedback_routing.kd",
            tmp_path,
            {**writers, "student": random_pair["student"]},
            [
                *(f"{name}.dtype=float32" for name in writers),
                "instructions.limit=6",
                "preferences.min_margin=0.25",  # any difference of the mean of 4 ratings
                "candidates.max_tokens=12",
                f'judge.base_url="{server.url}"',
                "aligned.max_steps=2",
                "aligned.batch=2",
            ],
        )
        requests = server.requests
    candidates = run.rows("candidates")
    assert len(candidates) == 6
    for row in candidates:  # two distinct writers a row, one answer each
        assert len(row["responses"]) == len(row["writers"]) == 2
        assert len(set(row["writers"])) == 2 and set(row["writers"]) <= set(writers)
    answers = run.rows("answers")
    assert [(a["instruction"], a["response"], a["writer"]) for a in answers] == [
        (c["instruction"], c["responses"][i], c["writers"][i]) for c in candidates for i in (0, 1)
    ]
    assert requests == len(answers) == 12  # one judgement per response, no retry
    for row in run.rows("overall"):
        assert row["rationale"] == "checked"
        mean = sum(row[a] for a in aspects) / 4
        assert math.isclose(row["score"], mean)
    for pair in run.rows("preferences"):
        assert pair["chosen"] != pair["rejected"] and pair["margin"] >= 0.25


def test_deita_select_runs_end_to_end(tmp_path, random_pair, monkeypatch):
    from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel

    def verdict(prompt: str, seed: int | None) -> str:
        scores = ratings(prompt, {"complexity": 6, "quality": 6})
        return f"Here is my rating: {json.dumps({**scores, 'rationale': 'fine'})}"

    with FakeOpenAIServer(ScriptedModel(verdict), api_key=JUDGE_KEY) as server:
        monkeypatch.setenv("OPENAI_API_KEY", JUDGE_KEY)
        run = run_gallery(
            "deita_select.kd",
            tmp_path,
            {"teacher": random_pair["teacher"], "student": random_pair["student"]},
            [
                *FLOAT32_TEACHER,
                "pool.limit=8",
                "answered.max_tokens=12",
                f'rater.base_url="{server.url}"',
                "tuned.max_steps=2",
                "tuned.batch=2",
            ],
        )
    rated = run.rows("rated")
    assert len(rated) == 8 and all(r["why"] == "fine" for r in rated)
    scored = run.rows("scored")
    assert [r["evol_score"] for r in scored] == [r["complexity"] * r["quality"] for r in rated]
    diverse = run.rows("diverse")
    chosen = run.rows("chosen")
    assert len(chosen) == math.ceil(len(diverse) / 2) or len(chosen) == len(diverse) // 2
    # the top half by score, in input order: no row left out scores above a row kept
    kept = {r["instruction"] for r in chosen}
    assert [r for r in diverse if r["instruction"] in kept] == chosen
    left = [r["evol_score"] for r in diverse if r["instruction"] not in kept]
    assert not left or max(left) <= min(r["evol_score"] for r in chosen)
