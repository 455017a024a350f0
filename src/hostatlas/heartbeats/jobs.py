"""The heartbeats' worker jobs: the deadline sweep (what time alone does: late, down, a run that never ended)
and the retention of the ping log and the flips.

The sweep reads nothing but the index on ``deadline_at``: a heartbeat that time cannot change has NULL there,
so a tick costs one index probe when nothing is due, however many heartbeats exist. Transitions are claimed
with the discipline of offline detection (``servers.jobs.mark_offline``): the due rows are looked up outside a
write transaction, then locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock serialises
writers) and re-read with the deadline condition, so a heartbeat another worker (or a ping) has just moved is
left alone. Every transition is stored by ``state.apply``: one flip and one ``heartbeat.missed`` per outage
whatever the number of workers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.heartbeats import machine, state
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatStatus
from hostatlas.heartbeats.schemas import HeartbeatOut
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import is_outage, write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings

PINGS = cast(Table, HeartbeatPing.__table__)
SWEEP_BATCH = 500
# Per tick: when a whole batch was due (a burst of deadlines at one instant), look again, this many times.
SWEEP_MAX_BATCHES = 10
# A heartbeat the sweep could not process, set aside to be replayed (``hostatlas quarantine replay``).
DEADLINES = "heartbeats.deadline"

FLIP_RETENTION = timedelta(days=365)
PRUNE_BATCH = 2_000
PRUNE_MAX_BATCHES = 10
# Ping-log retention reads the pings recorded since its last pass, at most this many rows, and trims at most
# this many heartbeats per tick, so a burst of pings spreads over ticks instead of making one long one.
PING_SCAN_ROWS = 20_000
PING_TRIM_HEARTBEATS = 500
# Heartbeats a new worker trims per tick until it has trimmed each once (a full log's trim walks ``keep``
# index entries: about 0.05 ms on SQLite and 0.25 ms on PostgreSQL at the default 1,000).
PING_BACKFILL_HEARTBEATS = 100
MAX_TRACKED_HEARTBEATS = 1_000_000


# --- the deadline sweep -------------------------------------------------------------------------------------


def sweep_deadlines(db: Database, settings: Settings, now: datetime) -> int:
    """Apply ``machine.on_deadline`` to every heartbeat whose ``deadline_at`` has passed; returns the flips made.

    One heartbeat that cannot be processed (bad stored data) must not keep the others from going down: a
    batch that fails is swept again in halves (``pipelines.isolation``), and a heartbeat that fails alone is
    set aside (``heartbeats.deadline``) instead of failing every tick.
    """
    flipped = 0
    for _ in range(SWEEP_MAX_BATCHES):
        made, found = _sweep_batch(db, settings, now)
        flipped += made
        if found < SWEEP_BATCH:
            break
    return flipped


def _sweep_batch(db: Database, settings: Settings, now: datetime) -> tuple[int, int]:
    """One batch of due heartbeats: (flips made, heartbeats found due)."""
    # Looked up outside a write transaction: most ticks find nothing due and take no write lock.
    with db.session(write=False) as session:
        due = list(session.scalars(select(Heartbeat.id).where(Heartbeat.deadline_at <= now)
                                   .order_by(Heartbeat.deadline_at, Heartbeat.id).limit(SWEEP_BATCH)))
    if not due:
        return 0, 0
    flipped = 0

    def sweep(ids: list[int]) -> None:
        nonlocal flipped
        with db.session(write=True) as session:
            made = _apply_deadlines(session, ids, settings.public_url, now)
        flipped += made  # only once committed

    done = write_isolating(due, sweep, batch=SWEEP_BATCH)
    for heartbeat_id, exc in done.poison:
        flipped += _set_aside(db, heartbeat_id, settings.public_url, now, exc)
    if done.outage is not None:
        raise done.outage
    return flipped, len(due)


def _claim(session: Session, ids: list[int], now: datetime) -> list[Heartbeat]:
    """Lock the heartbeats among ``ids`` still due, re-read: one that a ping or another worker holds is skipped
    (it is due again on the next tick if it still is), one they have moved no longer matches."""
    return list(session.scalars(select(Heartbeat).where(Heartbeat.id.in_(ids), Heartbeat.deadline_at <= now)
                                .order_by(Heartbeat.id).with_for_update(skip_locked=True)))


def _apply_deadlines(session: Session, ids: list[int], public_url: str, now: datetime, *,
                     event_aside: str | None = None) -> int:
    """Apply what time has done to the still-due heartbeats among ``ids``; with ``event_aside`` (why), their
    alert events are set aside instead of recorded."""
    flips = 0
    for heartbeat in _claim(session, ids, now):
        transition = machine.on_deadline(state.rules_of(heartbeat), state.state_of(heartbeat), now)
        if event_aside is not None and transition.alert is not None:
            _set_event_aside(session, heartbeat, transition, event_aside, now)
            transition = replace(transition, alert=None)
        state.apply(session, heartbeat, transition, public_url=public_url, now=now)
        flips += transition.flip is not None
    session.flush()
    return flips


def _set_event_aside(session: Session, heartbeat: Heartbeat, transition: machine.Transition, reason: str,
                     now: datetime) -> None:
    assert transition.flip is not None
    payload = {"kind": "event", "heartbeat_id": heartbeat.id, "flip_at": isoformat_z(transition.flip.at),
               "cause": transition.flip.cause}
    quarantine.set_aside(session, pipeline=DEADLINES, reason=reason,
                         payload=json.dumps(payload).encode(), team_id=heartbeat.team_id, now=now)


def _set_aside(db: Database, heartbeat_id: int, public_url: str, now: datetime, exc: Exception) -> int:
    """A heartbeat that failed alone. Its transition is stored without its event if it can be (the event is
    set aside); if even that fails, its deadline is set aside and cleared so that no tick tries it again."""
    try:
        with db.session(write=True) as session:
            made = _apply_deadlines(session, [heartbeat_id], public_url, now, event_aside=quarantine.describe(exc))
        return made
    except Exception as again:
        if is_outage(again):
            raise
    with db.session(write=True) as session:
        # Columns only: the row may be what cannot be loaded.
        row = session.execute(select(Heartbeat.team_id, Heartbeat.deadline_at)
                              .where(Heartbeat.id == heartbeat_id, Heartbeat.deadline_at <= now)
                              .with_for_update(skip_locked=True)).first()
        if row is None:
            return 0
        team_id, deadline_at = row
        if deadline_at is None:
            return 0
        payload = {"kind": "deadline", "heartbeat_id": heartbeat_id, "deadline_at": deadline_at.isoformat()}
        session.execute(update(Heartbeat).where(Heartbeat.id == heartbeat_id).values(deadline_at=None))
        quarantine.set_aside(session, pipeline=DEADLINES, reason=quarantine.describe(exc),
                             payload=json.dumps(payload).encode(), team_id=team_id, now=now)
    return 0


def replay_deadline(db: Database, item: QuarantinedItem, *, settings: Settings) -> None:
    """Replay a set-aside heartbeat: record its missed event if it is still in that same outage, or restore
    its deadline and apply it (raising, so the item stays, if it fails again)."""
    fields = json.loads(item.payload)
    now = utcnow()
    with db.session(write=True) as session:
        heartbeat = session.scalar(select(Heartbeat).where(Heartbeat.id == fields["heartbeat_id"]).with_for_update())
        if heartbeat is None:
            return
        if fields["kind"] == "event":
            last = session.scalar(select(HeartbeatFlip).where(HeartbeatFlip.heartbeat_id == heartbeat.id)
                                  .order_by(HeartbeatFlip.id.desc()).limit(1))
            if heartbeat.status == HeartbeatStatus.DOWN.value and last is not None \
                    and last.to_status == HeartbeatStatus.DOWN.value and isoformat_z(last.at) == fields["flip_at"]:
                if state.track_incident(session, heartbeat, "missed", fields["cause"], last.at):
                    return  # its server is offline: the outage incident speaks for it
                payload = {**HeartbeatOut.of(heartbeat, settings.public_url).model_dump(mode="json"),
                           "cause": fields["cause"]}
                events.record(session, team_id=heartbeat.team_id, type=events.HEARTBEAT_MISSED,
                              resource_type="heartbeat", resource_id=heartbeat.id, payload=payload, at=last.at,
                              server_id=heartbeat.server_id)
            return
        if heartbeat.deadline_at is not None:
            return  # a ping or a resume has set a new deadline since: time has nothing to catch up
        current = replace(state.state_of(heartbeat), deadline_at=datetime.fromisoformat(fields["deadline_at"]))
        transition = machine.on_deadline(state.rules_of(heartbeat), current, now)
        state.apply(session, heartbeat, transition, public_url=settings.public_url, now=now)


# --- retention ----------------------------------------------------------------------------------------------


def prune_flips(db: Database, settings: Settings, now: datetime) -> int:
    """Flips older than a year go, through the index on their time, in bounded batches."""
    cutoff = now - FLIP_RETENTION
    expired = select(HeartbeatFlip.id).where(HeartbeatFlip.at < cutoff).order_by(HeartbeatFlip.at).limit(PRUNE_BATCH)
    removed = 0
    for _ in range(PRUNE_MAX_BATCHES):
        with db.session(write=False) as session:  # most ticks find nothing and take no write lock
            ids = list(session.scalars(expired))
        if not ids:
            break
        with db.session(write=True) as session:
            session.execute(delete(HeartbeatFlip).where(HeartbeatFlip.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    return removed


class PingLogRetention:
    """A worker job: each heartbeat keeps its last ``settings.ping_log_size`` pings (``keep``).

    Only a heartbeat that receives pings can go over, so each pass reads the pings recorded since the last
    one (by id, through the primary key: no scan of the whole log) and counts them per heartbeat. A heartbeat
    is trimmed back to ``keep`` once it has had a tenth of ``keep`` pings since its last trim (so a log holds
    at most 10% more between two trims, and a trim, which walks up to ``keep`` index entries, is paid once per
    that many pings rather than on every one). What this pass has read up to and the counts are the object's
    state; a new worker starts at the end of the log and trims every heartbeat once, ``PING_TRIM_HEARTBEATS``
    a tick (the backfill), so nothing recorded before it started stays over.
    """

    def __init__(self) -> None:
        self._mark: int | None = None  # the last ping id read
        self._backfill: int | None = 0  # the last heartbeat id trimmed by the backfill; None once it is done
        self._since_trim: dict[int, int] = {}

    def __call__(self, db: Database, settings: Settings, now: datetime) -> int:
        keep = settings.ping_log_size
        if self._mark is None:
            with db.session(write=False) as session:
                self._mark = session.scalar(select(func.max(HeartbeatPing.id))) or 0
        due = self._follow(db, slack=max(1, keep // 10))
        due |= self._backfill_batch(db, min(PING_BACKFILL_HEARTBEATS, PING_TRIM_HEARTBEATS - len(due)))
        if not due:
            return 0
        removed = trim_ping_log(db, sorted(due), keep)
        for heartbeat_id in due:
            self._since_trim.pop(heartbeat_id, None)
        return removed

    def _follow(self, db: Database, *, slack: int) -> set[int]:
        """The heartbeats that have had ``slack`` pings since their last trim, from the pings new since the last
        pass (at most ``PING_SCAN_ROWS``, and stopping at ``PING_TRIM_HEARTBEATS`` heartbeats)."""
        assert self._mark is not None
        with db.session(write=False) as session:
            rows = session.execute(select(HeartbeatPing.id, HeartbeatPing.heartbeat_id)
                                   .where(HeartbeatPing.id > self._mark).order_by(HeartbeatPing.id)
                                   .limit(PING_SCAN_ROWS)).all()
        due: set[int] = set()
        for ping_id, heartbeat_id in rows:
            count = self._since_trim.get(heartbeat_id, 0) + 1
            self._since_trim[heartbeat_id] = count
            self._mark = ping_id
            if count >= slack:
                due.add(heartbeat_id)
                if len(due) >= PING_TRIM_HEARTBEATS:
                    break  # the rest of the window is the next tick's
        if len(self._since_trim) > MAX_TRACKED_HEARTBEATS:
            # Counts for more heartbeats than exist in most installs: forget them and trim everyone once again.
            self._since_trim.clear()
            self._backfill = 0
        return due

    def _backfill_batch(self, db: Database, room: int) -> set[int]:
        if self._backfill is None or room <= 0:
            return set()
        with db.session(write=False) as session:
            ids = list(session.scalars(select(Heartbeat.id).where(Heartbeat.id > self._backfill)
                                       .order_by(Heartbeat.id).limit(room)))
        self._backfill = ids[-1] if len(ids) == room else None
        return set(ids)


def trim_ping_log(db: Database, heartbeat_ids: list[int], keep: int) -> int:
    """Delete all but the newest ``keep`` pings of each of ``heartbeat_ids``."""
    newer = select(HeartbeatPing.id).where(HeartbeatPing.heartbeat_id == Heartbeat.id) \
        .order_by(HeartbeatPing.id.desc()).offset(keep).limit(1).correlate(Heartbeat).scalar_subquery()
    with db.session(write=False) as session:
        # Per heartbeat, the newest ping beyond the ones kept (an index walk of at most ``keep`` entries).
        found = session.execute(select(Heartbeat.id, newer).where(Heartbeat.id.in_(heartbeat_ids))).all()
    cuts = [(heartbeat_id, cut) for heartbeat_id, cut in found if cut is not None]
    if not cuts:
        return 0
    with db.session(write=True) as session:
        # One statement, many parameter sets: one round trip on psycopg (pipelined executemany), not one a heartbeat.
        result = session.execute(delete(PINGS).where(PINGS.c.heartbeat_id == bindparam("hb"),
                                                     PINGS.c.id <= bindparam("cut")),
                                 [{"hb": heartbeat_id, "cut": cut} for heartbeat_id, cut in cuts])
    return max(cast(CursorResult[Any], result).rowcount, 0)
