"""The sender: one thread that drains the spool, oldest batch first, and what the agent knows of its sends.

Batches leave in the order they were made. When the platform is unreachable or answers 5xx, 408 or 429, the
sender keeps the batch and waits (``Retry-After`` when the platform gave one, else a backoff doubling up to
``max_backoff``); the batches behind it wait too, so order holds. A batch refused for good is set aside and
the next one goes; a 401 pauses sending (nothing is dropped) until the token works again."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from hostatlas_agent.spool import Spool
from hostatlas_agent.transport import Answer, Outcome, Platform

log = logging.getLogger("hostatlas_agent.outbox")

UNAUTHORIZED_PAUSE = 60.0


class Status:
    """Thread-safe record of the last success and failure per endpoint, for ``hostatlas-agent status``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.last_success: dict[str, float] = {}
        self.sent: dict[str, int] = {}
        self.last_error: dict[str, Any] | None = None

    def succeeded(self, endpoint: str) -> None:
        with self._lock:
            self.last_success[endpoint] = self._clock()
            self.sent[endpoint] = self.sent.get(endpoint, 0) + 1

    def failed(self, endpoint: str, answer: Answer) -> None:
        with self._lock:
            self.last_error = {"endpoint": endpoint, "at": self._clock(), "status": answer.status,
                               "outcome": answer.outcome.value, "detail": answer.detail[:500]}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"last_success": dict(self.last_success), "sent": dict(self.sent),
                    "last_error": dict(self.last_error) if self.last_error else None}


class Sender(threading.Thread):
    def __init__(self, platform: Platform, spool: Spool, status: Status, *, max_backoff: float = 60.0,
                 on_unauthorized: Callable[[], None] | None = None) -> None:
        super().__init__(name="hostatlas-agent-sender", daemon=True)
        self.platform = platform
        self.spool = spool
        self.status = status
        self.max_backoff = max_backoff
        self._on_unauthorized = on_unauthorized
        self._wake = threading.Event()
        self._halt = threading.Event()  # not _stop: threading.Thread has one
        self._backoff = 0.0
        self.waiting_until = 0.0  # monotonic; > now while the platform is being given time

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                delay = self.send_one()
            except Exception:  # the sender must outlive anything one batch can do to it
                log.exception("sender: unexpected error; retrying in 5 s")
                delay = 5.0
            if delay is None:
                continue
            self._wake.wait(delay)
            self._wake.clear()

    def send_one(self) -> float | None:
        """Try the oldest batch. Returns None to go on at once, or how long to wait before trying again."""
        item = self.spool.oldest()
        if item is None:
            return 5.0  # woken early by the next append
        try:
            body = item.read()
        except OSError as exc:
            self.spool.set_aside(item, f"unreadable spool file: {exc}")
            return None
        answer = self.platform.post(item.endpoint, body, already_compressed="zstd")
        if answer.outcome is Outcome.DELIVERED:
            self.spool.remove(item)
            self.status.succeeded(item.endpoint)
            self._backoff = 0.0
            return None
        self.status.failed(item.endpoint, answer)
        if answer.outcome is Outcome.REJECTED:
            self.spool.set_aside(item, f"HTTP {answer.status}: {answer.detail}")
            return None
        if answer.outcome is Outcome.UNAUTHORIZED:
            log.error("the platform refused the agent token (%s); enrol again: hostatlas-agent enrol", answer.detail)
            if self._on_unauthorized:
                self._on_unauthorized()
            return UNAUTHORIZED_PAUSE
        self._backoff = min(self.max_backoff, max(0.5, self._backoff * 2 or 1.0))
        delay = max(answer.retry_after or 0.0, self._backoff * random.uniform(0.8, 1.0))
        log.info("platform unavailable (%s %s); %d batches spooled, next try in %.1f s",
                 answer.status or "no answer", answer.detail[:200], self.spool.stats()["batches"], delay)
        self.waiting_until = time.monotonic() + delay
        return delay
