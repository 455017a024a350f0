"""The storer: takes closed spool segments, decodes and parses them, and stores them in large batches.

By default it is a process of its own, one per serving process (``hostatlas serve`` starts it and
restarts it if it dies), so that log parsing and INSERT serialisation never compete with request
handling for the GIL. As a thread (HOSTATLAS_TELEMETRY_STORER=thread) it starts faster, which the tests
use. Either way it takes segments oldest first, INSERTs batches of about ``telemetry_batch_rows`` rows
(an agent's batch, a frame, is never split), and deletes a segment once each of its frames is dealt with.

One bad frame never stops the line:
- A frame that cannot be decoded is set aside in the quarantine at once (telemetry/ingest/quarantine.py).
- A failed INSERT is retried in halves down to single frames, so the good frames are stored. A frame
  that fails alone becomes a *suspect*: written to a segment of its own (``<kind>-0-suspect-<n>-...``),
  retried alone after ``suspect_retry`` seconds, behind the rest of the line, and set aside once it has
  failed ``STRIKES`` times.
- An outage is no frame's fault: when the store does not answer its ping, or when every frame of a
  batch failed and they came from more than one server, nothing is set aside. The pass stops, the
  segments wait on disk, and the storer retries with backoff.

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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from hostatlas.clock import now_unix
from hostatlas.pipelines.quarantine import describe
from hostatlas.settings import Settings
from hostatlas.signals import set_on_signals
from hostatlas.telemetry.ingest.decode import Limits, decode_frame, insert, limits_of
from hostatlas.telemetry.ingest.quarantine import FrameQuarantine
from hostatlas.telemetry.ingest.spool import (
    SEGMENT_SUFFIX,
    STORER_LOCK,
    SUSPECT,
    Frame,
    Kind,
    adopt_orphans,
    closed_segments,
    hold_lock,
    read_frames,
    seal_open_segments,
)
from hostatlas.telemetry.storage.contract import TelemetryStore

log = structlog.get_logger(__name__)

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
IDLE_POLL_SECONDS = 0.02
ADOPT_EVERY_SECONDS = 5.0
STOP_ATTEMPTS = 3  # when stopping, give up after this many failed attempts and leave the rest on disk
STRIKES = 3  # a frame that failed alone this many times, the store answering each time, is set aside
SUSPECT_RETRY_SECONDS = 2.0


class _StopSignal(Protocol):
    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class _Decoded:
    frame: Frame
    rows: list[Any]
    key: tuple[str, int]  # (segment name, position): what ``Storer._handled`` remembers


@dataclass
class _Batch:
    segments: list[Path] = field(default_factory=list)
    items: list[_Decoded] = field(default_factory=list)
    rows: int = 0


class Storer:
    def __init__(self, store: TelemetryStore, directory: Path, limits: dict[Kind, Limits], *,
                 max_rows: int, quarantine: FrameQuarantine,
                 suspect_retry: float = SUSPECT_RETRY_SECONDS) -> None:
        self.store = store
        self.directory = directory
        self.limits = limits
        self.max_rows = max_rows
        self.quarantine = quarantine
        self.suspect_retry = suspect_retry
        # Frames of segments still on disk that were stored, set aside or made suspects: a pass cut
        # short by an outage does not do them again.
        self._handled: set[tuple[str, int]] = set()

    def run(self, stop: _StopSignal, still_wanted: Callable[[], bool] = lambda: True) -> None:
        """Store segments as they close until ``stop`` is set and none is left.

        If the serving process is gone (``still_wanted`` turns false), store what it left, open
        segments included, and return. Suspects not yet due stay on disk for the next start.
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
            segments = self.ready(closed_segments(self.directory))
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

    def ready(self, segments: list[Path]) -> list[Path]:
        """The segments to take now: every regular one, and the suspects whose retry time has come."""
        due = now_unix() - self.suspect_retry
        ready = []
        for segment in segments:
            try:
                if not SUSPECT.search(segment.name) or segment.stat().st_mtime <= due:
                    ready.append(segment)
            except FileNotFoundError:
                continue
        return ready

    def store_segments(self, segments: Sequence[Path]) -> None:
        """Per kind, oldest first: gather segments up to ``max_rows`` rows, store them, then the suspects."""
        for kind in Kind:
            prefix = kind.name.lower() + "-"
            mine = [s for s in segments if s.name.startswith(prefix)]
            batch = _Batch()
            for segment in (s for s in mine if not SUSPECT.search(s.name)):
                batch.segments.append(segment)
                for item in self._decode(segment):
                    batch.items.append(item)
                    batch.rows += len(item.rows)
                if batch.rows >= self.max_rows:
                    self._store(kind, batch)
                    batch = _Batch()
            if batch.segments:
                self._store(kind, batch)
            for suspect in (s for s in mine if SUSPECT.search(s.name)):
                self._retry_suspect(kind, suspect)

    def _decode(self, segment: Path) -> list[_Decoded]:
        """The segment's frames not yet dealt with, decoded; a frame that cannot be is set aside now."""
        decoded = []
        for position, frame in enumerate(read_frames(segment)):
            key = (segment.name, position)
            if key in self._handled:
                continue
            try:
                rows = decode_frame(frame, self.limits[frame.kind])[0]
            except Exception as exc:
                self.quarantine.set_aside(frame, describe(exc))
                self._handled.add(key)
                continue
            decoded.append(_Decoded(frame, rows, key))
        return decoded

    def _store(self, kind: Kind, batch: _Batch) -> None:
        """INSERT the batch in groups of about ``max_rows`` rows, isolating what fails; delete its segments."""
        failed: list[tuple[_Decoded, Exception]] = []
        for group in self._groups(batch.items):
            failed += self._insert_isolating(kind, group)
        if failed and len(failed) == len(batch.items) and len({i.frame.server_id for i, _ in failed}) > 1:
            raise failed[0][1]  # every frame, from several agents: the store's fault, not theirs
        for item, exc in failed:
            self._strike(item.frame, exc, strikes=1)
            self._handled.add(item.key)
        for segment in batch.segments:
            segment.unlink(missing_ok=True)
        names = {segment.name for segment in batch.segments}
        self._handled = {key for key in self._handled if key[0] not in names}

    def _groups(self, items: list[_Decoded]) -> list[list[_Decoded]]:
        groups: list[list[_Decoded]] = [[]]
        rows = 0
        for item in items:
            if groups[-1] and rows + len(item.rows) > self.max_rows:
                groups.append([])
                rows = 0
            groups[-1].append(item)
            rows += len(item.rows)
        return groups

    def _insert_isolating(self, kind: Kind, items: list[_Decoded]) -> list[tuple[_Decoded, Exception]]:
        """INSERT the items' rows; if that fails and the store answers, halve, down to single frames.

        Returns the frames that failed alone; raises if the store does not answer (an outage).
        """
        if not items:
            return []
        try:
            insert(self.store, kind, [row for item in items for row in item.rows])
        except Exception as exc:
            self._store_answers(exc)
            if len(items) == 1:
                return [(items[0], exc)]
            half = len(items) // 2
            return self._insert_isolating(kind, items[:half]) + self._insert_isolating(kind, items[half:])
        self._handled.update(item.key for item in items)
        return []

    def _store_answers(self, failure: Exception) -> None:
        try:
            self.store.ping()
        except Exception:
            raise failure from None

    def _retry_suspect(self, kind: Kind, path: Path) -> None:
        matched = SUSPECT.search(path.name)
        strikes = int(matched.group(1)) if matched else 1
        for item in self._decode(path):
            try:
                insert(self.store, kind, item.rows)
            except Exception as exc:
                self._store_answers(exc)
                self._strike(item.frame, exc, strikes=strikes + 1)
        path.unlink(missing_ok=True)
        self._handled = {key for key in self._handled if key[0] != path.name}

    def _strike(self, frame: Frame, exc: Exception, *, strikes: int) -> None:
        """The frame failed alone for the ``strikes``-th time: set it aside, or keep it to try again later."""
        if strikes >= STRIKES:
            self.quarantine.set_aside(frame, describe(exc))
            return
        log.warning("telemetry_frame_failed_alone", kind=frame.kind.name.lower(), team_id=frame.team_id,
                    server_id=frame.server_id, strikes=strikes, reason=describe(exc))
        name = f"{frame.kind.name.lower()}-0-suspect-{strikes}-{uuid.uuid4().hex}"
        temporary = self.directory / f"{name}.tmp"
        with open(temporary, "wb") as out:
            out.write(frame.encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.directory / f"{name}{SEGMENT_SUFFIX}")


