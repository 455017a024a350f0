"""Request budgets: a fixed window per identity, in-process by default, shared through Redis when set.

A budget belongs to an API key or agent token (by its hash) when this process knows the secret to be
good: an agent token in the agent-token cache, an API key that authenticated here (``KnownKeys``).
Anything else is charged to the client IP, so that made-up secrets (their checksum is public) neither
get fresh budgets nor reach the database once the IP is limited. The first request of a good key in a
process is charged to its IP too. Through Redis the ``limits`` library keeps the windows. In-process
they are kept here: ``limits``' asyncio MemoryStorage starts a sweep over every counter after each hit,
which with 10,000 agents took a third of the serving process's CPU (bench/ingest.py, py-spy); here a
hit is one dict lookup, and stale windows are dropped once per window length.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
import structlog
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter

from hostatlas import tokens
from hostatlas.clock import now_unix

log = structlog.get_logger(__name__)

BEARER_PREFIXES = (tokens.API_KEY_PREFIX, tokens.AGENT_TOKEN_PREFIX)
T = TypeVar("T")
# While Redis is unreachable every request would fail the same way: warn at the first, then once a period.
OUTAGE_WARNING_EVERY_S = 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - now_unix()))

    def headers(self) -> list[tuple[bytes, bytes]]:
        values = [("X-RateLimit-Limit", self.limit), ("X-RateLimit-Remaining", self.remaining),
                  ("X-RateLimit-Reset", math.ceil(self.reset_at))]
        if not self.allowed:
            values.append(("Retry-After", self.retry_after))
        return [(name.lower().encode(), str(value).encode()) for name, value in values]


# Whether a recognised bearer secret is known good in this process.
KnownCheck = Callable[[tokens.Bearer], bool]


def identity_for(bearer: tokens.Bearer | None, client_ip: str | None, known: KnownCheck) -> str:
    if bearer is not None and known(bearer):
        return "key:" + bearer.hash[:32]
    return f"ip:{client_ip or 'unknown'}"


class KnownKeys:
    """Hashes of the API keys that authenticated in this process, at most ``capacity`` (oldest dropped).

    A key dropped, or never seen here, is charged to its IP until it authenticates again.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._hashes: dict[str, None] = {}
        self._lock = threading.Lock()

    def __contains__(self, key_hash: str) -> bool:
        return key_hash in self._hashes

    def note(self, key_hash: str) -> None:
        if key_hash in self._hashes:
            return
        with self._lock:
            self._hashes[key_hash] = None
            if len(self._hashes) > self.capacity:
                del self._hashes[next(iter(self._hashes))]

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._hashes.pop(key_hash, None)


class _LocalWindows:
    """Fixed windows in this process: identity -> [hits, window end]. Used from the event loop only."""

    def __init__(self, amount: int, seconds: float) -> None:
        self.amount = amount
        self.seconds = seconds
        self._windows: dict[str, list[float]] = {}
        self._swept_at = now_unix()

    def hit(self, identity: str) -> Decision:
        now = now_unix()
        window = self._windows.get(identity)
        if window is None or window[1] <= now:
            window = self._windows[identity] = [0, now + self.seconds]
        allowed = window[0] < self.amount
        if allowed:
            window[0] += 1
        if now - self._swept_at >= self.seconds:
            self._swept_at = now
            self._windows = {key: value for key, value in self._windows.items() if value[1] > now}
        return Decision(allowed, self.amount, int(self.amount - window[0]), window[1])


# Connections one limiter keeps to Redis, and how long a request waits for one. Past redis-py's default pool
# (100, then MaxConnectionsError at once) a burst of requests would be let through unlimited and reported as
# a Redis outage while Redis is fine: beyond this many, requests queue for a connection instead.
REDIS_CONNECTIONS = 64
REDIS_CONNECTION_WAIT_S = 2.0


def _waiting_pool(redis_url: str) -> redis.asyncio.BlockingConnectionPool[Any]:
    return redis.asyncio.BlockingConnectionPool.from_url(redis_url, max_connections=REDIS_CONNECTIONS,
                                                         timeout=REDIS_CONNECTION_WAIT_S)


class RateLimiter:
    def __init__(self, spec: str, redis_url: str | None = None) -> None:
        self.item = parse(spec)
        self.shared = bool(redis_url)
        self._local = None if redis_url else _LocalWindows(self.item.amount, self.item.get_expiry())
        self.strategy: FixedWindowRateLimiter | None = None
        if redis_url:
            # limits passes its options on to redis-py untouched; its annotation only knows plain values.
            storage = RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix="hostatlas",
                                   connection_pool=_waiting_pool(redis_url))  # type: ignore[arg-type]
            self.strategy = FixedWindowRateLimiter(storage)
        self._unreachable_since: float | None = None  # monotonic; set while Redis does not answer
        self._warned_at = 0.0

    async def hit(self, identity: str) -> Decision:
        if self._local is not None:
            return self._local.hit(identity)
        strategy = self.strategy
        assert strategy is not None
        try:
            allowed = await self._on_redis(lambda: strategy.hit(self.item, identity))
            stats = await self._on_redis(lambda: strategy.get_window_stats(self.item, identity))
        except Exception as exc:
            # A limiter outage must not take the API down with it: let the request through, and say so.
            self._note_unreachable(exc)
            return Decision(True, self.item.amount, self.item.amount, now_unix() + self.item.get_expiry())
        if self._unreachable_since is not None:
            log.info("rate_limiter_recovered", unreachable_seconds=round(time.monotonic() - self._unreachable_since))
            self._unreachable_since = None
        return Decision(allowed, self.item.amount, stats.remaining, stats.reset_time)

    async def _on_redis(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call``, and once more if it fails while Redis was answering: a pooled connection idle since before a
        Redis restart fails once (seen in tests/test_fault_redis.py) and is replaced. During an outage, once."""
        try:
            return await call()
        except Exception:
            if self._unreachable_since is not None:
                raise
        return await call()

    def _note_unreachable(self, exc: Exception) -> None:
        """Warn when Redis stops answering and every OUTAGE_WARNING_EVERY_S while it stays away, not at each of
        the thousands of requests a second that are let through meanwhile."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        elif now - self._warned_at < OUTAGE_WARNING_EVERY_S:
            return
        self._warned_at = now
        log.warning("rate_limiter_unavailable", error=type(exc).__name__,
                    unreachable_seconds=round(now - self._unreachable_since),
                    consequence="requests are let through unlimited until Redis answers")
