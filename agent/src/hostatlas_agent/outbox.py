"""The sender: one thread that drains the spool, oldest batch first, and what the agent knows of its sends.

Batches leave in the order they were made. When the platform is unreachable or answers 5xx, 408 or 429, the
sender keeps the batch and waits (``Retry-After`` when the platform gave one, else a backoff doubling up to
``max_backoff``); the batches behind it wait too, so order holds. A batch refused for good is set aside and
the next one goes; a 401 pauses sending (nothing is dropped) until the token works again."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import zstandard

from hostatlas_agent.spool import Spool, SpoolItem
from hostatlas_agent.transport import Answer, Outcome, Platform, encode

log = logging.getLogger("hostatlas_agent.outbox")

UNAUTHORIZED_PAUSE = 60.0
# A backlog (after an outage) leaves as few, larger requests: consecutive batches of one endpoint are merged,
# within the platform's per-request limits (20,000 points, 10,000 entries, 1 MiB compressed) with room to
# spare. Draining a day of 2-second log batches one request each would take the platform's per-agent rate
# limit (600 requests a minute) over an hour.
MERGEABLE = {"logs": ("entries", 5000), "metrics": ("series", 10000)}  # this agent sends one point a series
MERGE_MAX_ITEMS = 64
MERGE_MAX_BYTES = 256 * 1024  # compressed, as spooled


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
        self._solo = 0  # after a merged request was refused: send this many one by one, to find the bad one

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
        """Try the oldest batch (merged with the ones behind it when there is a backlog). Returns None to go on
        at once, or how long to wait before trying again."""
        item = self.spool.oldest()
        if item is None:
            return 5.0  # woken early by the next append
        items, body = self._merged(item) if self._solo == 0 else ([item], None)
        if body is None:
            items = [item]
            try:
                body = item.read()
            except OSError as exc:
                self.spool.set_aside(item, f"unreadable spool file: {exc}")
                return None
        answer = self.platform.post(item.endpoint, body, already_compressed="zstd")
        if answer.outcome is Outcome.DELIVERED:
            for sent in items:
                self.spool.remove(sent)
            self.status.succeeded(item.endpoint)
            self._backoff = 0.0
            self._solo = max(0, self._solo - 1)
            return None
        self.status.failed(item.endpoint, answer)
        if answer.outcome is Outcome.REJECTED:
            if len(items) > 1:  # one of them is bad: find it by sending them one at a time
                self._solo = len(items)
                return None
            self._solo = max(0, self._solo - 1)
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
        return delay

    def _merged(self, first: SpoolItem) -> tuple[list[SpoolItem], bytes | None]:
        """The oldest batch and the consecutive ones of its endpoint behind it, as one body; (items, None)
        when there is nothing to merge (or a file cannot be read: the one-by-one path deals with it)."""
        if first.endpoint not in MERGEABLE:
            return [first], None
        key, most = MERGEABLE[first.endpoint]
        run: list[SpoolItem] = []
        size = 0
        for item in self.spool.head(MERGE_MAX_ITEMS):
            if item.endpoint != first.endpoint or (run and size + item.size > MERGE_MAX_BYTES):
                break
            run.append(item)
            size += item.size
        if len(run) < 2:
            return [first], None
        merged: list[object] = []
        taken: list[SpoolItem] = []
        inflate = zstandard.ZstdDecompressor()
        for item in run:
            try:
                part = json.loads(inflate.decompress(item.read(), max_output_size=64 << 20))[key]
            except (OSError, ValueError, KeyError, TypeError, zstandard.ZstdError):
                break  # sent alone next, and set aside if it is bad
            if not isinstance(part, list) or (taken and len(merged) + len(part) > most):
                break
            merged.extend(part)
            taken.append(item)
        if len(taken) < 2:
            return [first], None
        return taken, zstandard.ZstdCompressor(level=3).compress(encode({key: merged}))
