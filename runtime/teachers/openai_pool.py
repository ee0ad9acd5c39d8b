"""Several servers of one model behind one ``openai`` teacher (``base_url = [A, B, ...]``).

The servers are replicas (several vLLM processes, say): a request may go to any of them. Each
attempt of a call goes to the live server with the fewest requests outstanding (ties: the one
that has taken fewer), at most ``per_server`` at once on each. A retryable failure sends the
retry at once to another live server the call has not just failed on; only when the call has
failed on every live server does it back off as a single-server call would. A server whose
connection fails (refused, reset, timed out, 5xx) rests: new attempts avoid it for a while that
doubles with each consecutive failure (``backoff_base`` up to ``backoff_max``), after which one
attempt probes it again; a success ends the rest. When every server rests, the one that rested
longest is tried anyway: a request is never refused for want of a server.

Nothing is lost or duplicated downstream: the teacher records each request's result once, by
index, whichever server answered (a server killed after doing the work but before replying
makes the work happen twice on the servers, never twice in the output).

With one server this is exactly the single-server behaviour: every attempt goes to it, and
every retry backs off.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Server:
    """One endpoint: its client and what the pool knows of it."""

    index: int
    client: Any
    outstanding: int = 0
    taken: int = 0
    """Attempts sent to it."""
    failed: int = 0
    """Attempts that failed on it (any reason)."""
    consecutive: int = 0
    """Connection-level failures since its last success."""
    resting_until: float = 0.0


class ServerPool:
    def __init__(
        self, clients: list[Any], per_server: int, *, rest_base: float, rest_max: float
    ) -> None:
        if not clients:
            raise ValueError("a server pool needs at least one server")
        self.servers = [Server(i, client) for i, client in enumerate(clients)]
        self.per_server = per_server
        self.rest_base = rest_base
        self.rest_max = rest_max
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self.servers)

    def live(self, now: float | None = None) -> list[Server]:
        now = time.monotonic() if now is None else now
        return [s for s in self.servers if s.resting_until <= now]

    async def take(self, avoid: set[int]) -> Server:
        """A server for one attempt (counted outstanding until :meth:`give_back`): the least
        loaded live one not in ``avoid`` if any, else the least loaded live one, else (all
        resting) the one whose rest ends first. Waits while every candidate is at
        ``per_server``."""
        async with self._changed:
            while True:
                now = time.monotonic()
                candidates = self.live(now) or [min(self.servers, key=lambda s: s.resting_until)]
                fresh = [s for s in candidates if s.index not in avoid]
                open_ = [s for s in (fresh or candidates) if s.outstanding < self.per_server]
                if open_:
                    server = min(open_, key=lambda s: (s.outstanding, s.taken, s.index))
                    server.outstanding += 1
                    server.taken += 1
                    return server
                await self._changed.wait()

    async def give_back(self, server: Server, *, ok: bool, connection_failed: bool) -> None:
        """End an attempt on ``server``: a success ends its rest; a connection-level failure
        makes it rest (doubling per consecutive failure)."""
        async with self._changed:
            server.outstanding -= 1
            if ok:
                server.consecutive = 0
                server.resting_until = 0.0
            else:
                server.failed += 1
                if connection_failed:
                    rest = min(self.rest_max, self.rest_base * 2**server.consecutive)
                    server.consecutive += 1
                    server.resting_until = max(server.resting_until, time.monotonic() + rest)
            self._changed.notify_all()

    def others_live(self, tried: set[int]) -> bool:
        """Whether a live server the call has not failed on since its last backoff remains."""
        return any(s.index not in tried for s in self.live())

    def counts(self) -> list[dict[str, int]]:
        """Attempts taken and failed per server, in ``base_url`` order (for the stage's stats)."""
        return [{"taken": s.taken, "failed": s.failed} for s in self.servers]

    async def close(self) -> None:
        for server in self.servers:
            await server.client.close()


def connection_level(reason: str) -> bool:
    """Whether a classified failure (:func:`.openai_retry.classify`'s reason) says the server
    itself is unwell (rather than this one request): connection errors, timeouts, 5xx."""
    return reason.startswith(("connection error", "timed out")) or reason.startswith("HTTP 5")
