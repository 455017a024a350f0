"""Group commit for telemetry: requests hand their rows to one writer thread and wait for the commit.

Backends take large INSERTs far faster than many small ones (ClickHouse 18.16 here: ~420 small
INSERTs/s, but ~690,000 samples/s in 3,000-row INSERTs). So rows from concurrent requests are pooled
until a batch is full or the oldest has waited ``max_delay`` seconds, written in one INSERT per kind,
and only then is each request answered: nothing acknowledged is lost on a crash, and nothing
unacknowledged was promised. If the write fails, every request in the batch gets the error.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from hostatlas.telemetry.model import LogRecord, MetricPoint, TelemetryStore

log = structlog.get_logger(__name__)


@dataclass
class _Pending:
    metrics: Sequence[MetricPoint]
    logs: Sequence[LogRecord]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


@dataclass
class _Batch:
    metrics: list[MetricPoint] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    waiting: list[_Pending] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.metrics) + len(self.logs)


class TelemetryWriter:
    def __init__(self, store: TelemetryStore, *, max_rows: int = 3000, max_delay: float = 0.05) -> None:
        self.store = store
        self.max_rows = max_rows
        self.max_delay = max_delay
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hostatlas-telemetry-writer", daemon=True)
        self._thread.start()

    async def write(self, *, metrics: Sequence[MetricPoint] = (), logs: Sequence[LogRecord] = ()) -> None:
        """Return once the rows are committed; raise what the store raised if they could not be."""
        if not metrics and not logs:
            return
        loop = asyncio.get_running_loop()
        pending = _Pending(metrics, logs, loop, loop.create_future())
        self._queue.put(pending)
        await pending.done

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = _Batch()
            self._add(batch, first)
            deadline = time.monotonic() + self.max_delay
            while batch.rows < self.max_rows:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                self._add(batch, item)
            self._commit(batch)

    @staticmethod
    def _add(batch: _Batch, pending: _Pending) -> None:
        batch.metrics.extend(pending.metrics)
        batch.logs.extend(pending.logs)
        batch.waiting.append(pending)

    def _commit(self, batch: _Batch) -> None:
        error: BaseException | None = None
        try:
            self.store.insert_metrics(batch.metrics)
            self.store.insert_logs(batch.logs)
        except Exception as exc:
            log.exception("telemetry_write_failed", metrics=len(batch.metrics), logs=len(batch.logs))
            error = exc
        for pending in batch.waiting:
            pending.loop.call_soon_threadsafe(_settle, pending.done, error)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the request went away meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