class StorerHandle(Protocol):
    def stop(self) -> None: ...


class StorerThread:
    def __init__(self, storer: Storer) -> None:
        self._storer = storer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=storer.run, args=(self._stop,), name="telemetry-storer",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._storer.quarantine.close()


class StorerProcess:
    """The storer as a child process, restarted if it dies; it exits by itself if this process dies.

    A plain ``python -m hostatlas.telemetry.ingest.storer`` rather than multiprocessing: it imports only what
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
        process = subprocess.Popen([sys.executable, "-m", "hostatlas.telemetry.ingest.storer", str(self._directory),
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


def _open_store_when_it_answers(opener: Callable[[], TelemetryStore], stop: threading.Event, *,
                                still_wanted: Callable[[], bool]) -> TelemetryStore | None:
    """The store, opened (and migrated) once it answers: a ClickHouse that is down or restarting when this process
    starts is an outage the spool waits out, not a reason to die and be respawned with a traceback every second.
    None if told to stop first."""
    delay = 0.5
    while not stop.is_set() and still_wanted():
        try:
            return opener()
        except Exception as exc:
            log.warning("telemetry_store_unreachable", error=type(exc).__name__, retry_in=delay)
            stop.wait(delay)
            delay = min(delay * 2, 10.0)
    return None


def main(directory: Path, parent: int) -> None:
    """The child process: store this directory's segments until SIGTERM, or until the parent is gone."""
    from hostatlas.logging import configure as configure_logging
    from hostatlas.telemetry.storage.stores import open_store

    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    configure_logging(settings.log_level, json=settings.log_json)
    stop = threading.Event()
    set_on_signals(stop, signal.SIGTERM)
    lock = hold_lock(directory / STORER_LOCK)
    if lock is None:
        log.error("telemetry_storer_already_running", directory=str(directory))
        return
    store = _open_store_when_it_answers(lambda: open_store(settings), stop, still_wanted=lambda: os.getppid() == parent)
    if store is None:
        os.close(lock)
        return
    quarantine = FrameQuarantine(settings.resolved_database_url)
    try:
        Storer(store, directory, limits_of(settings), max_rows=settings.telemetry_batch_rows,
               quarantine=quarantine).run(stop, still_wanted=lambda: os.getppid() == parent)
    finally:
        quarantine.close()
        store.close()
        os.close(lock)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
