"""Recording heartbeat pings: durable before the answer, many pings to one transaction (group commit).

A request resolves its heartbeat through an in-process cache (token hash -> heartbeat id and team id, plus
a short cache of unknown hashes, so a made-up token costs at most one query every ``NEGATIVE_TTL`` s),
then hands the ping to the ``PingWriter`` and waits. The writer's thread takes every ping queued at that
moment, records them in one transaction (row locks on their heartbeats in id order on PostgreSQL, the
status machine through ``state.apply``, one multi-row insert into the ping log), commits, and only then
resolves each waiting request. Under load the batch grows by itself while the previous one commits; idle,
a ping waits for its own commit only.

The cache is never trusted for the answer: the batch reads each heartbeat row under its lock and checks
that the token hash (or the team's ping key and the slug) still match. A rotated token or a deleted
heartbeat is answered 404 from its first ping after the change, and its cache entry is dropped then.

One bad ping never stops the others: a batch that fails is written again in halves
(``pipelines.isolation``); a ping that fails alone is set aside in the quarantine as ``heartbeats.pings``
(replayable with ``hostatlas quarantine replay``) and answered 200 "OK", since it is kept durably; a
database that is down is answered 503 and nothing is set aside.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import cast

import structlog
from sqlalchemy import Table, and_, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from hostatlas.clock import utcnow
from hostatlas.db.base import UTCDateTime
from hostatlas.db.engine import Database
from hostatlas.errors import Conflict, InvalidInput
from hostatlas.heartbeats import machine, service, state
from hostatlas.heartbeats.models import Heartbeat, HeartbeatPing, PingKind
from hostatlas.heartbeats.schemas import SLUG_PATTERN
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.teams.models import Team

log = structlog.get_logger(__name__)

PIPELINE = "heartbeats.pings"
PINGS = cast(Table, HeartbeatPing.__table__)
# Pings per transaction at most; more wait for the next one (a few ms later).
MAX_BATCH = 1000
# An unknown token or slug is answered from memory for this long (a heartbeat created meanwhile with
# ?create=1 skips it; a new random token cannot be in it unless it was guessed).
NEGATIVE_TTL = 5.0
CACHE_SIZE = 200_000
# The writer thread ends after this long without pings, and starts again with the next one.
WRITER_IDLE_EXIT = 5.0
# What a ping creates with ?create=1 (the issue: one day, one hour of grace).
CREATED_INTERVAL = 86_400
CREATED_GRACE = 3_600
# A ping token is opaque URL-safe text; anything else is not one and costs no query.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
PING_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
SLUG = re.compile(SLUG_PATTERN)


class PingOutcome(StrEnum):
    RECORDED = "recorded"
    NOT_FOUND = "not_found"  # the heartbeat is gone, or its token changed, since the cache learnt it
    SET_ASIDE = "set_aside"  # failed alone: kept in the quarantine
    UNAVAILABLE = "unavailable"  # the database is down: nothing stored


@dataclass(frozen=True, slots=True)
class Target:
    heartbeat_id: int
    team_id: int


@dataclass(slots=True)
class Ping:
    """A ping as received, bound for the heartbeat the cache named; ``check`` is what must still match."""

    target: Target
    check: tuple[str, str]  # ("token", hash) or ("slug", "<ping_key>/<slug>")
    kind: PingKind
    at: datetime
    method: str
    exit_status: int | None = None
    rid: str | None = None
    remote_addr: str | None = None
    user_agent: str | None = None
    body: bytes = b""
    body_truncated: bool = False
    outcome: PingOutcome | None = field(default=None)


def is_token(text: str) -> bool:
    return TOKEN_PATTERN.match(text) is not None


class TargetCache:
    """token hash or "<ping_key>/<slug>" -> Target (bounded, oldest dropped), and recent misses."""

    def __init__(self, capacity: int = CACHE_SIZE, negative_ttl: float = NEGATIVE_TTL) -> None:
        self.capacity = capacity
        self.negative_ttl = negative_ttl
        self._known: OrderedDict[str, Target] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Target | None:
        return self._known.get(key)

    def recently_missing(self, key: str) -> bool:
        expires = self._missing.get(key)
        return expires is not None and expires > time.monotonic()

    def remember(self, key: str, target: Target | None) -> None:
        with self._lock:
            if target is None:
                self._missing[key] = time.monotonic() + self.negative_ttl
                self._missing.move_to_end(key)
                while len(self._missing) > self.capacity:
                    self._missing.popitem(last=False)
                return
            self._missing.pop(key, None)
            self._known[key] = target
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def forget(self, key: str) -> None:
        with self._lock:
            self._known.pop(key, None)


def cache_key(check: tuple[str, str]) -> str:
    return f"{check[0]}:{check[1]}"


def find_by_token(db: Database, token_hash: str) -> Target | None:
    """One query."""
    with db.session(write=False) as session:
        row = session.execute(select(Heartbeat.id, Heartbeat.team_id)
                              .where(Heartbeat.ping_token_hash == token_hash)).first()
    return Target(row.id, row.team_id) if row else None


@dataclass(frozen=True)
class SlugLookup:
    team_id: int | None  # None: no team has this ping key
    ping_create: bool
    target: Target | None


def find_by_slug(db: Database, ping_key: str, slug: str) -> SlugLookup:
    """One query: the team of the ping key, and its heartbeat of that slug if any."""
    with db.session(write=False) as session:
        row = session.execute(
            select(Team.id, Team.ping_create, Heartbeat.id.label("heartbeat_id")).select_from(Team)
            .outerjoin(Heartbeat, and_(Heartbeat.team_id == Team.id, Heartbeat.slug == slug))
            .where(Team.ping_key == ping_key)).first()
    if row is None:
        return SlugLookup(None, False, None)
    return SlugLookup(row.id, row.ping_create, Target(row.heartbeat_id, row.id) if row.heartbeat_id else None)


def create_on_ping(db: Database, team_id: int, slug: str, *, now: datetime) -> Target | None:
    """A heartbeat for an unknown slug (?create=1), through the REST service's creation (plan limit, slug
    rules); None when the slug is not one a heartbeat may have. A concurrent creation of the same slug wins.
    Raises PlanLimitReached."""
    fields = {"name": slug, "slug": slug, "interval": CREATED_INTERVAL, "grace": CREATED_GRACE}
    try:
        with db.session(write=True) as session:
            heartbeat = service.create_heartbeat(session, team_id=team_id, fields=fields, now=now)
            log.info("heartbeat_created_on_ping", heartbeat_id=heartbeat.id, team_id=team_id)
            return Target(heartbeat.id, team_id)
    except InvalidInput:
        return None
    except (Conflict, IntegrityError):
        with db.session(write=False) as session:
            found = session.execute(select(Heartbeat.id).where(Heartbeat.team_id == team_id,
                                                               Heartbeat.slug == slug)).scalar()
        return Target(found, team_id) if found is not None else None


def record(session: Session, pings: list[Ping], *, public_url: str) -> dict[int, PingOutcome]:
    """Record ``pings`` (in arrival order) in the caller's transaction; returns each one's outcome by index.

    The heartbeats are locked in id order (PostgreSQL), so concurrent batches and the deadline worker
    cannot deadlock with this one, and each ping's transition starts from the committed state.
    """
    ids = sorted({ping.target.heartbeat_id for ping in pings})
    # The sealed token is decrypted only if an alert needs the heartbeat's ping URL (a third of the batch's
    # cost otherwise, measured with bench/pings.py).
    stmt = (select(Heartbeat, Team.ping_key).join(Team, Team.id == Heartbeat.team_id)
            .where(Heartbeat.id.in_(ids)).order_by(Heartbeat.id).options(defer(Heartbeat.ping_token)))
    postgresql = session.get_bind().dialect.name == "postgresql"
    if postgresql:
        stmt = stmt.with_for_update(of=Heartbeat)
    rows = {heartbeat.id: (heartbeat, ping_key) for heartbeat, ping_key in session.execute(stmt).all()}
    outcomes: dict[int, PingOutcome] = {}
    log_rows = []
    for index, ping in enumerate(pings):
        found = rows.get(ping.target.heartbeat_id)
        if found is None or not _still_matches(found[0], found[1], ping):
            outcomes[index] = PingOutcome.NOT_FOUND
            continue
        heartbeat = found[0]
        transition = machine.on_ping(state.rules_of(heartbeat), state.state_of(heartbeat), ping.kind, ping.at,
                                     rid=ping.rid, exit_status=ping.exit_status)
        state.apply(session, heartbeat, transition, public_url=public_url, now=ping.at)
        log_rows.append({
            "heartbeat_id": heartbeat.id, "team_id": heartbeat.team_id, "kind": ping.kind.value,
            "exit_status": ping.exit_status, "at": ping.at, "rid": ping.rid, "duration_s": transition.duration_s,
            "remote_addr": ping.remote_addr, "user_agent": ping.user_agent, "method": ping.method,
            "body": ping.body, "body_truncated": ping.body_truncated, "too_often": transition.too_often})
        outcomes[index] = PingOutcome.RECORDED
    if postgresql:
        _update_postgresql(session, [heartbeat for heartbeat, _ in rows.values()])
    session.flush()
    if log_rows:
        session.execute(insert(PINGS), log_rows)
    return outcomes


# The columns state.apply writes. Each heartbeat of a batch as one row of one statement: the ORM's
# executemany of single-row UPDATEs cost PostgreSQL half of the batch's time (bench/pings.py).
_STATE_COLUMNS = ("status", "last_ping_at", "last_start_at", "open_runs", "last_duration_s", "next_due_at",
                  "deadline_at", "updated_at")
_POSTGRESQL_UPDATE = text("""
    UPDATE heartbeats AS h SET status = v.status, last_ping_at = v.last_ping_at, last_start_at = v.last_start_at,
        open_runs = CAST(v.open_runs AS json), last_duration_s = v.last_duration_s, next_due_at = v.next_due_at,
        deadline_at = v.deadline_at, updated_at = v.updated_at
    FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS varchar[]), CAST(:last_pings AS timestamp[]),
                CAST(:last_starts AS timestamp[]), CAST(:open_runs AS text[]), CAST(:durations AS float8[]),
                CAST(:dues AS timestamp[]), CAST(:deadlines AS timestamp[]), CAST(:updated AS timestamp[]))
        AS v(id, status, last_ping_at, last_start_at, open_runs, last_duration_s, next_due_at, deadline_at,
             updated_at)
    WHERE h.id = v.id
