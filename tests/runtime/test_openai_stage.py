"""A ``label`` stage on the ``openai`` teacher against a server that misbehaves: 429 with
Retry-After, 5xx, timeouts and malformed bodies are retried, nothing is lost, and the retries
show in the run report."""

from __future__ import annotations

import pytest

from tests.fixtures.openai_server import FakeOpenAIServer, Fault, echo_reply
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

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]
RECIPE = (
    "dataset qs = inline(["
    + ", ".join(f'{{question: "{w}"}}' for w in WORDS)
    + "])\n"
    + api_model("api", concurrency=4, timeout=0.5, max_retries=3)
    + '\nprompt ask = "Tell me about {{ question }}."\n'
    + "stage answers = label(qs) { teacher = api  prompt = ask  max_tokens = 64 }\n"
)


def expected_rows() -> list[dict]:
    return [
        {"question": w, "output": echo_reply(f"Tell me about {w}.", row_seed(7, "label", i))}
        for i, w in enumerate(WORDS)
    ]


def test_faults_are_retried_and_counted_and_no_row_is_lost(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, RECIPE)
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        server.fail("about bravo", Fault.rate_limited(retry_after="0.4"))
        server.fail("about charlie", Fault.server_error(500), Fault.server_error(502))
        server.fail("about delta", Fault.stall(5.0))
        server.fail("about echo", Fault.malformed("json"), Fault.malformed("html"))
        server.fail("about foxtrot", Fault.malformed("shape"))
        server.fail("about golf", Fault.malformed("content"))
        document = run_recipe(recipe)
        requests = server.requests
    assert rows(document, "answers") == expected_rows()
    result = node(document, "answers")
    assert result["status"] == "ran" and result["rows_out"] == len(WORDS)
    assert result["teacher"] == {
        "requests": 12,
        "calls": 12 + 8,
        "retries": 8,
        "failures": 0,
        "prompt_tokens": result["teacher"]["prompt_tokens"],
        "completion_tokens": 12 * 6,  # "reply <seed>: Tell me about <word>."
        "non_json_replies": 0,  # the HTML reply failed to parse: retried, not counted
        "null_content": 0,
        "failovers": 0,  # one server: every retry backs off
    }
    assert requests == 20
    assert result["seconds"] >= 0.4  # the 429's Retry-After was waited out
    markdown = (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "requests 12, calls 20" in markdown and "retries 8" in markdown


def test_a_request_that_keeps_failing_fails_the_stage_and_the_rerun_loses_nothing(
    tmp_path, monkeypatch
):
    broken, clean = (
        write_recipe(tmp_path / "broken", RECIPE),
        write_recipe(tmp_path / "clean", RECIPE),
    )
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        server.fail("about kilo", *[Fault.server_error(503)] * 4)  # 1 try + 3 retries
        failed = run_recipe(broken, expect=1)
        error = node(failed, "answers")["error"]
        assert "gave up after 4 attempts" in error and "HTTP 503" in error
        assert node(failed, "answers")["teacher"]["failures"] == 1
        before = server.requests
        resumed = run_recipe(broken)
        again = server.requests - before
        reference = run_recipe(clean)
    assert rows(resumed, "answers") == rows(reference, "answers") == expected_rows()
    done = node(resumed, "answers")["stats"]["resumed_rows"]
    assert done >= 8  # rows finished before the failure were kept...
    assert again == len(WORDS) - done  # ...and not asked for again
    assert node(resumed, "answers")["teacher"]["requests"] == again


def test_the_recipe_sets_the_token_limit_field_and_the_backoff(tmp_path, monkeypatch):
    """``max_tokens_param``, ``backoff_base`` and ``backoff_max`` of the recipe reach the
    requests: the limit goes in the field the server wants, and a retry waits what they say."""
    recipe = write_recipe(
        tmp_path,
        'dataset qs = inline([{question: "alpha"}])\n'
        + api_model(
            "api", max_tokens_param="max_completion_tokens", backoff_base=0.3, backoff_max=0.3
        )
        + '\nprompt ask = "Tell me about {{ question }}."\n'
        + "stage answers = label(qs) { teacher = api  prompt = ask  max_tokens = 16 }\n",
    )
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        server.fail("about alpha", Fault.server_error(500))
        document = run_recipe(recipe)
        bodies = list(server.bodies)
    assert len(bodies) == 2  # the failure and its retry
    for body in bodies:
        assert body["max_completion_tokens"] == 16 and "max_tokens" not in body
    # jittered backoff waits a time in [d/2, d] with d = min(backoff_max, base * 2^attempt)
    assert node(document, "answers")["seconds"] >= 0.15


def test_a_slow_loris_meets_the_deadline_and_odd_replies_are_counted(tmp_path, monkeypatch):
    """``timeout`` bounds a whole attempt: a reply trickled one byte per 50 ms (a few hundred
    bytes, so ~10 s in all) is cut at 0.5 s and retried. JSON labelled octet-stream is used and
    counted; a ``null`` completion becomes "" and is counted."""
    recipe = write_recipe(tmp_path, RECIPE)
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        server.fail("about bravo", Fault.slow_loris(every=0.05))
        server.fail("about charlie", Fault.octet_stream())
        server.fail("about delta", Fault.null())
        document = run_recipe(recipe)
        requests = server.requests
    expected = expected_rows()
    expected[3]["output"] = ""  # delta's reply had null content
    assert rows(document, "answers") == expected
    teacher = node(document, "answers")["teacher"]
    assert teacher["retries"] == 1 and teacher["failures"] == 0 and requests == 13
    assert teacher["non_json_replies"] == 1 and teacher["null_content"] == 1
    assert node(document, "answers")["seconds"] < 5.0  # the trickle was not waited out
