"""An ``openai`` teacher over several servers: balancing by outstanding requests, failover when
a server dies mid-call, nothing lost or duplicated; and the pool's choices on their own."""

from __future__ import annotations

import asyncio
import threading

import pytest
from kdlang.runtime.teachers import GenerationRequest
from kdlang.runtime.teachers.openai import OpenAITeacher
from kdlang.runtime.teachers.openai_pool import ServerPool, connection_level

from tests.fixtures.openai_server import FakeOpenAIServer, echo_reply

pytestmark = pytest.mark.timeout(60)


def pooled(*servers: FakeOpenAIServer, **settings) -> OpenAITeacher:
    settings = {"backoff_base": 0.05, "backoff_max": 0.2, "timeout": 5.0, **settings}
    return OpenAITeacher("tiny", base_url=[s.url for s in servers], **settings)


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"question {i}", seed=i, max_tokens=8) for i in range(n)]


def expected(n: int) -> list[list[str]]:
    return [[echo_reply(f"question {i}", i)] for i in range(n)]


def test_two_equal_servers_share_the_requests_and_each_stays_within_its_concurrency():
    with FakeOpenAIServer(latency=0.03) as a, FakeOpenAIServer(latency=0.03) as b:
        teacher = pooled(a, b, concurrency=3)
        results = teacher.generate(requests(48))
    assert [[g.text for g in gens] for gens in results] == expected(48)
    assert a.requests + b.requests == 48  # no failure: every request sent exactly once
    assert a.requests >= 12 and b.requests >= 12
    assert a.max_in_flight <= 3 and b.max_in_flight <= 3
    assert teacher.stats.failovers == 0 and teacher.stats.requests == 48


def test_the_slow_server_gets_fewer_requests_than_the_fast_one():
    # The slow server holds its 2 slots for 0.4 s; the fast one answers in 0.02 s: while the
    # slow server's first two are out, the fast one serves roughly 0.4 / 0.02 * 2 = 40.
    with FakeOpenAIServer(latency=0.4) as slow, FakeOpenAIServer(latency=0.02) as fast:
        results = pooled(slow, fast, concurrency=2).generate(requests(40))
    assert [[g.text for g in gens] for gens in results] == expected(40)
    assert slow.requests + fast.requests == 40
    assert slow.requests <= 8 < 32 <= fast.requests


def test_a_server_killed_mid_call_loses_and_duplicates_nothing():
    delivered: list[int] = []
    with FakeOpenAIServer(latency=0.05) as a, FakeOpenAIServer(latency=0.05) as b:
        teacher = pooled(a, b, concurrency=3)

        def on_result(index, generations):
            delivered.append(index)
            if len(delivered) == 10:
                threading.Thread(target=a.kill).start()

        results = teacher.generate(requests(60), on_result=on_result)
    assert [[g.text for g in gens] for gens in results] == expected(60)
    assert sorted(delivered) == list(range(60))  # each result delivered exactly once
    assert teacher.stats.failures == 0 and teacher.stats.requests == 60
    # The requests a dropped when it died went to b at once; a answered only some of the 60.
    assert a.answered + b.answered >= 60 and a.answered < 60 - 10
    assert b.answered >= 60 - a.answered
    assert teacher.stats.failovers >= 1


def test_with_every_server_dead_the_call_fails_after_its_retries():
    from kdlang.runtime.teachers import TeacherRequestError

    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        teacher = pooled(a, b, max_retries=3)
        a.kill()
        b.kill()
        with pytest.raises(TeacherRequestError):
            teacher.generate(requests(2))
    assert teacher.stats.failures >= 1


# ---------------------------------------------------------------- the pool's choices


class _Client:
    async def close(self) -> None:
        pass


def test_the_pool_takes_the_least_loaded_live_server_and_avoids_the_ones_asked():
    async def scenario() -> list[int]:
        pool = ServerPool([_Client(), _Client(), _Client()], 2, rest_base=10.0, rest_max=10.0)
        first = await pool.take(set())
        second = await pool.take(set())
        third = await pool.take(set())
        fourth = await pool.take({0})  # each has 1 outstanding: 0 is avoided, 1 took fewer
        # server 2 fails at the connection level: it rests 10 s, new attempts avoid it
        await pool.give_back(third, ok=False, connection_failed=True)
        fifth = await pool.take(set())
        return [s.index for s in (first, second, third, fourth, fifth)]

    assert asyncio.run(scenario()) == [0, 1, 2, 1, 0]


