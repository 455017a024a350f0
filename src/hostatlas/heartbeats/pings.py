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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Connection, Table, and_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.db.base import time_binder
from hostatlas.db.engine import Database
from hostatlas.errors import Conflict, InvalidInput
from hostatlas.heartbeats import machine, service, state
from hostatlas.heartbeats.models import Heartbeat, PingKind
from hostatlas.heartbeats.schemas import SLUG_PATTERN
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.teams.models import Team

log = structlog.get_logger(__name__)

PIPELINE = "heartbeats.pings"
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


# What a batch reads of each heartbeat: its rules, its state, and what its pings must still match. The
# team's ping key is a scalar subquery, not a join: joined, PostgreSQL may plan the locking read as a scan
# of the team's heartbeats (it did with statistics from before the heartbeats were created: 1 ms for 32
# rows instead of an index probe per id).
_HEARTBEATS = cast(Table, Heartbeat.__table__)
_TEAMS = cast(Table, Team.__table__)
_LOADED = (_HEARTBEATS.c.id, _HEARTBEATS.c.team_id, _HEARTBEATS.c.slug, _HEARTBEATS.c.ping_token_hash,
           _HEARTBEATS.c.interval, _HEARTBEATS.c.schedule, _HEARTBEATS.c.timezone, _HEARTBEATS.c.grace,
           _HEARTBEATS.c.min_runtime, _HEARTBEATS.c.max_runtime, _HEARTBEATS.c.manual_resume, _HEARTBEATS.c.status,
           _HEARTBEATS.c.last_ping_at, _HEARTBEATS.c.last_start_at, _HEARTBEATS.c.open_runs,
           _HEARTBEATS.c.last_duration_s, _HEARTBEATS.c.next_due_at, _HEARTBEATS.c.deadline_at,
           select(_TEAMS.c.ping_key).where(_TEAMS.c.id == _HEARTBEATS.c.team_id).scalar_subquery().label("ping_key"))


def record(session: Session, pings: list[Ping], *, public_url: str) -> dict[int, PingOutcome]:
    """Record ``pings`` (in arrival order) in the caller's transaction; returns each one's outcome by index.

    The heartbeats are read as rows, not ORM objects (that was most of a batch's cost), and locked in id
    order on PostgreSQL, so concurrent batches and the deadline worker cannot deadlock with this one and
    each ping's transition starts from the committed state. Each heartbeat's pings go through
    ``machine.on_ping`` in order. The ping log is written first, so an alert's run history holds the run
    its own ping ended. A heartbeat none of whose pings flipped its status gets its new columns
    (``state.columns``) in one statement for the batch; one that flipped is stored by ``state.apply``, the
    one place flips and alerts are made.
    """
    connection = session.connection()
    postgresql = connection.dialect.name == "postgresql"
    bind_time = time_binder(connection.dialect)
    ids = sorted({ping.target.heartbeat_id for ping in pings})
    stmt = select(*_LOADED).where(_HEARTBEATS.c.id.in_(ids)).order_by(_HEARTBEATS.c.id)
    if postgresql:
        stmt = stmt.with_for_update(of=_HEARTBEATS)
    rows = {row.id: row for row in connection.execute(stmt)}
    states: dict[int, tuple[machine.Rules, machine.State]] = {}
    steps: dict[int, list[tuple[Ping, machine.Transition]]] = {}
    outcomes: dict[int, PingOutcome] = {}
    log_rows = []
    for index, ping in enumerate(pings):
        row = rows.get(ping.target.heartbeat_id)
        if row is None or not _still_matches(row, ping):
            outcomes[index] = PingOutcome.NOT_FOUND
            continue
        rules, current = states.get(row.id) or (state.rules_of(row), state.state_of(row))
        transition = machine.on_ping(rules, current, ping.kind, ping.at, rid=ping.rid, exit_status=ping.exit_status)
        states[row.id] = (rules, transition.state)
        steps.setdefault(row.id, []).append((ping, transition))
        # In _LOG_COLUMNS' order.
        log_rows.append((row.id, row.team_id, ping.kind.value, ping.exit_status, bind_time(ping.at), ping.rid,
                         transition.duration_s, ping.remote_addr, ping.user_agent, ping.method, ping.body,
                         ping.body_truncated, transition.too_often))
        outcomes[index] = PingOutcome.RECORDED
    if log_rows:
        _insert(connection, log_rows, postgresql=postgresql)
    quiet = {}
    for heartbeat_id, made in steps.items():
        if any(transition.flip is not None for _, transition in made):
            heartbeat = session.get_one(Heartbeat, heartbeat_id)
            for ping, transition in made:
                state.apply(session, heartbeat, transition, public_url=public_url, now=ping.at)
        else:
            quiet[heartbeat_id] = state.columns(made[-1][1].state, made[-1][0].at)
    if quiet:
        _update(connection, quiet, bind_time, postgresql=postgresql)
    return outcomes


