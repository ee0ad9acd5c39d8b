"""Retry policy and response parsing of the ``openai`` teacher, without a server."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import openai
import pytest
from kdlang.runtime.teachers import TeacherCapabilityError
from kdlang.runtime.teachers.openai_parse import load_body, parse_generations
from kdlang.runtime.teachers.openai_retry import (
    Backoff,
    MalformedResponse,
    classify,
    parse_retry_after,
)

try:  # the HTTP library under the openai client: httpx2 in recent releases, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

REQUEST = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status_error(cls, status: int, headers=None, body=None):
    response = httpx.Response(status, headers=headers or {}, request=REQUEST)
    return cls(f"Error code: {status}", response=response, body=body)


def test_retry_after_seconds_milliseconds_and_http_dates():
    now = 1_700_000_000.0
    in_90s = format_datetime(datetime.fromtimestamp(now + 90, tz=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": in_90s}, now=now) == pytest.approx(90.0)
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    backoff, rng = Backoff(base=0.5, max_delay=4.0), random.Random(0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = [backoff.delay(attempt, None, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not constant
    waits = [backoff.delay(0, 3.0, rng) for _ in range(200)]
    assert min(waits) >= 3.0 and max(waits) <= 3.3


def test_classification_of_client_errors():
    limited = status_error(
        openai.RateLimitError, 429, {"retry-after": "2"}, {"message": "slow down"}
    )
    assert classify(limited) == (True, "HTTP 429: slow down", 2.0)
    unavailable = status_error(openai.InternalServerError, 503, {"retry-after": "4"})
    assert classify(unavailable)[0::2] == (True, 4.0)
    assert classify(status_error(openai.InternalServerError, 500, {"retry-after": "4"}))[0::2] == (
        True,
        None,
    )
    assert classify(status_error(openai.BadRequestError, 400))[0] is False
    assert classify(status_error(openai.AuthenticationError, 401))[0] is False
    assert classify(openai.APITimeoutError(REQUEST))[:2] == (True, "timed out")
    assert classify(openai.APIConnectionError(request=REQUEST))[:2] == (True, "connection error")
    assert classify(MalformedResponse("body is not JSON"))[0] is True
    assert classify(KeyError("x"))[0] is False


def test_parse_orders_choices_shares_usage_and_cuts_stop_strings():
    data = {
        "choices": [
            {"index": 1, "message": {"content": "second END tail"}, "finish_reason": "stop"},
            {"index": 0, "message": {"content": "first"}, "finish_reason": "length"},
            {"index": 2, "message": {"content": None}, "finish_reason": "content_filter"},
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 30},
    }
    gens = parse_generations(data, chat=True, top_logprobs=0, stop=[" END"])
    assert [(g.text, g.finish_reason) for g in gens] == [
        ("first", "length"),
        ("second", "stop"),
        ("", "content_filter"),
    ]
    assert [(g.prompt_tokens, g.completion_tokens) for g in gens] == [(11, 10)] * 3


@pytest.mark.parametrize(
    "text",
    [
        '{"choices": [',
        "<html>bad gateway</html>",
        "[1, 2]",
        '{"choices": []}',
        '{"choices": [{"message": "hi"}]}',
    ],
)
def test_unusable_bodies_are_malformed(text):
    with pytest.raises(MalformedResponse):
        parse_generations(load_body(text), chat=True, top_logprobs=0, stop=None)


def test_absent_logprobs_are_a_capability_error_not_a_malformed_body():
    data = {"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": None}]}
    with pytest.raises(TeacherCapabilityError):
        parse_generations(data, chat=True, top_logprobs=2, stop=None)
