"""The ``openai`` teacher against a real local HTTP server (tests/fixtures/openai_server.py)."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time

import pytest
import torch
from kdlang.runtime.teachers import (
    GenerationRequest,
    TeacherCapabilityError,
    TeacherRequestError,
    load_teacher,
)
from kdlang.runtime.teachers.hf import HFTeacher
from kdlang.runtime.teachers.openai import OpenAITeacher

from tests.fixtures.openai_server import FakeOpenAIServer, Fault, HFServedModel, echo_reply

pytestmark = pytest.mark.timeout(30)
KEY = "sk-test-VERY-SECRET-0123456789"


def teacher(server: FakeOpenAIServer, **settings) -> OpenAITeacher:
    settings = {"backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0, **settings}
    return OpenAITeacher("tiny", base_url=server.url, **settings)


def texts(results) -> list[list[str]]:
    return [[g.text for g in gens] for gens in results]


# ---------------------------------------------------------------- happy paths


def test_chat_generation_sends_messages_seed_and_settings_and_keeps_order():
    requests = [
        GenerationRequest(
            f"question {i}",
            system="Be brief." if i == 0 else None,
            seed=10 * i,
            temperature=0.7,
            top_p=0.9,
            max_tokens=50,
        )
        for i in range(12)
    ]
    delivered = {}
    with FakeOpenAIServer() as server:
        results = teacher(server, concurrency=4).generate(requests, on_result=delivered.__setitem__)
    assert texts(results) == [[echo_reply(f"question {i}", 10 * i)] for i in range(12)]
    assert delivered == dict(enumerate(results))
    first = next(b for b in server.bodies if b["messages"][-1]["content"] == "question 0")
    assert first["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "question 0"},
    ]
    assert (
        first["model"],
        first["seed"],
        first["temperature"],
        first["top_p"],
        first["max_tokens"],
        first["n"],
    ) == ("tiny", 0, 0.7, 0.9, 50, 1)
    assert server.paths == {"/v1/chat/completions": 12}


def test_completions_endpoint_gets_plain_prompt_with_system_prepended():
    with FakeOpenAIServer() as server:
        ((gen,),) = teacher(server, chat=False).generate(
            [GenerationRequest("What?", system="Be brief.", seed=3)]
        )
    assert server.bodies[0]["prompt"] == "Be brief.\n\nWhat?"
    assert gen.text == echo_reply("Be brief.\n\nWhat?", 3)
    assert server.paths == {"/v1/completions": 1}


def test_n_samples_in_one_call_when_the_server_honours_n():
    with FakeOpenAIServer() as server:
        t = teacher(server)
        results = t.generate([GenerationRequest("p", n=3, seed=40, temperature=1.0)])
    assert texts(results) == [[echo_reply("p", 40 + i) for i in range(3)]]
    assert server.requests == 1 and t.stats.calls == 1


def test_server_ignoring_n_falls_back_to_one_call_per_sample_seeded_seed_plus_i():
    requests = [GenerationRequest(f"p{j}", n=3, seed=100 * j, temperature=1.0) for j in range(3)]
    with FakeOpenAIServer(ignore_n=True) as server:
        t = teacher(server, concurrency=1)
        results = t.generate(requests)
    assert texts(results) == [
        [echo_reply(f"p{j}", 100 * j + i) for i in range(3)] for j in range(3)
    ]
    # n=3 is tried until the first answer shows it is ignored (requests already started may try
    # it too); every missing sample is then one n=1 call, and later requests go straight to it
    sent_n = [b["n"] for b in server.bodies]
    assert 1 <= sent_n.count(3) <= 2 and sent_n[-3:] == [1, 1, 1]
    assert server.requests == t.stats.calls == 9


def test_stop_strings_are_sent_and_the_text_ends_before_them():
    with FakeOpenAIServer() as server:
        ((gen,),) = teacher(server).generate(
            [GenerationRequest("alpha beta gamma", seed=1, stop=[" gamma"])]
        )
    assert server.bodies[0]["stop"] == [" gamma"]
    assert gen.text == "reply 1: alpha beta" and gen.finish_reason == "stop"


# ---------------------------------------------------------------- faults and retries


def test_rate_limit_waits_for_retry_after_and_counts_the_retry():
    with FakeOpenAIServer() as server:
        server.fail("slow down", Fault.rate_limited(retry_after="1"))
        t = teacher(server)
        start = time.monotonic()
        results = t.generate([GenerationRequest("slow down", seed=2)])
        waited = time.monotonic() - start
    assert texts(results) == [[echo_reply("slow down", 2)]]
    assert 1.0 <= waited < 3.0  # honoured, not the 0.01 s backoff
    assert (t.stats.calls, t.stats.retries, t.stats.failures) == (2, 1, 0)


def test_server_errors_timeouts_and_malformed_bodies_are_retried_and_nothing_is_lost():
    prompts = [f"item {i}" for i in range(10)]
    with FakeOpenAIServer() as server:
        server.fail("item 1", Fault.server_error(500), Fault.server_error(503))
        server.fail("item 3", Fault.stall(3.0))
        server.fail("item 5", Fault.malformed("json"), Fault.malformed("html"))
        server.fail(
            "item 7", Fault.malformed("shape"), Fault.malformed("content"), Fault.server_error(502)
        )
        t = teacher(server, timeout=0.4, concurrency=4)
        results = t.generate([GenerationRequest(p, seed=i) for i, p in enumerate(prompts)])
    assert texts(results) == [[echo_reply(p, i)] for i, p in enumerate(prompts)]
    assert t.stats.retries == 2 + 1 + 2 + 3
    assert t.stats.calls == 10 + t.stats.retries == server.requests
    assert t.stats.failures == 0 and t.stats.requests == 10


def test_exhausted_retries_name_the_request_and_keep_the_finished_ones():
    delivered = {}
    with FakeOpenAIServer() as server:
        server.fail("doomed", *[Fault.server_error()] * 10)
        t = teacher(server, max_retries=2, concurrency=2)
        requests = [
            GenerationRequest("fine 0"),
            GenerationRequest("doomed"),
            GenerationRequest("fine 2"),
        ]
        with pytest.raises(TeacherRequestError) as caught:
            t.generate(requests, on_result=delivered.__setitem__)
    error = caught.value
    assert list(error.failed) == [1] and "request 1:" in str(error)
    assert "gave up after 3 attempts" in error.failed[1] and "HTTP 500" in error.failed[1]
    assert sorted(delivered) == [0, 2] and error.not_attempted == []
    assert t.stats.failures == 1 and t.stats.retries == 2


def test_after_a_failure_no_new_request_is_sent_and_the_rest_are_reported():
    with FakeOpenAIServer() as server:
        server.fail("doomed", Fault.server_error(500))
        t = teacher(server, max_retries=0, concurrency=1)
        requests = [GenerationRequest("doomed")] + [
            GenerationRequest(f"fine {i}") for i in range(1, 6)
        ]
        with pytest.raises(TeacherRequestError, match="5 request\\(s\\) not attempted") as caught:
            t.generate(requests)
    assert caught.value.not_attempted == [1, 2, 3, 4, 5]
    assert server.requests == 1 and t.stats.requests == 0


def test_non_retryable_status_fails_at_once():
    with FakeOpenAIServer() as server:
        server.fail("bad", Fault.server_error(400))
        t = teacher(server)
        with pytest.raises(TeacherRequestError, match="request 0: HTTP 400"):
            t.generate([GenerationRequest("bad")])
    assert server.requests == 1 and t.stats.retries == 0 and t.stats.failures == 1


def test_concurrency_bound_is_respected_and_reached():
    with FakeOpenAIServer(latency=0.05) as server:
        teacher(server, concurrency=4).generate([GenerationRequest(f"q{i}") for i in range(24)])
    assert server.max_in_flight == 4


def test_generate_works_from_inside_a_running_event_loop():
    async def caller():
        with FakeOpenAIServer() as server:
            return teacher(server).generate([GenerationRequest("inside", seed=9)])

    assert texts(asyncio.run(caller())) == [[echo_reply("inside", 9)]]


# ---------------------------------------------------------------- log-probs


def test_chat_top_logprobs_are_requested_and_parsed():
    with FakeOpenAIServer() as server:
        ((gen,),) = teacher(server).generate([GenerationRequest("a b", seed=1, top_logprobs=3)])
    assert server.bodies[0]["logprobs"] is True and server.bodies[0]["top_logprobs"] == 3
    topk = gen.logprobs
    assert topk.target_tokens == ["reply", " 1:", " a", " b"]
    assert [row[0] for row in topk.tokens] == topk.target_tokens
    assert [row[1:] for row in topk.tokens] == [["<alt1>", "<alt2>"]] * 4
    assert torch.equal(topk.logprobs[:, 0], topk.target_logprobs)
    assert torch.allclose(topk.logprobs[:, 1], topk.target_logprobs - 1)


def test_missing_logprobs_is_a_clear_capability_error():
    with FakeOpenAIServer(logprobs=False) as server:
        t = teacher(server)
        with pytest.raises(TeacherCapabilityError, match="does not offer top-k log-probs"):
            t.generate([GenerationRequest("x", top_logprobs=2)])
        with pytest.raises(TeacherCapabilityError, match="exceeds"):
            t.generate([GenerationRequest("x", top_logprobs=25)])
        with pytest.raises(TeacherCapabilityError, match="completions endpoint"):
            t.topk_logprobs(["x"], ["y"], k=2)


def test_topk_scoring_through_echo_matches_the_white_box_teacher(tiny_gpt2_dir):
    white = HFTeacher(tiny_gpt2_dir)
    prompts = ["Q: What is 12 plus 7?", "Write a poem."]
    targets = [" A: 12 + 7 = 19.", " The sea and the wind."]
    reference = white.topk_logprobs(prompts, targets, k=5)
    with FakeOpenAIServer(HFServedModel(white)) as server:
        scored = teacher(server, chat=False).topk_logprobs(prompts, targets, k=5)
    name = white.tokenizer.convert_ids_to_tokens
    for ref, got in zip(reference, scored, strict=True):
        assert got.target_tokens == name(ref.target_ids.tolist())
        assert got.tokens == [name(row) for row in ref.ids.tolist()]
        assert torch.allclose(got.logprobs, ref.logprobs, atol=1e-5)
        assert torch.allclose(got.target_logprobs, ref.target_logprobs, atol=1e-5)


def test_generation_served_by_a_real_model_equals_the_white_box_text(tiny_llama_dir):
    white = HFTeacher(tiny_llama_dir)
    requests = [
        GenerationRequest("hello there", seed=s, temperature=1.0, max_tokens=8) for s in range(3)
    ]
    expected = texts(white.generate(requests))
    with FakeOpenAIServer(HFServedModel(white)) as server:
        got = texts(teacher(server).generate(requests))
    assert got == expected


# ---------------------------------------------------------------- secrets


def test_api_key_is_sent_but_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer() as server:
        server.fail("flaky", Fault.server_error(500))
        t = load_teacher(
            "openai", model="tiny", base_url=server.url, api_key=KEY, backoff_base=0.01
        )
        t.generate([GenerationRequest("flaky")])
    assert server.authorizations == [f"Bearer {KEY}"] * 2
    shown = [repr(t), str(t), repr(vars(t)), repr(t.stats), repr(t.stats.as_dict()), caplog.text]
    assert all(KEY not in s for s in shown)
    assert "api_key='***'" in repr(t)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(t)


def test_server_error_echoing_the_key_is_scrubbed_from_the_exception(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(api_key="the-right-key") as server:
        t = teacher(server, api_key=KEY)
        with pytest.raises(TeacherRequestError) as caught:
            t.generate([GenerationRequest("x")])
    error = caught.value
    assert "HTTP 401" in str(error) and "***" in str(error)
    assert KEY not in str(error) and KEY not in repr(error.failed) and KEY not in caplog.text
    assert error.__cause__ is None and error.__suppress_context__
