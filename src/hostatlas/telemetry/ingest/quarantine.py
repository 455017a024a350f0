"""Telemetry frames the storer could not store, set aside in the platform's quarantine, and their replay.

A frame is set aside when it cannot be decoded (at once: decoding is deterministic) or when its INSERT
failed alone several times while the store answered (telemetry/ingest/storer.py). The item's payload is the
frame as the spool holds it (``Frame.encode()``), so a replay judges it as of the time it was received.
The storer may be a process of its own that has no database open: it opens one on the first frame it
sets aside.
"""

from __future__ import annotations

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings
from hostatlas.telemetry.ingest.decode import decode_frame, insert, limits_of
from hostatlas.telemetry.ingest.spool import Frame, Kind, frames_of
from hostatlas.telemetry.storage.stores import open_store

PIPELINES = {Kind.METRICS: "telemetry.metrics", Kind.LOGS: "telemetry.logs"}


class FrameQuarantine:
    """Sets frames aside in the database at ``url``, or in ``db`` when the caller has one open."""

    def __init__(self, url: str, db: Database | None = None) -> None:
        self._url = url
        self._db = db
        self._owns_db = db is None

    def set_aside(self, frame: Frame, reason: str) -> None:
        if self._db is None:
            self._db = Database(self._url)
        quarantine.set_aside_now(self._db, pipeline=PIPELINES[frame.kind], reason=reason, payload=frame.encode(),
                                 team_id=frame.team_id, now=utcnow())

    def close(self) -> None:
        if self._owns_db and self._db is not None:
            self._db.dispose()
            self._db = None


def frame_of(item: QuarantinedItem) -> Frame:
    frames = list(frames_of(item.payload))
    if len(frames) != 1 or PIPELINES[frames[0].kind] != item.pipeline:
        raise ValueError(f"quarantined item {item.id} does not hold one {item.pipeline} frame")
    return frames[0]


class FrameReplayer:
    """Stores a quarantined frame in the store the settings name: ``replayers()`` in hostatlas/jobs.py."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(self, db: Database, item: QuarantinedItem) -> None:
        frame = frame_of(item)
        rows, _ = decode_frame(frame, limits_of(self._settings)[frame.kind])
        store = open_store(self._settings)
        try:
            insert(store, frame.kind, rows)
        finally:
            store.close()