def test_when_every_server_rests_the_one_whose_rest_ends_first_is_tried():
    async def scenario() -> list[int]:
        pool = ServerPool([_Client(), _Client()], 4, rest_base=5.0, rest_max=60.0)
        a, b = await pool.take(set()), await pool.take(set())
        await pool.give_back(a, ok=False, connection_failed=True)  # a rests 5 s
        await pool.give_back(b, ok=False, connection_failed=True)  # b rests 5 s, ending later
        probe = await pool.take(set())  # a: its rest ends first
        await pool.give_back(probe, ok=False, connection_failed=True)  # a rests 10 s now
        return [probe.index, (await pool.take(set())).index]

    assert asyncio.run(scenario()) == [0, 1]


def test_a_full_server_makes_the_attempt_wait_until_one_is_given_back():
    async def scenario() -> tuple[bool, int]:
        pool = ServerPool([_Client()], 1, rest_base=1.0, rest_max=1.0)
        held = await pool.take(set())
        waiting = asyncio.ensure_future(pool.take(set()))
        await asyncio.sleep(0.05)
        blocked = not waiting.done()
        await pool.give_back(held, ok=True, connection_failed=False)
        return blocked, (await waiting).index

    assert asyncio.run(scenario()) == (True, 0)


def test_which_failures_make_a_server_rest():
    assert connection_level("connection error")
    assert connection_level("timed out (deadline)")
    assert connection_level("HTTP 503: overloaded")
    assert not connection_level("HTTP 429: slow down")
    assert not connection_level("malformed response: not JSON")


# ---------------------------------------------------------------- in a recipe


def test_a_label_stage_over_two_servers_one_killed_keeps_every_row_once(tmp_path, monkeypatch):
    from tests.runtime.stages.support import node, row_seed, rows, run_recipe, write_recipe

    questions = [f"q{i:02d}" for i in range(30)]
    body = (
        "dataset qs = inline([" + ", ".join(f'{{question: "{q}"}}' for q in questions) + "])\n"
        'model api = openai("scripted", base_url = [env("KD_A"), env("KD_B")], concurrency = 2, '
        "backoff_base = 0.05, backoff_max = 0.2)\n"
        'prompt ask = "Answer: {{ question }}"\n'
        "stage answers = label(qs) { teacher = api  prompt = ask  temperature = 0.7 }\n"
    )
    recipe = write_recipe(tmp_path, body)
    with FakeOpenAIServer(latency=0.05) as a, FakeOpenAIServer(latency=0.05) as b:
        monkeypatch.setenv("KD_A", a.url)
        monkeypatch.setenv("KD_B", b.url)
        a.kill_after = 6
        document = run_recipe(recipe)
    want = [
        {"question": q, "output": echo_reply(f"Answer: {q}", row_seed(7, "label", i))}
        for i, q in enumerate(questions)
    ]
    assert rows(document, "answers") == want
    assert node(document, "answers")["teacher"]["failures"] == 0
    assert a.answered == 6 and a.killed.is_set() and b.answered >= 30 - 6


def test_the_servers_of_a_pool_are_replicas_and_do_not_enter_the_fingerprint(tmp_path):
    from tests.plan.support import fingerprints

    def label_fingerprint(urls: str) -> str:
        body = (
            'recipe "r" { seed = 1 }\n'
            'dataset qs = inline([{question: "a"}])\n'
            f'model api = openai("m", base_url = {urls})\n'
            'prompt ask = "Q: {{ question }}"\n'
            "stage answers = label(qs) { teacher = api  prompt = ask }\n"
        )
        return fingerprints(tmp_path, body)["answers"]

    two = label_fingerprint('[env("A"), env("B")]')
    assert label_fingerprint('[env("A"), env("B"), env("C")]') == two
    assert label_fingerprint('["http://h1/v1", env("B")]') == two
    assert label_fingerprint('env("A")') != two  # one server: its address is the identity
    assert label_fingerprint('env("A")') != label_fingerprint('env("Z")')