# The ping log and the heartbeats' state are written with DB-API parameters, bound by ``time_binder``: through
# the column types, binding cost as much as the rest of the batch (bench/pings.py, cProfile of the writer).
# Each statement is spelled out once, from these columns and their PostgreSQL types (the array casts there).
_LOG_COLUMNS = {"heartbeat_id": "bigint", "team_id": "bigint", "kind": "varchar", "exit_status": "integer",
                "at": "timestamp", "rid": "varchar", "duration_s": "float8", "remote_addr": "varchar",
                "user_agent": "varchar", "method": "varchar", "body": "bytea", "body_truncated": "boolean",
                "too_often": "boolean"}
# What ``state.columns`` returns; open_runs travels as JSON text.
_STATE_COLUMNS = {"status": "varchar", "last_ping_at": "timestamp", "last_start_at": "timestamp",
                  "open_runs": "json", "last_duration_s": "float8", "next_due_at": "timestamp",
                  "deadline_at": "timestamp", "updated_at": "timestamp"}


def _sqlite_insert() -> str:
    return (f"INSERT INTO heartbeat_pings ({', '.join(_LOG_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _LOG_COLUMNS)})")


def _sqlite_update() -> str:
    return f"UPDATE heartbeats SET {', '.join(f'{name} = ?' for name in _STATE_COLUMNS)} WHERE id = ?"


def _arrays(columns: dict[str, str]) -> str:
    """``unnest`` over one bound array per column (``:name``), each cast to its type (JSON as text)."""
    return ", ".join(f"CAST(:{name} AS {'text' if kind == 'json' else kind}[])" for name, kind in columns.items())


# PostgreSQL: a batch as one statement over arrays, not one statement per row: an executemany runs each in the
# server, and round trips are what a loaded machine makes slow (bench/pings.py, py-spy of the writer).
def _postgresql_insert() -> str:
    return f"INSERT INTO heartbeat_pings ({', '.join(_LOG_COLUMNS)}) SELECT * FROM unnest({_arrays(_LOG_COLUMNS)})"


def _postgresql_update() -> str:
    assignments = ", ".join(f"{name} = CAST(v.{name} AS json)" if kind == "json" else f"{name} = v.{name}"
                            for name, kind in _STATE_COLUMNS.items())
    columns = {"id": "bigint", **_STATE_COLUMNS}
    return (f"UPDATE heartbeats AS h SET {assignments} FROM unnest({_arrays(columns)}) AS v({', '.join(columns)}) "
            "WHERE h.id = v.id")


_SQLITE_INSERT, _SQLITE_UPDATE = _sqlite_insert(), _sqlite_update()
_POSTGRESQL_INSERT, _POSTGRESQL_UPDATE = text(_postgresql_insert()), text(_postgresql_update())


def _insert(connection: Connection, rows: list[tuple[Any, ...]], *, postgresql: bool) -> None:
    """The ping log's rows, each in ``_LOG_COLUMNS``' order."""
    if postgresql:
        columns = zip(*rows, strict=True)  # every row has one value per column
        connection.execute(_POSTGRESQL_INSERT, {name: list(column) for name, column in zip(_LOG_COLUMNS, columns,
                                                                                             strict=True)})
    else:
        connection.exec_driver_sql(_SQLITE_INSERT, rows)


