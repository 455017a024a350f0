"""Request budgets with the ``limits`` library: in-process by default, shared through Redis when set.

A budget belongs to an API key or agent token (by its hash) when the request carries a well-formed
one, and to the client IP otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter

from hostatlas import tokens

log = structlog.get_logger(__name__)

BEARER_PREFIXES = (tokens.API_KEY_PREFIX, tokens.AGENT_TOKEN_PREFIX)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix seconds

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def headers(self) -> list[tuple[bytes, bytes]]:
        values = [("X-RateLimit-Limit", self.limit), ("X-RateLimit-Remaining", self.remaining),
                  ("X-RateLimit-Reset", math.ceil(self.reset_at))]
        if not self.allowed:
            values.append(("Retry-After", self.retry_after))
        return [(name.lower().encode(), str(value).encode()) for name, value in values]


def identity_for(bearer: tokens.Bearer | None, client_ip: str | None) -> str:
    if bearer is not None:
        return "key:" + bearer.hash[:32]
    return f"ip:{client_ip or 'unknown'}"


class RateLimiter:
    def __init__(self, spec: str, redis_url: str | None = None) -> None:
        self.item = parse(spec)
        storage: Storage
        if redis_url:
            storage = RedisStorage(f"async+{redis_url}", implementation="redispy", key_prefix="hostatlas")
        else:
            storage = MemoryStorage()
        self.shared = bool(redis_url)
        self.strategy = FixedWindowRateLimiter(storage)

    async def hit(self, identity: str) -> Decision:
        try:
            allowed = await self.strategy.hit(self.item, identity)
            stats = await self.strategy.get_window_stats(self.item, identity)
        except Exception as exc:
            # A limiter outage must not take the API down with it: let the request through, loudly.
            log.warning("rate_limiter_unavailable", error=type(exc).__name__)
            return Decision(True, self.item.amount, self.item.amount, time.time() + self.item.get_expiry())
        return Decision(allowed, self.item.amount, stats.remaining, stats.reset_time)
