"""The serving side of telemetry writes: answer each batch once it is durable in the spool.

One writer per kind (metrics, logs), each with a spooler thread. The thread takes every request queued
meanwhile, appends their frames with one write and one fdatasync, and answers them: group commit on
local disk. It closes the open segment for the storer once it holds ``max_frames`` frames or its first
frame has waited ``max_delay`` seconds, and for nothing else: a read waits for the segment to be stored
(``spool.wait_until_stored``) rather than closing it early, which would break the batch.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from hostatlas.errors import Unavailable
from hostatlas.telemetry.ingest.spool import SegmentLog, backlog_status

log = structlog.get_logger(__name__)

SPOOL_GROUP = 512  # requests per append at most
BACKLOG_CHECK_SECONDS = 1.0


@dataclass
class _Write:
    frame: bytes
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]


class SpoolWriter:
    def __init__(self, segments: SegmentLog, directory: Path, *, name: str, max_frames: int = 2000,
                 max_delay: float = 0.5, max_backlog_bytes: int = 1 << 30) -> None:
        self._segments = segments
        self._directory = directory
        self.name = name
        self.max_frames = max_frames
        self.max_delay = max_delay
        self.max_backlog_bytes = max_backlog_bytes
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._backlog_bytes = 0
        self._backlog_checked = 0.0
        self._thread = threading.Thread(target=self._run, name=f"telemetry-spool-{name}", daemon=True)
        self._thread.start()

    async def write(self, frame: bytes) -> None:
        """Return once ``frame`` is durable in the spool."""
        if self._backlogged():
            raise Unavailable("telemetry_backlog", "The telemetry store is behind; retry shortly", retry_after=5)
        loop = asyncio.get_running_loop()
        write = _Write(frame, loop, loop.create_future())
        self._queue.put(write)
        await write.done

    def close(self) -> None:
        """Answer what is queued and close the last segment for the storer."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _backlogged(self) -> bool:
        """Whether the closed segments waiting for the store exceed the cap (re-measured once a second)."""
        now = time.monotonic()
        if now - self._backlog_checked >= BACKLOG_CHECK_SECONDS:
            self._backlog_checked = now
            self._backlog_bytes = backlog_status(self._directory).bytes
        return self._backlog_bytes >= self.max_backlog_bytes

    def _run(self) -> None:
        while True:
            timeout = (max(0.0, self._segments.opened_at + self.max_delay - time.monotonic())
                       if self._segments.frames else None)
            try:
                items = [self._queue.get(timeout=timeout)]
            except queue.Empty:
                self._segments.rotate()  # the open segment is old enough
                continue
            while len(items) < SPOOL_GROUP:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._append([item for item in items if item is not None])
            if self._segments.frames >= self.max_frames:
                self._segments.rotate()
            if None in items:
                self._segments.close()
                return

    def _append(self, writes: list[_Write]) -> None:
        if not writes:
            return
        error: OSError | None = None
        try:
            self._segments.append([write.frame for write in writes])
        except OSError as exc:
            log.exception("telemetry_spool_failed", writer=self.name)
            error = exc
        for write in writes:
            write.loop.call_soon_threadsafe(_settle, write.done, error)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the request went away meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