def _update(connection: Connection, changed: dict[int, dict[str, Any]], bind_time: Callable[[datetime | None], Any],
            *, postgresql: bool) -> None:
    """Each changed heartbeat's ``state.columns``, bound for the driver."""

    def bound(values: dict[str, Any]) -> list[Any]:
        return [bind_time(values[name]) if kind == "timestamp" else json.dumps(values[name] or {})
                if kind == "json" else values[name] for name, kind in _STATE_COLUMNS.items()]

    rows = [bound(values) for values in changed.values()]
    if postgresql:
        connection.execute(_POSTGRESQL_UPDATE, {"id": list(changed), **{
            name: list(column) for name, column in zip(_STATE_COLUMNS, zip(*rows, strict=True), strict=True)}})
    else:
        connection.exec_driver_sql(_SQLITE_UPDATE, [(*row, heartbeat_id) for heartbeat_id, row in zip(changed, rows,
                                                                                                     strict=True)])


class _Matchable(Protocol):
    @property
    def ping_token_hash(self) -> str: ...
    @property
    def slug(self) -> str: ...
    @property
    def ping_key(self) -> str | None: ...


def _still_matches(row: _Matchable, ping: Ping) -> bool:
    kind, value = ping.check
    if kind == "token":
        return row.ping_token_hash == value
    key, _, slug = value.partition("/")
    return bool(row.slug == slug and row.ping_key == key)


Waiting = tuple[Ping, asyncio.AbstractEventLoop, "asyncio.Future[PingOutcome]"]


class PingWriter:
    """The group-commit writer: one transaction per batch of whatever is queued, written by ``threads``.

    On PostgreSQL two threads: one builds its batch while the other waits for the database. Each thread
    owns the heartbeats whose id falls in its share (id modulo threads), so the pings of one heartbeat are
    applied in the order they arrived, and two batches never lock the same row. SQLite writes one
    transaction at a time anyway: one thread.
    """

    def __init__(self, db: Database, *, public_url: str, cache: TargetCache, threads: int | None = None) -> None:
        self.db = db
        self.public_url = public_url
        self.cache = cache
        self.threads = threads or (1 if db.is_sqlite else 2)
        self._queues: list[queue.SimpleQueue[Waiting]] = [queue.SimpleQueue() for _ in range(self.threads)]
        self._running: set[int] = set()  # the shares whose thread runs
        self._lock = threading.Lock()

    async def submit(self, ping: Ping) -> PingOutcome:
        """Queue ``ping`` and wait until its transaction committed (or it was set aside or refused)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PingOutcome] = loop.create_future()
        share = ping.target.heartbeat_id % self.threads
        self._queues[share].put((ping, loop, future))
        if share not in self._running:
            self._start_thread(share)
        return await future

    def _start_thread(self, share: int) -> None:
        with self._lock:
            if share in self._running:
                return
            self._running.add(share)
            threading.Thread(target=self._run, args=(share,), name=f"hostatlas-pings-{share}", daemon=True).start()

    def _run(self, share: int) -> None:
        pending = self._queues[share]
        while True:
            try:
                first = pending.get(timeout=WRITER_IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    # Leave first, then look: a submit that still saw this thread had queued its ping
                    # before, so it is seen here; one that did not starts a new thread.
                    self._running.discard(share)
                    if pending.empty():
                        return
                    self._running.add(share)
                continue
            waiting = [first]
            while len(waiting) < MAX_BATCH:
                try:
                    waiting.append(pending.get_nowait())
                except queue.Empty:
                    break
            try:
                self.write([ping for ping, _, _ in waiting])
            except Exception:  # never leave a request waiting
                log.exception("ping_batch_failed")
            # One wake-up of each event loop per batch, not one per ping.
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[PingOutcome], PingOutcome]]] = {}
            for ping, loop, future in waiting:
                by_loop.setdefault(loop, []).append((future, ping.outcome or PingOutcome.UNAVAILABLE))
            for loop, answers in by_loop.items():
                loop.call_soon_threadsafe(_resolve, answers)

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


def _resolve(answers: list[tuple[asyncio.Future[PingOutcome], PingOutcome]]) -> None:
    for future, outcome in answers:
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

