"""The telemetry pieces one serving process owns: the store for reads, the spool, its writers, the storer.

A batch's path: the request is judged entry by entry (what is dropped and why goes in the answer),
its body is appended to the spool and the answer sent once that is durable; the storer then parses it
and stores it within about ``telemetry_batch_delay`` seconds.

Reads see every batch acknowledged before them, by this process or any other serving process of the
install: ``caught_up`` waits until every spool segment that held unstored frames when the read began
has been stored. The serving processes share the spool root, each in a directory of its own, and a
segment leaves the spool only once stored, so one listing of the root is all a read needs to know
what to wait for; nothing is closed early for it, so batches stay whole. The wait is bounded
(``READ_WAIT_SECONDS``): a read during a store outage answers with what is stored, and logs that.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from starlette.concurrency import run_in_threadpool

from hostatlas.clock import now_unix
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.telemetry.ingest.decode import Limits, Verdict, decode_frame, limits_of
from hostatlas.telemetry.ingest.quarantine import FrameQuarantine
from hostatlas.telemetry.ingest.spool import BacklogStatus, Frame, Kind, Spool, backlog_status, wait_until_stored
from hostatlas.telemetry.ingest.storer import Storer, StorerHandle, StorerProcess, StorerThread
from hostatlas.telemetry.ingest.writer import SpoolWriter
from hostatlas.telemetry.storage.contract import TelemetryStore
from hostatlas.telemetry.storage.stores import open_store

log = structlog.get_logger(__name__)
# A log segment is closed at this size at the latest, so that one INSERT batch stays bounded.
SEGMENT_FRAMES = {Kind.METRICS: 2000, Kind.LOGS: 100}
# Larger batches are judged off the event loop.
INLINE_DECODE_BYTES = 64 * 1024
# How long a read waits for acknowledged batches to be stored before it answers with what is.
READ_WAIT_SECONDS = 10.0


@dataclass
class Telemetry:
    store: TelemetryStore
    spool: Spool
    writers: dict[Kind, SpoolWriter]
    limits: dict[Kind, Limits]
    storer: StorerHandle

    @classmethod
    def start(cls, settings: Settings, db: Database | None = None) -> Telemetry:
        """``db``: the serving process's database, where a storer thread sets aside frames it cannot store."""
        store = cls._open_store(settings)
        spool = Spool(settings.telemetry_spool_dir or settings.data_dir / "telemetry-spool",
                      fsync=settings.telemetry_spool_fsync)
        writers = {kind: SpoolWriter(spool.segments(kind), spool.directory, name=kind.name.lower(),
                                     max_frames=SEGMENT_FRAMES[kind], max_delay=settings.telemetry_batch_delay,
                                     max_backlog_bytes=settings.telemetry_max_backlog_bytes)
                   for kind in Kind}
        limits = limits_of(settings)
        storer: StorerHandle
        if settings.telemetry_storer == "process":
            storer = StorerProcess(settings, spool.directory)
        else:
            storer = StorerThread(Storer(store, spool.directory, limits, max_rows=settings.telemetry_batch_rows,
                                         quarantine=FrameQuarantine(settings.resolved_database_url, db)))
        return cls(store, spool, writers, limits, storer)

    @staticmethod
    def _open_store(settings: Settings) -> TelemetryStore:
        """The store this process reads. A storer process migrates it again before its first write, so a
        ClickHouse that is down when an API node starts only delays reads: the node starts, and acknowledges
        agents' batches into its spool meanwhile. A storer thread writes through this store, so there the
        schema must exist first and an unreachable store stops the start."""
        store = open_store(settings, migrate=False)
        try:
            store.migrate()
        except Exception as exc:
            if settings.telemetry_storer != "process":
                raise
            log.warning("telemetry_store_unreachable_at_start", error=type(exc).__name__)
        return store

    async def accept_batch(self, kind: Kind, *, team_id: int, server_id: int, body: bytes) -> Verdict:
        """What an agent's batch does, whichever path served it: judged entry by entry, and durable before
        this returns if anything in it is accepted. Raises DomainError when the whole batch is refused."""
        frame = Frame(kind, team_id, server_id, now_unix(), body)
        verdict = (self.judge(frame) if len(body) <= INLINE_DECODE_BYTES
                   else await run_in_threadpool(self.judge, frame))
        if verdict.accepted:
            await self.write(frame)
        return verdict

    def judge(self, frame: Frame) -> Verdict:
        """What of the batch will be stored, and what is dropped and why (log lines are parsed later)."""
        return decode_frame(frame, self.limits[frame.kind], parse=False)[1]

    async def write(self, frame: Frame) -> None:
        """Return once the batch is durable; the storer stores it within the batch delay."""
        await self.writers[frame.kind].write(frame.encode())

    def backlog_status(self) -> BacklogStatus:
        """What is acknowledged but not stored yet (for /readyz and /metrics): a listing of the spool."""
        return backlog_status(self.spool.directory)

    def caught_up(self) -> TelemetryStore:
        """The store, once every batch acknowledged before this call (by any serving process) is stored in it."""
        if not wait_until_stored(self.spool.root, READ_WAIT_SECONDS):
            log.warning("telemetry_read_not_caught_up", waited_seconds=READ_WAIT_SECONDS)
        return self.store

    def stop(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.storer.stop()
        self.spool.close()
        self.store.close()
