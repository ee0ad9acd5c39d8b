"""When to retry a call to an OpenAI-compatible server, and how long to wait first.

Pure functions over exception objects and headers, so the policy is readable and testable on its
own. Retried: rate limits (429), request timeouts (408), conflicts (409), too-early (425),
every 5xx, client-side timeouts, connection errors, and response bodies that are not the JSON
we expect. Everything else (400, 401, 403, 404, 422, …) fails at once: repeating a bad request
cannot fix it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRY_STATUS = frozenset({408, 409, 425, 429})


class MalformedResponse(Exception):
    """The server answered 2xx with a body that is not a usable completion."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: before retry ``a`` (0-based) wait a random time in
    ``[d/2, d]`` with ``d = min(max_delay, base * 2**a)``. A server's ``Retry-After`` wins
    when given: we wait that long plus up to ``10 %`` jitter, never less."""

    base: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            # Jitter spreads out the many requests that got the same Retry-After at once.
            return retry_after * (1.0 + 0.1 * rng.random())
        ceiling = min(self.max_delay, self.base * 2.0**attempt)
        return ceiling * (0.5 + 0.5 * rng.random())


def parse_retry_after(headers: object, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or an HTTP
    date), or ``None`` when absent or unreadable. Negative values count as zero."""
    if headers is None:
        return None
    get = headers.get  # type: ignore[attr-defined]
    millis = get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def classify(error: BaseException) -> tuple[bool, str, float | None]:
    """``(retryable, one-line reason, retry_after seconds or None)`` for a failed call."""
    import openai

    if isinstance(error, MalformedResponse):
        return True, f"malformed response: {error}", None
    if isinstance(error, openai.APITimeoutError):
        return True, "timed out", None
    if isinstance(error, openai.APIConnectionError):
        return True, "connection error", None
    if isinstance(error, openai.APIResponseValidationError):
        return True, "malformed response: does not match the API schema", None
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        reason = f"HTTP {status}: {_server_message(error)}"
        retry_after = parse_retry_after(getattr(error.response, "headers", None))
        retryable = status in RETRY_STATUS or status >= 500
        return retryable, reason, retry_after if status in (429, 503) else None
    return False, f"{type(error).__name__}: {error}", None


def _server_message(error: BaseException) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)[:300]
    return str(getattr(error, "message", "") or error)[:300]