""")


def _update_postgresql(session: Session, heartbeats: list[Heartbeat]) -> None:
    """Write what ``state.apply`` set on ``heartbeats`` in one statement, then let the ORM forget them.

    Only when apply changed nothing but ``_STATE_COLUMNS``; otherwise the ORM's flush writes them as usual.
    """
    changed = [heartbeat for heartbeat in heartbeats if inspect(heartbeat).modified]
    if not changed or any(set(inspect(heartbeat).committed_state) - set(_STATE_COLUMNS) for heartbeat in changed):
        return
    with session.no_autoflush:  # else the ORM writes them first, row by row
        _execute_update(session, changed)
    for heartbeat in changed:
        # Written: the ORM must not write them again. Flips and events added by apply stay in the session.
        session.expunge(heartbeat)


def _execute_update(session: Session, changed: list[Heartbeat]) -> None:
    dialect = session.get_bind().dialect

    def _naive(moment: datetime | None) -> datetime | None:
        # The raw statement bypasses the column type: bind as the column would (naive UTC).
        return _UTC.process_bind_param(moment, dialect)

    session.execute(_POSTGRESQL_UPDATE, {
        "ids": [hb.id for hb in changed], "statuses": [hb.status for hb in changed],
        "last_pings": [_naive(hb.last_ping_at) for hb in changed],
        "last_starts": [_naive(hb.last_start_at) for hb in changed],
        "open_runs": [json.dumps(hb.open_runs or {}) for hb in changed],
        "durations": [hb.last_duration_s for hb in changed], "dues": [_naive(hb.next_due_at) for hb in changed],
        "deadlines": [_naive(hb.deadline_at) for hb in changed], "updated": [_naive(hb.updated_at) for hb in changed],
    })


_UTC = UTCDateTime()


def _still_matches(heartbeat: Heartbeat, ping_key: str | None, ping: Ping) -> bool:
    kind, value = ping.check
    if kind == "token":
        return heartbeat.ping_token_hash == value
    key, _, slug = value.partition("/")
    return heartbeat.slug == slug and ping_key == key


class PingWriter:
    """The group-commit writer: one transaction per batch of whatever is queued, written by ``threads``.

    On PostgreSQL two threads: one builds its batch while the other waits for the database (their row
    locks are taken in id order, so they cannot deadlock). SQLite writes one transaction at a time anyway.
    Two pings to one heartbeat sent at the same moment may so be applied in either order; a job's pings
    are sequential (each waits for its answer, given after its commit), so theirs keep their order.
    """

    def __init__(self, db: Database, *, public_url: str, cache: TargetCache, threads: int | None = None) -> None:
        self.db = db
        self.public_url = public_url
        self.cache = cache
        self.threads = threads or (1 if db.is_sqlite else 2)
        self._queue: queue.SimpleQueue[tuple[Ping, asyncio.AbstractEventLoop, asyncio.Future[PingOutcome]]] = (
            queue.SimpleQueue())
        self._running: set[threading.Thread] = set()
        self._lock = threading.Lock()

    async def submit(self, ping: Ping) -> PingOutcome:
        """Queue ``ping`` and wait until its transaction committed (or it was set aside or refused)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PingOutcome] = loop.create_future()
        self._queue.put((ping, loop, future))
        if len(self._running) < self.threads:
            self._start_threads()
        return await future

    def _start_threads(self) -> None:
        with self._lock:
            while len(self._running) < self.threads:
                thread = threading.Thread(target=self._run, name="hostatlas-pings", daemon=True)
                self._running.add(thread)
                thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=WRITER_IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    # Leave first, then look: a submit that still counted this thread had queued its ping
                    # before, so it is seen here; one that did not count it starts a new thread.
                    self._running.discard(threading.current_thread())
                    if self._queue.empty():
                        return
                    self._running.add(threading.current_thread())
                continue
            waiting = [first]
            while len(waiting) < MAX_BATCH:
                try:
                    waiting.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            pings = [ping for ping, _, _ in waiting]
            try:
                self.write(pings)
            except Exception:  # never leave a request waiting
                log.exception("ping_batch_failed")
            for ping, loop, future in waiting:
                outcome = ping.outcome or PingOutcome.UNAVAILABLE
                loop.call_soon_threadsafe(_resolve, future, outcome)

    def write(self, pings: list[Ping]) -> None:
        """Record ``pings``, setting each one's ``outcome``; halves a failing batch, sets poison aside."""

        def write_piece(piece: list[Ping]) -> None:
            with self.db.session(write=True) as session:
                outcomes = record(session, piece, public_url=self.public_url)
            for index, ping in enumerate(piece):  # committed: now the answers may go
                ping.outcome = outcomes[index]
                if ping.outcome is PingOutcome.NOT_FOUND:
                    self.cache.forget(cache_key(ping.check))

        done = write_isolating(pings, write_piece, batch=MAX_BATCH)
        if done.outage is not None:
            log.warning("ping_batch_unavailable", pings=len(done.unwritten), error=quarantine.describe(done.outage))
        if done.poison:
            try:
                with self.db.session(write=True) as session:
                    for ping, exc in done.poison:
                        quarantine.set_aside(session, pipeline=PIPELINE, reason=quarantine.describe(exc),
                                             payload=encode(ping), team_id=ping.target.team_id, now=utcnow())
            except Exception:
                log.exception("ping_set_aside_failed", pings=len(done.poison))
            else:
                for ping, _ in done.poison:
                    ping.outcome = PingOutcome.SET_ASIDE


