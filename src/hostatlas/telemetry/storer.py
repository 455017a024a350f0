"""The storer: takes closed spool segments, decodes and parses them, and stores them in large batches.

By default it is a process of its own, one per serving process (``hostatlas serve`` starts it and
restarts it if it dies), so that log parsing and INSERT serialisation never compete with request
handling for the GIL. As a thread (HOSTATLAS_TELEMETRY_STORER=thread) it starts faster, which the tests
use. Either way it takes segments oldest first, INSERTs at most ``telemetry_batch_rows`` rows at a
time, and deletes a segment only once all its rows are stored. If the store fails, it retries with
backoff, and the segments wait on disk meanwhile.

Delivery is at least once: a crash between an INSERT and the deletion of its segments stores those
rows again at the next start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from hostatlas.settings import Settings
from hostatlas.telemetry.ingest import Limits, decode_frame
from hostatlas.telemetry.model import TelemetryStore
from hostatlas.telemetry.spool import (
    STORER_LOCK,
    Kind,
    adopt_orphans,
    closed_segments,
    hold_lock,
    read_frames,
    seal_open_segments,
)

log = structlog.get_logger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
IDLE_POLL_SECONDS = 0.02
ADOPT_EVERY_SECONDS = 5.0
STOP_ATTEMPTS = 3  # when stopping, give up after this many failed attempts and leave the rest on disk


class _StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def limits_of(settings: Settings) -> dict[Kind, Limits]:
    age, future = settings.telemetry_max_age, settings.telemetry_max_future
    return {Kind.METRICS: Limits(settings.metrics_max_points, age, future),
            Kind.LOGS: Limits(settings.logs_max_entries, age, future, settings.log_line_max_bytes)}


class Storer:
    def __init__(self, store: TelemetryStore, directory: Path, limits: dict[Kind, Limits], *,
                 max_rows: int) -> None:
        self.store = store
        self.directory = directory
        self.limits = limits
        self.max_rows = max_rows
        self._inserts: dict[Kind, Callable[[Sequence[Any]], None]] = {
            Kind.METRICS: store.insert_metrics, Kind.LOGS: store.insert_logs}

    def run(self, stop: _StopSignal, still_wanted: Callable[[], bool] = lambda: True) -> None:
        """Store segments as they close until ``stop`` is set and none is left.

        If the serving process is gone (``still_wanted`` turns false), store what it left, open
        segments included, and return.
        """
        failures, adopted_at = 0, 0.0
        while True:
            orphaned = not still_wanted()
            if orphaned:
                seal_open_segments(self.directory)
            if time.monotonic() - adopted_at >= ADOPT_EVERY_SECONDS:
                adopted_at = time.monotonic()
                if adopted := adopt_orphans(self.directory.parent, self.directory):
                    log.info("telemetry_spool_adopted", segments=adopted)
            segments = closed_segments(self.directory)
            if not segments:
                if stop.is_set() or orphaned:
                    return
                stop.wait(IDLE_POLL_SECONDS)
                continue
            try:
                self.store_segments(segments)
                failures = 0
            except Exception:
                failures += 1
                log.exception("telemetry_store_failed", segments=len(segments), attempt=failures)
                if (stop.is_set() or orphaned) and failures >= STOP_ATTEMPTS:
                    return  # the segments stay on disk for the next start
                stop.wait(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])

    def store_segments(self, segments: Sequence[Path]) -> None:
        """Per kind, oldest first: gather segments up to ``max_rows`` rows, INSERT, delete them."""
        for kind in Kind:
            prefix = kind.name.lower() + "-"
            rows: list[Any] = []
            batch: list[Path] = []
            for segment in (s for s in segments if s.name.startswith(prefix)):
                for frame in read_frames(segment):
                    rows.extend(decode_frame(frame, self.limits[frame.kind])[0])
                batch.append(segment)
                if len(rows) >= self.max_rows:
                    self._insert(kind, rows, batch)
                    rows, batch = [], []
            if batch:
                self._insert(kind, rows, batch)

    def _insert(self, kind: Kind, rows: list[Any], segments: list[Path]) -> None:
        for start in range(0, len(rows), self.max_rows):
            self._inserts[kind](rows[start:start + self.max_rows])
        for segment in segments:
            segment.unlink(missing_ok=True)


class StorerHandle(Protocol):
    def stop(self) -> None: ...


class StorerThread:
    def __init__(self, storer: Storer) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=storer.run, args=(self._stop,), name="telemetry-storer",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class StorerProcess:
    """The storer as a child process, restarted if it dies; it exits by itself if this process dies.

    A plain ``python -m hostatlas.telemetry.storer`` rather than multiprocessing: it imports only what
    storing needs, so it starts in a fraction of the time. It gets the settings on stdin (they may hold
    passwords, which a command line would show to every user) and stops on SIGTERM.
    """

    def __init__(self, settings: Settings, directory: Path) -> None:
        self._settings = settings.model_dump_json().encode()
        self._directory = directory
        self._stopping = False
        self._process = self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="telemetry-storer-supervisor",
                                            daemon=True)
        self._supervisor.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "hostatlas.telemetry.storer", str(self._directory),
                                    str(os.getpid())], stdin=subprocess.PIPE)
        assert process.stdin is not None
        process.stdin.write(self._settings)
        process.stdin.close()
        return process

    def _supervise(self) -> None:
        while True:
            code = self._process.wait()
            if self._stopping:
                return
            log.error("telemetry_storer_died", exitcode=code)
            time.sleep(1.0)
            if not self._stopping:
                self._process = self._spawn()

    def stop(self) -> None:
        self._stopping = True
        self._process.terminate()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def main(directory: Path, parent: int) -> None:
    """The child process: store this directory's segments until SIGTERM, or until the parent is gone."""
    from hostatlas.logging import configure as configure_logging
    from hostatlas.telemetry.stores import open_store

    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    configure_logging(settings.log_level, json=settings.log_json)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = hold_lock(directory / STORER_LOCK)
    if lock is None:
        log.error("telemetry_storer_already_running", directory=str(directory))
        return
    store = open_store(settings)
    try:
        Storer(store, directory, limits_of(settings), max_rows=settings.telemetry_batch_rows).run(
            stop, still_wanted=lambda: os.getppid() == parent)
    finally:
        store.close()
        os.close(lock)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
