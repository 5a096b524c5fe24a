"""Per-member, per-route rate limits: one token bucket per (member, route), 429 with Retry-After.

Every route has a rate (tokens refilled per second) and a burst (the bucket's size)
from peer.toml [limits] (`Limits.rate_of`: a route's own entry, else the read default
for GET, the write default for POST). A request of a member takes one token from that
member's bucket for the route (its canonical path, so /v1/jobs/a and /v1/jobs/b share
one); with none left it is answered 429 with `Retry-After` (whole seconds until a token
is back) before its body is read or any role runs: nothing is stored, not even an
audit entry (a flood of refusals must not grow the audit log), and the other members'
buckets are untouched. The daemon logs one line when a member's bucket runs dry, not
one per refused request. This peer's operator (the admin socket) is not limited.

The buckets live in the event loop's thread and change only between awaits, so two
requests cannot take the same token.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedsilo.peers.daemon.config import Limits

log = logging.getLogger("fedsilo.peer")


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; `take()` spends one or says how long to wait."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one is back (nothing taken)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """The buckets of every (member, method, route) seen, made on first use from `limits`."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits, self._clock = limits, clock
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._dry: set[tuple[str, str, str]] = set()

    def check(self, member: str, method: str, route: str) -> float:
        """0.0 if `member` may make this request now, else the seconds to wait (see `TokenBucket.take`)."""
        key = (member, method, route)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(*self.limits.rate_of(method, route), clock=self._clock)
        wait = bucket.take()
        if wait and key not in self._dry:
            self._dry.add(key)
            log.warning(
                "member %s is over its rate limit on %s %s (%g requests/s, burst %d): answering 429",
                member,
                method,
                route,
                bucket.rate,
                bucket.burst,
            )
        elif not wait:
            self._dry.discard(key)
        return wait


def too_many(member: str, method: str, route: str, wait: float) -> web.Response:
    """The 429 answer: what was exceeded and when to try again."""
    seconds = max(1, math.ceil(wait))
    return web.json_response(
        {
            "error": f"{member} sent more {method} {route} requests than this peer allows (peer.toml [limits]); "
            f"retry after {seconds} s"
        },
        status=429,
        headers={"Retry-After": str(seconds)},
    )


def middleware(limiter: RateLimiter, caller: Callable[[web.Request], str | None]) -> Callable[..., Any]:
    """An aiohttp middleware (inside the one that identifies the caller) answering 429 over the limit.

    `caller` names the request's member, or None for this peer's operator (not limited).
    Requests to no route share one bucket per member, so random paths cannot grow the table.
    """

    @web.middleware
    async def limit(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        member = caller(request)
        if member is None:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(no such route)"
        wait = limiter.check(member, request.method, route)
        if wait:
            return too_many(member, request.method, route, wait)
        return await handler(request)

    return limit