def _resolve(future: asyncio.Future[PingOutcome], outcome: PingOutcome) -> None:
    if not future.done():  # the request may have been cancelled (client gone)
        future.set_result(outcome)


def encode(ping: Ping) -> bytes:
    return json.dumps({
        "heartbeat_id": ping.target.heartbeat_id, "team_id": ping.target.team_id, "check": list(ping.check),
        "kind": ping.kind.value, "at": ping.at.isoformat(), "method": ping.method, "exit_status": ping.exit_status,
        "rid": ping.rid, "remote_addr": ping.remote_addr, "user_agent": ping.user_agent,
        "body": base64.b64encode(ping.body).decode(), "body_truncated": ping.body_truncated}).encode()


def decode(payload: bytes) -> Ping:
    fields = json.loads(payload)
    kind, value = fields["check"]
    return Ping(target=Target(fields["heartbeat_id"], fields["team_id"]), check=(kind, value),
                kind=PingKind(fields["kind"]), at=datetime.fromisoformat(fields["at"]), method=fields["method"],
                exit_status=fields["exit_status"], rid=fields["rid"], remote_addr=fields["remote_addr"],
                user_agent=fields["user_agent"], body=base64.b64decode(fields["body"]),
                body_truncated=fields["body_truncated"])


def replay(db: Database, item: QuarantinedItem, *, public_url: str) -> None:
    """Record a quarantined ping, unless its heartbeat is gone or its token changed (nothing to apply it to)."""
    ping = decode(item.payload)
    with db.session(write=True) as session:
        record(session, [ping], public_url=public_url)

