"""``openai``: a black-box teacher behind any OpenAI-compatible HTTP server.

vLLM, TGI, llama.cpp, Ollama and hosted APIs all speak the chat-completions (and often the
completions) protocol. Requests go through the official client (``AsyncOpenAI`` with its own
retries off) on an asyncio loop with at most ``concurrency`` calls in flight; retries, backoff
and ``Retry-After`` follow :mod:`.openai_retry`; bodies are read by :mod:`.openai_parse`.

Secrets: ``api_key`` arrives already resolved (the recipe's ``env("NAME")``). It is held in a
:class:`Secret`, sent only in the ``Authorization`` header, and never appears in ``repr``,
logs, stats or exception messages (server messages are scrubbed of it, client exceptions are
not chained). ``OPENAI_API_KEY`` is not read implicitly: a recipe names its secrets.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .base import (
    Generation,
    GenerationRequest,
    OnResult,
    Prompt,
    Teacher,
    TeacherCapabilityError,
    TeacherRequestError,
    TopK,
)
from .openai_parse import (
    count_null_content,
    is_json,
    load_body,
    parse_echo_scores,
    parse_generations,
)
from .openai_pool import ServerPool, connection_level
from .openai_retry import Backoff, classify
from .prompts import render_plain, to_messages
from .secret import Secret
from .sync import run_sync

log = logging.getLogger(__name__)
T = TypeVar("T")
NO_KEY = "no-key"  # the client insists on a key; servers without auth ignore this one


class _Skipped(Exception):
    """The call stopped launching requests after a failure; this one was never sent."""


class _Failed(Exception):
    """A request failed for good; the message is already scrubbed."""


@dataclass
class _Run:
    """One ``generate``/``topk_logprobs`` call: its client, concurrency slots and outcome."""

    size: int
    pool: ServerPool
    slots: asyncio.Semaphore
    results: list[Any] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.results = [None] * self.size


class OpenAITeacher(Teacher):
    """A model served behind an OpenAI-compatible API.

    ``model``: the served model name. ``base_url``: server root, e.g.
    ``http://localhost:8000/v1`` (``None`` = api.openai.com), or a list of replicas of the model
    (:mod:`.openai_pool`). ``api_key``: resolved secret or ``None`` for servers without auth.
    ``concurrency``: most calls in flight, per server. ``timeout``:
    seconds per HTTP call. ``max_retries``: retries per call after the first attempt.
    ``chat``: chat-completions (``True``) or completions endpoint. ``logprobs_top_k``: the
    largest top-k the server returns (OpenAI and vLLM default: 20; 0 if it offers none).
    ``max_tokens_param``: request field for the token limit (``"max_completion_tokens"`` for
    servers that reject ``max_tokens``). ``backoff_base``/``backoff_max``: see
    :class:`~.openai_retry.Backoff`.
    """

    white_box = False

    def __init__(
        self,
        model: str,
        *,
        base_url: str | list[str] | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 6,
        chat: bool = True,
        logprobs_top_k: int = 20,
        max_tokens_param: str = "max_tokens",
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        super().__init__()
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.base_urls: list[str | None] = (
            list(base_url) if isinstance(base_url, list) else [base_url]
        )
        if not self.base_urls:
            raise ValueError("base_url: an empty list names no server")
        self.base_url = base_url
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.chat = chat
        self.logprobs_top_k = logprobs_top_k
        self.max_tokens_param = max_tokens_param
        self.backoff = Backoff(backoff_base, backoff_max)
        self._api_key = Secret(api_key or "")
        self._n_supported: bool | None = None  # learnt from the first reply to n > 1
        self._rng = random.Random()

    def __repr__(self) -> str:
        key = "'***'" if self._api_key.reveal() else "None"
        return (
            f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r}, api_key={key}, "
            f"chat={self.chat}, concurrency={self.concurrency})"
        )

    # ---------------------------------------------------------------- public API

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: OnResult | None = None
    ) -> list[list[Generation]]:
        """See :meth:`Teacher.generate`. Blocking; runs its own event loop (in a helper thread
        if the calling thread already runs one, where ``on_result`` is then called)."""
        return run_sync(lambda: self.agenerate(requests, on_result=on_result))

    async def agenerate(
        self, requests: Sequence[GenerationRequest], *, on_result: OnResult | None = None
    ) -> list[list[Generation]]:
        """``generate`` for callers that already run an event loop."""
        for request in requests:
            if request.top_logprobs > self.logprobs_top_k:
                raise TeacherCapabilityError(
                    f"top_logprobs={request.top_logprobs} exceeds what this server offers "
                    f"(logprobs_top_k={self.logprobs_top_k})"
                )
        return await self._run_all(requests, self._generate_one, on_result)

    def topk_logprobs(
        self,
        prompts: Sequence[Prompt],
        targets: Sequence[str],
        k: int,
        *,
        systems: Sequence[str | None] | None = None,
    ) -> list[TopK]:
        """See :meth:`Teacher.topk_logprobs`. Needs the completions endpoint (``chat=False``)
        of a server that echoes prompt log-probs (e.g. vLLM): the prompt text (system
        prepended) plus the target is sent with ``echo=True, logprobs=k``; rows are the
        server's tokens inside the target's character span, as token strings."""
        if self.chat:
            raise TeacherCapabilityError(
                "scoring a given target needs the completions endpoint with echo (chat=false, "
                "e.g. vLLM); chat APIs only return log-probs of their own generations "
                "(GenerationRequest.top_logprobs)"
            )
        if not 1 <= k <= self.logprobs_top_k:
            raise TeacherCapabilityError(
                f"k={k} is outside 1..{self.logprobs_top_k} (logprobs_top_k)"
            )
        if len(prompts) != len(targets):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
        systems = list(systems) if systems is not None else [None] * len(prompts)
        items = [(render_plain(p, s), t) for p, s, t in zip(prompts, systems, targets, strict=True)]

        async def score(run: _Run, index: int, item: tuple[str, str]) -> TopK:
            prompt, target = item
            params = {
                "prompt": prompt + target,
                "echo": True,
                "logprobs": k,
                "max_tokens": 1,
                "temperature": 0.0,
            }
            return await self._call(
                run, index, "completions", params,
                lambda data: parse_echo_scores(data, prompt_chars=len(prompt), target_chars=len(target), k=k),
            )  # fmt: skip

        return run_sync(lambda: self._run_all(items, score, None))

    def close(self) -> None:
        """Nothing is held between calls: each call opens and closes its own client."""

    # ---------------------------------------------------------------- orchestration

    async def _run_all(
        self,
        items: Sequence[T],
        work: Callable[[_Run, int, T], Awaitable[Any]],
        on_result: Callable[[int, Any], None] | None,
    ) -> list[Any]:
        import openai

        clients = [
            openai.AsyncOpenAI(
                api_key=self._api_key.reveal() or NO_KEY,
                base_url=url,
                timeout=self.timeout,
                max_retries=0,
            )
            for url in self.base_urls
        ]
        pool = ServerPool(
            clients,
            self.concurrency,
            rest_base=self.backoff.base,
            rest_max=self.backoff.max_delay,
        )
        run = _Run(len(items), pool, asyncio.Semaphore(self.concurrency * len(pool)))
        # Bounds the tasks alive at once (the semaphore bounds calls), so a million requests
        # do not become a million pending tasks.
        live = asyncio.Semaphore(2 * self.concurrency)
        tasks: list[asyncio.Task[None]] = []

        async def one(index: int, item: T) -> None:
            try:
                run.results[index] = await work(run, index, item)
            except _Skipped:
                run.skipped.append(index)
                return
            except _Failed as error:
                run.failed[index] = str(error)
                run.stopping = True
                self.stats.failures += 1
                log.warning("teacher request %d failed: %s", index, error)
                return
            finally:
                live.release()
            self.stats.requests += 1
            if on_result is not None:
                on_result(index, run.results[index])

        try:
            for index, item in enumerate(items):
                await live.acquire()
                if run.stopping:
                    live.release()
                    run.skipped.append(index)
                    continue
                tasks.append(asyncio.create_task(one(index, item)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
        if run.failed:
            raise TeacherRequestError(run.failed, sorted(run.skipped)) from None
        return run.results

    async def _generate_one(
        self, run: _Run, index: int, request: GenerationRequest
    ) -> list[Generation]:
        if request.n == 1 or self._n_supported is not False:
            generations = await self._complete(run, index, request, request.n, request.seed)
            if len(generations) >= request.n:
                if request.n > 1:
                    self._n_supported = True
                return generations[: request.n]
            # The server ignored n: draw the missing samples one by one, seeded seed + i.
            self._n_supported = False
            first = len(generations)
        else:
            generations, first = [], 0
        rest = await asyncio.gather(
            *(
                self._complete(run, index, request, 1, request.seed + i)
                for i in range(first, request.n)
            ),
            return_exceptions=True,
        )
        for outcome in rest:
            if isinstance(outcome, BaseException):
                raise outcome
        return generations + [g[0] for g in rest]  # type: ignore[index]

    async def _complete(
        self, run: _Run, index: int, request: GenerationRequest, n: int, seed: int
    ) -> list[Generation]:
        params: dict[str, Any] = {
            "n": n,
            "temperature": request.temperature,
            "top_p": request.top_p,
            self.max_tokens_param: request.max_tokens,
            "seed": seed,
            **({"extra_body": {"top_k": request.top_k}} if request.top_k else {}),
        }
        if request.stop:
            params["stop"] = list(request.stop)
        if self.chat:
            params["messages"] = to_messages(request.prompt, request.system)
            if request.top_logprobs:
                params.update(logprobs=True, top_logprobs=request.top_logprobs)
        else:
            params["prompt"] = render_plain(request.prompt, request.system)
            if request.top_logprobs:
                params["logprobs"] = request.top_logprobs
        endpoint = "chat" if self.chat else "completions"

        def parse(data: dict[str, Any]) -> list[Generation]:
            generations = parse_generations(
                data, chat=self.chat, top_logprobs=request.top_logprobs, stop=request.stop
            )
            self.stats.null_content += count_null_content(data, chat=self.chat)
            return generations

        generations = await self._call(run, index, endpoint, params, parse)
        for g in generations:
            self.stats.completion_tokens += g.completion_tokens
        if generations:
            self.stats.prompt_tokens += generations[0].prompt_tokens
        return generations

    async def _call(
        self,
        run: _Run,
        index: int,
        endpoint: str,
        params: dict[str, Any],
        parse: Callable[[dict[str, Any]], T],
    ) -> T:
        """One logical call with retries; holds a concurrency slot throughout, including the
        waits, so a rate-limited server is not hit by fresh calls while we back off. Each
        attempt goes to a server of the pool; a retry goes at once to another live server the
        call has not failed on, and backs off only when none is left (:mod:`.openai_pool`)."""
        async with run.slots:
            if run.stopping:
                raise _Skipped
            tried: set[int] = set()
            for attempt in range(self.max_retries + 1):
                self.stats.calls += 1
                if attempt:
                    self.stats.retries += 1
                server = await run.pool.take(tried)
                client = server.client
                create = (client.chat if endpoint == "chat" else client).completions
                ok, reason = False, ""
                try:
                    # ``timeout`` bounds the whole attempt (connect, send, every read), so a
                    # server trickling bytes cannot hold a call past it.
                    raw = await asyncio.wait_for(
                        create.with_raw_response.create(model=self.model, **params), self.timeout
                    )
                    result = parse(load_body(raw.text))
                    # only a reply that parsed counts as labelled other than JSON
                    self.stats.non_json_replies += not is_json(raw.headers.get("content-type", ""))
                    ok = True
                    return result
                except TeacherCapabilityError:
                    raise
                except TimeoutError:
                    retryable, reason, retry_after = True, "timed out (deadline)", None
                except Exception as error:  # classified below; unknown kinds are not retried
                    retryable, reason, retry_after = classify(error)
                finally:
                    down = not ok and connection_level(reason)
                    await run.pool.give_back(server, ok=ok, connection_failed=down)
                reason = self._api_key.scrub(reason)
                if not retryable:
                    raise _Failed(reason) from None
                if attempt == self.max_retries:
                    raise _Failed(f"gave up after {attempt + 1} attempts; last: {reason}") from None
                tried.add(server.index)
                if run.pool.others_live(tried):
                    self.stats.failovers += 1
                    log.info(
                        "teacher request %d: %s; retry %d on another server",
                        index,
                        reason,
                        attempt + 1,
                    )
                    continue
                tried.clear()
                delay = self.backoff.delay(attempt, retry_after, self._rng)
                log.info(
                    "teacher request %d: %s; retry %d in %.2f s", index, reason, attempt + 1, delay
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
