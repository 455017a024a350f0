"""The webhook dispatcher: events become deliveries, deliveries are sent, retried and logged.

It runs in every worker (``hostatlas worker``, and the worker thread of ``hostatlas serve``), each with
its own asyncio loop in a thread of its own:
- **fan-out**: events not yet dispatched are claimed with ``FOR UPDATE SKIP LOCKED`` and turned into one
  delivery per enabled webhook of the event's team that subscribes to its type and was enabled before
  it happened. Claiming by a flag rather than reading by id order means an event whose transaction
  commits late is not skipped.
- **claim**: each webhook's oldest due pending deliveries are looked up on their own, so one webhook's
  backlog never keeps another's out, and leased to this worker (``lease_owner``, ``lease_expires_at``)
  with a conditional UPDATE, so several workers share the queue without sending a delivery twice. A
  worker that dies holds its leases until they expire; then another takes the deliveries over (at least
  once: the receiver dedupes on ``delivery_id``, which stays the same).
- **send**: claimed deliveries wait in a queue per webhook and are sent concurrently, at most
  ``webhook_concurrency`` in flight and ``webhook_per_endpoint`` per webhook, so one slow or dead
  endpoint never holds up the others.
- **record**: every attempt is logged, and its delivery moved on by the retry rule (``webhooks.retries``,
  pure): a 2xx succeeds; 410 fails the delivery and disables the webhook; anything else is retried after
  the next delay of ``HOSTATLAS_WEBHOOK_RETRY_SCHEDULE`` (with ±10% jitter), or after ``Retry-After`` on a
  429 or 503; after the last retry the delivery is ``failed``.

``Dispatcher.run`` does these steps in turn, each a method of its own, with what it carries from one turn
to the next in a ``LoopState``.

One bad item never stops the line (``pipelines.isolation``): a fan-out or a recording that fails is done
again in halves. An event whose deliveries cannot be made alone is set aside (``webhooks.fanout``) and
marked dispatched; a delivery whose attempt cannot be recorded alone is set aside (``webhooks.delivery``)
and marked failed, instead of being sent again and again. Both report to the pipelines' health.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Select, Table, bindparam, insert, or_, select, true, update
from sqlalchemy.orm import Session

from hostatlas import __version__
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.outbound import Answer, Outbound, OutboundError, Resolver, system_resolver
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.pipelines.isolation import is_outage, write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings
from hostatlas.webhooks.fanout import FAN_OUT, make_deliveries, set_event_aside
from hostatlas.webhooks.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from hostatlas.webhooks.retries import next_state
from hostatlas.webhooks.service import TEST_EVENT, disable, signing_secrets
from hostatlas.webhooks.signing import signature_headers

log = structlog.get_logger(__name__)

FAN_OUT_BATCH = 500
FAN_OUT_EVERY_SECONDS = 0.25
IDLE_POLL_SECONDS = 0.25
RESPONSE_EXCERPT_CHARS = 2048
RECORD_BATCH = 64
RECORD_EVERY_SECONDS = 0.1
# The loop holds (claims ahead) up to this many times webhook_per_endpoint of each webhook, so that claims
# come in batches rather than one per finished attempt. After a claim that came back short, the next
# comes once a webhook that reached its hold is down to half of it, or after CLAIM_EVERY_SECONDS (to
# find other webhooks' new work).
HOLD_PER_ENDPOINT = 4
CLAIM_EVERY_SECONDS = 0.05
# A held delivery is sent only while its lease outlasts a whole attempt by this much (or, with leases
# shorter than that, while half of it is left); else it is given back for a fresh claim.
LEASE_MARGIN_SECONDS = 5.0
# The pipeline, as the quarantine and the health registry name it.
DELIVERY = "webhooks.delivery"

assert isinstance(WebhookDelivery.__table__, Table) and isinstance(Webhook.__table__, Table)
assert isinstance(WebhookAttempt.__table__, Table)
DELIVERIES: Table = WebhookDelivery.__table__
WEBHOOKS: Table = Webhook.__table__
ATTEMPTS: Table = WebhookAttempt.__table__


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Pending, due, and not leased to a live worker."""
    return (DELIVERIES.c.status == DeliveryStatus.PENDING.value) & (DELIVERIES.c.next_attempt_at <= now) \
        & or_(DELIVERIES.c.lease_expires_at.is_(None), DELIVERIES.c.lease_expires_at < now)


@dataclass(frozen=True)
class Claimed:
    id: int
    delivery_id: str
    webhook_id: int
    event: str
    body: str
    attempts: int  # made before this one
    url: str
    secrets: list[str]


@dataclass(frozen=True)
class AttemptResult:
    """One attempt at a claimed delivery, as sent and as answered (``answer`` None: no answer came)."""

    claimed: Claimed
    started_at: datetime
    duration_ms: int
    request_headers: dict[str, str]
    answer: Answer | None
    error: OutboundError | None


@dataclass
class LoopState:
    """What ``Dispatcher.run`` carries from one turn to the next, and its bookkeeping (no I/O here)."""

    hold: int  # per webhook: claimed ahead plus in flight
    capacity: int  # the same, over every webhook
    # Claimed, not yet started, per webhook, each with the monotonic time its lease runs out.
    queues: dict[int, deque[tuple[Claimed, float]]] = field(default_factory=dict)
    sending: Counter[int] = field(default_factory=Counter)  # in flight, per webhook
    in_flight: set[asyncio.Task[AttemptResult]] = field(default_factory=set)
    finished: list[AttemptResult] = field(default_factory=list)  # not recorded yet
    fanned_out_at: float = 0.0
    claimed_at: float = 0.0
    first_finished_at: float = 0.0  # when the oldest of ``finished`` finished
    claim_came_back_full: bool = True
    at_hold: set[int] = field(default_factory=set)  # webhooks held up to their hold at the last claim: more due

    def held(self) -> Counter[int]:
        """Per webhook: queued plus in flight (webhooks at zero left out)."""
        return Counter({webhook_id: len(queue) for webhook_id, queue in self.queues.items()}) + self.sending

    def claim_due(self, held: Counter[int], now: float) -> bool:
        """After a claim that came back short, claim again only once a webhook that reached its hold is down to
        half of it, or after CLAIM_EVERY_SECONDS (to find other webhooks' new work)."""
        return self.claim_came_back_full or now - self.claimed_at >= CLAIM_EVERY_SECONDS \
            or any(held[webhook_id] <= self.hold // 2 for webhook_id in self.at_hold)

    def took(self, claimed: list[Claimed], *, asked: int, leased_until: float) -> None:
        self.claim_came_back_full = len(claimed) == asked
        for item in claimed:
            self.queues.setdefault(item.webhook_id, deque()).append((item, leased_until))
        self.at_hold = {webhook_id for webhook_id, count in self.held().items() if count >= self.hold}

    def collected(self, results: list[AttemptResult], now: float) -> None:
        if results and not self.finished:
            self.first_finished_at = now
        for result in results:
            self.finished.append(result)
            self.sending[result.claimed.webhook_id] -= 1

    def record_due(self, now: float) -> bool:
        """Record RECORD_BATCH at a time, or once nothing is in flight, or RECORD_EVERY_SECONDS after the oldest."""
        return bool(self.finished) and (len(self.finished) >= RECORD_BATCH or not self.in_flight
                                         or now - self.first_finished_at >= RECORD_EVERY_SECONDS)

    def recorded(self) -> None:
        self.finished = []
        self.sending = +self.sending  # forget webhooks down to zero


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, *, resolver: Resolver = system_resolver,
                 clock: Callable[[], datetime] = utcnow, rng: Callable[[], float] = random.random,
                 health: PipelineHealth | None = None) -> None:
        self.db = db
        self.health = health or PipelineHealth()
        self.settings = settings
        self.outbound = Outbound(allow_private=settings.webhook_allow_private, resolver=resolver,
                                 connect_timeout=settings.webhook_connect_timeout,
                                 read_timeout=settings.webhook_read_timeout,
                                 max_connections=settings.webhook_concurrency)
        self.clock = clock
        self.rng = rng
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self.schedule = settings.retry_schedule
        self.lease = timedelta(seconds=settings.webhook_lease_seconds)

    # -- fan-out --

    def fan_out(self, now: datetime | None = None, limit: int = FAN_OUT_BATCH) -> int:
        """Turn undispatched events into deliveries; returns how many events were dispatched (or set aside)."""
        now = now or self.clock()
        try:
            dispatched = self._fan_out(now, limit)
        except Exception as exc:
            self.health.failed(FAN_OUT, quarantine.describe(exc))
            raise
        self.health.succeeded(FAN_OUT)
        return dispatched

    def _fan_out(self, now: datetime, limit: int) -> int:
        claimed: list[int] = []
        try:
            with self.db.session(write=True) as session:
                batch = list(session.scalars(select(Event).where(Event.dispatched_at.is_(None)).order_by(Event.id)
                                             .limit(limit).with_for_update(skip_locked=True)))
                if not batch:
                    return 0
                claimed = [event.id for event in batch]
                make_deliveries(session, batch, now)
                return len(batch)
        except Exception as exc:
            if is_outage(exc) or not claimed:
                raise
        # One event spoils the batch: fan the same events out again in halves, down to the culprit.
        done = write_isolating(claimed, lambda ids: self._fan_out_these(ids, now), batch=len(claimed))
        for event_id, error in done.poison:
            set_event_aside(self.db, event_id, error, now)
        if done.outage is not None:
            raise done.outage
        return len(done.written) + len(done.poison)

    def _fan_out_these(self, ids: list[int], now: datetime) -> None:
        with self.db.session(write=True) as session:
            make_deliveries(session, list(session.scalars(
                select(Event).where(Event.id.in_(ids), Event.dispatched_at.is_(None)).order_by(Event.id)
                .with_for_update(skip_locked=True))), now)

    # -- claim --

    def claim(self, limit: int, held: Mapping[int, int] | None = None, *, per_webhook: int | None = None,
              now: datetime | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, oldest first, and at most ``per_webhook`` (less what this
        worker already ``held``) of any one webhook.

        Each webhook's oldest due deliveries are looked up on their own (``_due``), so one webhook's
        backlog never keeps another's deliveries out of the claim. The lease is taken with an UPDATE of
        those still claimable and not being leased by another worker at that moment (``SKIP LOCKED``):
        of two workers that picked the same delivery, one gets it.
        """
        now = now or self.clock()
        held = held or {}
        per_webhook = per_webhook or self.settings.webhook_per_endpoint
        if limit <= 0:
            return []
        with self.db.session(write=True) as session:
            taking: Counter[int] = Counter()
            chosen: list[int] = []
            for delivery_id, webhook_id in self._due(session, now, per_webhook, limit * 2):
                if held.get(webhook_id, 0) + taking[webhook_id] < per_webhook:
                    taking[webhook_id] += 1
                    chosen.append(delivery_id)
                    if len(chosen) == limit:
                        break
            if not chosen:
                return []
            # Rows another worker is leasing right now are skipped, not waited for (nor deadlocked on).
            free = select(DELIVERIES.c.id).where(DELIVERIES.c.id.in_(chosen), _claimable(now)) \
                .with_for_update(skip_locked=True)
            leased = session.execute(
                update(DELIVERIES).where(DELIVERIES.c.id.in_(free))
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease)
                .returning(DELIVERIES.c.id, DELIVERIES.c.delivery_id, DELIVERIES.c.webhook_id, DELIVERIES.c.event,
                           DELIVERIES.c.body, DELIVERIES.c.attempts)).all()
            hooks, unreadable = _signing_details(session, {row.webhook_id for row in leased})
            for row in leased:
                if row.webhook_id in unreadable:  # it cannot be signed: set aside (replay once the key is back)
                    _fail_and_set_aside(session, DELIVERIES.c.id == row.id, exc=unreadable[row.webhook_id], now=now,
                                        payload={"delivery": row.id, "delivery_id": row.delivery_id,
                                                 "webhook_id": row.webhook_id, "attempt": None})
        order = {delivery_id: index for index, delivery_id in enumerate(chosen)}
        claims = []
        for row in sorted(leased, key=lambda row: order[row.id]):
            hook = hooks.get(row.webhook_id)
            if hook is None:
                continue
            claims.append(Claimed(row.id, row.delivery_id, row.webhook_id, row.event, row.body, row.attempts, hook.url,
                                  signing_secrets(hook.secret, hook.previous_secret, hook.previous_secret_expires_at,
                                                  now)))
        return claims

    def _due(self, session: Session, now: datetime, per_webhook: int, limit: int) -> list[tuple[int, int]]:
        """(delivery id, webhook id) of the oldest due deliveries, at most ``per_webhook`` of each webhook."""
        def of_webhook(webhook_id: ColumnElement[int] | int, sendable: ColumnElement[bool]) -> Select[Any]:
            return (select(DELIVERIES.c.id, DELIVERIES.c.webhook_id, DELIVERIES.c.next_attempt_at)
                    .where(DELIVERIES.c.webhook_id == webhook_id, _claimable(now), sendable)
                    .order_by(DELIVERIES.c.next_attempt_at).limit(per_webhook))

        test_only = DELIVERIES.c.event == TEST_EVENT  # what a disabled webhook still gets

        if session.get_bind().dialect.name == "postgresql":
            # One query: an index probe per webhook (LATERAL), then the oldest of what they found.
            each = of_webhook(WEBHOOKS.c.id, or_(WEBHOOKS.c.enabled, test_only)).lateral()
            rows = session.execute(select(each.c.id, each.c.webhook_id).select_from(WEBHOOKS).join(each, true())
                                   .order_by(each.c.next_attempt_at).limit(limit)).all()
            return [(row.id, row.webhook_id) for row in rows]
        # SQLite has no LATERAL; its queries are calls within this process, so a query per webhook is cheap.
        found: list[tuple[datetime, int, int]] = []
        for webhook_id, enabled in session.execute(select(WEBHOOKS.c.id, WEBHOOKS.c.enabled)).all():
            found += [(row.next_attempt_at, row.id, row.webhook_id)
                      for row in session.execute(of_webhook(webhook_id, true() if enabled else test_only))]
        return [(delivery_id, webhook_id) for _, delivery_id, webhook_id in sorted(found)[:limit]]

    def release(self, ids: list[int]) -> None:
        """Give back leases on deliveries this worker will not send after all."""
        if ids:
            with self.db.session(write=True) as session:
                session.execute(update(DELIVERIES)
                                .where(DELIVERIES.c.id.in_(ids), DELIVERIES.c.lease_owner == self.owner)
                                .values(lease_owner=None, lease_expires_at=None))

    # -- send --

    async def attempt(self, claimed: Claimed) -> AttemptResult:
        started_at = self.clock()
        body = claimed.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"HostAtlas-Webhooks/{__version__}",
                   **signature_headers(body, claimed.secrets, delivery_id=claimed.delivery_id, event=claimed.event,
                                       timestamp=int(started_at.timestamp()))}
        began = time.perf_counter()
        answer: Answer | None = None
        error: OutboundError | None = None
        try:
            answer = await self.outbound.post(claimed.url, body, headers)
        except OutboundError as exc:
            error = exc
        except Exception as exc:  # anything unforeseen is one failed attempt, not a dead dispatcher
            error = OutboundError("connection_error", f"{type(exc).__name__}: {exc}"[:500])
        duration_ms = answer.duration_ms if answer else round((time.perf_counter() - began) * 1000)
        return AttemptResult(claimed, started_at, duration_ms, headers, answer, error)

    # -- record --

    def record(self, results: list[AttemptResult], now: datetime | None = None) -> None:
        """Log every attempt and move each delivery on, in one transaction (halves of it if that fails)."""
        if not results:
            return
        now = now or self.clock()
        done = write_isolating(results, lambda batch: self._record(batch, now), batch=len(results))
        for result, exc in done.poison:
            self._set_delivery_aside(result, exc, now)
        if done.outage is not None:
            self.health.failed(DELIVERY, quarantine.describe(done.outage))
            raise done.outage
        self.health.succeeded(DELIVERY)

    def _record(self, results: list[AttemptResult], now: datetime) -> None:
        attempts: list[dict[str, object]] = []
        moves: list[dict[str, object]] = []
        gone: set[int] = set()
        with self.db.session(write=True) as session:
            # A delivery deleted meanwhile (its webhook was) has nothing left to log to. Locked, so that
            # a deletion now waits for this transaction instead of failing it; in id order, as
            # service.delete_webhook locks them, so that the two cannot deadlock.
            existing = set(session.scalars(select(DELIVERIES.c.id).where(
                DELIVERIES.c.id.in_([result.claimed.id for result in results]))
                .order_by(DELIVERIES.c.id).with_for_update()))
            for result in results:
                if result.claimed.id not in existing:
                    continue
                claimed, answer, number = result.claimed, result.answer, result.claimed.attempts + 1
                status = answer.status if answer else None
                error = result.error.kind if result.error else (None if status and 200 <= status < 300
                                                                   else "http_status")
                excerpt = _excerpt(answer.body) if answer else None
                attempts.append({
                    "delivery_id": claimed.id, "number": number, "started_at": result.started_at,
                    "duration_ms": result.duration_ms, "url": claimed.url, "request_headers": result.request_headers,
                    "response_status": status, "response_body": excerpt, "error": error,
                    "error_detail": _storable(result.error.detail[:500]) if result.error else None})
                state = next_state(answer, number, self.schedule, now, draw=self.rng())
                moves.append({"b_id": claimed.id, "b_attempts": number, "b_status": state.status.value,
                              "b_completed": state.completed_at, "b_next": state.next_attempt_at})
                if state.disables_webhook:
                    gone.add(claimed.webhook_id)
            if not moves:
                return
            # One executemany. Only while we still hold the lease: a worker that took it over decides now.
            session.execute(update(DELIVERIES).where(DELIVERIES.c.id == bindparam("b_id"),
                                                     DELIVERIES.c.lease_owner == self.owner)
                            .values(attempts=bindparam("b_attempts"), status=bindparam("b_status"),
                                    completed_at=bindparam("b_completed"), next_attempt_at=bindparam("b_next"),
                                    lease_owner=None, lease_expires_at=None), moves)
            session.execute(insert(ATTEMPTS), attempts)  # Core: the ORM's bulk path costs more here
            if gone:
                disable(session, sorted(gone), reason="The endpoint answered 410 Gone", now=now)

    def _set_delivery_aside(self, result: AttemptResult, exc: Exception, now: datetime) -> None:
        """Fail a delivery whose attempt could not be recorded, and quarantine it: sending it again and
        again, never knowing how it went, would help no one. Replaying puts it back in the queue."""
        claimed = result.claimed
        attempt = {"number": claimed.attempts + 1, "started_at": result.started_at.isoformat(),
                   "response_status": result.answer.status if result.answer else None,
                   "error": result.error.kind if result.error else None}
        try:
            with self.db.session(write=True) as session:
                # Only while still ours: a worker that took the lease over decides now.
                _fail_and_set_aside(session, DELIVERIES.c.id == claimed.id, DELIVERIES.c.lease_owner == self.owner,
                                    payload={"delivery": claimed.id, "delivery_id": claimed.delivery_id,
                                             "webhook_id": claimed.webhook_id, "attempt": attempt}, exc=exc, now=now)
        except Exception:
            # Its lease expires and it is sent again: at least once, as after any failed recording.
            log.exception("webhook_set_aside_failed", delivery=claimed.delivery_id)

    # -- the loop --

    async def run_once(self, now: datetime | None = None) -> int:
        """Fan out, claim what is due, send it all, record: one pass, for tests."""
        try:
            await asyncio.to_thread(self.fan_out, now)
            claimed = await asyncio.to_thread(self.claim, self.settings.webhook_concurrency, None, now=now)
            results = await asyncio.gather(*(self.attempt(item) for item in claimed))
            await asyncio.to_thread(self.record, list(results), now)
            return len(results)
        finally:
            await self.outbound.aclose()  # its connections belong to this event loop

    async def run(self, stopping: threading.Event) -> None:
        """Keep up to ``webhook_concurrency`` attempts in flight until ``stopping``.

        Deliveries are claimed ahead into a queue per webhook (up to HOLD_PER_ENDPOINT times
        ``webhook_per_endpoint`` each, twice ``webhook_concurrency`` in all) and started from there as
        each webhook's slots free up; finished attempts are recorded 64 at a time (or after 0.1 s). A
        transaction per attempt, or a claim per finished attempt, would cost the database more than the
        sending does. Each turn: fan out and claim (when due), start, collect, record (when due).
        """
        state = LoopState(hold=HOLD_PER_ENDPOINT * self.settings.webhook_per_endpoint,
                          capacity=2 * self.settings.webhook_concurrency)
        while not stopping.is_set() or state.in_flight or state.finished:
            if stopping.is_set() and state.queues:
                await self._give_back(state)
            try:
                if not stopping.is_set():
                    await self._fan_out_when_due(state)
                await self._claim_when_due(state, stopping=stopping.is_set())
            except Exception:
                log.exception("webhook_dispatch_failed")
            stale = self._start_queued(state)
            if stale:
                await self._release(stale)
            if state.in_flight:
                await self._collect(state)
            elif not state.finished:
                await asyncio.sleep(IDLE_POLL_SECONDS)  # nothing claimed, nothing to record
                continue
            if state.record_due(time.monotonic()):
                await self._record_finished(state)
        await self.outbound.aclose()

    async def _fan_out_when_due(self, state: LoopState) -> None:
        """Every FAN_OUT_EVERY_SECONDS, turn every undispatched event into deliveries (batch after batch)."""
        if time.monotonic() - state.fanned_out_at < FAN_OUT_EVERY_SECONDS:
            return
        state.fanned_out_at = time.monotonic()
        while await asyncio.to_thread(self.fan_out) == FAN_OUT_BATCH:
            pass

    async def _claim_when_due(self, state: LoopState, *, stopping: bool) -> None:
        """Claim ahead, while a quarter of the capacity or more is free and a claim is due (``LoopState.claim_due``)."""
        held = state.held()
        room = 0 if stopping else state.capacity - sum(held.values())
        if room < state.capacity // 4 or not state.claim_due(held, time.monotonic()):
            return
        state.claimed_at = time.monotonic()
        claimed = await asyncio.to_thread(self.claim, room, dict(held), per_webhook=state.hold)
        state.took(claimed, asked=room, leased_until=time.monotonic() + self.lease.total_seconds())

    def _start_queued(self, state: LoopState) -> list[int]:
        """Start queued attempts while the webhook and the worker have free slots; returns the ids of those
        that waited too long to be sent within their lease (to give back)."""
        stale: list[int] = []
        per_endpoint, concurrency = self.settings.webhook_per_endpoint, self.settings.webhook_concurrency
        lease_needed = min(self.lease.total_seconds() / 2, self.settings.webhook_connect_timeout
                           + self.settings.webhook_read_timeout + LEASE_MARGIN_SECONDS)
        for webhook_id in list(state.queues):
            queue = state.queues[webhook_id]
            while queue and state.sending[webhook_id] < per_endpoint and len(state.in_flight) < concurrency:
                item, leased_until = queue.popleft()
                if leased_until - time.monotonic() < lease_needed:
                    # Its lease could run out mid-attempt and another worker send it too.
                    stale.append(item.id)
                    continue
                state.sending[webhook_id] += 1
                state.in_flight.add(asyncio.create_task(self.attempt(item)))
            if not queue:
                del state.queues[webhook_id]
        return stale

    async def _collect(self, state: LoopState) -> None:
        """Wait (at most RECORD_EVERY_SECONDS) for attempts in flight to finish, and take those that did."""
        done, state.in_flight = await asyncio.wait(state.in_flight, timeout=RECORD_EVERY_SECONDS,
                                                   return_when=asyncio.FIRST_COMPLETED)
        state.collected([task.result() for task in done], time.monotonic())

    async def _record_finished(self, state: LoopState) -> None:
        try:
            await asyncio.to_thread(self.record, state.finished)
        except Exception:
            # The leases expire and the deliveries are tried again: at least once.
            log.exception("webhook_record_failed", attempts=len(state.finished))
        state.recorded()

    async def _give_back(self, state: LoopState) -> None:
        """Stopping: the deliveries claimed but not started go back to the queue for other workers."""
        ids = [item.id for queue in state.queues.values() for item, _ in queue]
        state.queues.clear()
        await self._release(ids)

    async def _release(self, ids: list[int]) -> None:
        try:
            await asyncio.to_thread(self.release, ids)
        except Exception:
            log.exception("webhook_release_failed", deliveries=len(ids))  # their leases expire instead

    def run_forever(self, stopping: threading.Event) -> None:
        log.info("webhook_dispatcher_started", owner=self.owner, concurrency=self.settings.webhook_concurrency)
        asyncio.run(self.run(stopping))
        log.info("webhook_dispatcher_stopped", owner=self.owner)


_SIGNING = select(WEBHOOKS.c.id, WEBHOOKS.c.url, WEBHOOKS.c.secret, WEBHOOKS.c.previous_secret,
                  WEBHOOKS.c.previous_secret_expires_at)


def _signing_details(session: Session, webhook_ids: set[int]) -> tuple[dict[int, Any], dict[int, Exception]]:
    """URL and secrets of each webhook; those whose secret cannot be opened (sealed with a key the
    install no longer has) come back apart with why, so that they stop nobody else's deliveries."""
    try:
        return {row.id: row for row in session.execute(_SIGNING.where(WEBHOOKS.c.id.in_(webhook_ids)))}, {}
    except Exception as exc:
        if is_outage(exc):
            raise
    hooks: dict[int, Any] = {}
    unreadable: dict[int, Exception] = {}
    for webhook_id in sorted(webhook_ids):
        try:
            hooks[webhook_id] = session.execute(_SIGNING.where(WEBHOOKS.c.id == webhook_id)).one()
        except Exception as exc:
            if is_outage(exc):
                raise
            unreadable[webhook_id] = exc
    return hooks, unreadable


def _fail_and_set_aside(session: Session, *where: ColumnElement[bool], payload: dict[str, Any], exc: Exception,
                        now: datetime) -> None:
    """Fail the delivery (if ``where`` still matches it) and quarantine it; replaying makes it pending again."""
    team_id = session.scalar(update(DELIVERIES).where(*where)
                             .values(status=DeliveryStatus.FAILED.value, completed_at=now, next_attempt_at=None,
                                     lease_owner=None, lease_expires_at=None).returning(DELIVERIES.c.team_id))
    if team_id is not None:
        quarantine.set_aside(session, pipeline=DELIVERY, reason=quarantine.describe(exc),
                             payload=json.dumps(payload).encode(), team_id=team_id, now=now)


def replay_delivery(db: Database, item: QuarantinedItem) -> None:
    """Send the set-aside delivery again (a new attempt), if it is still there."""
    with db.session(write=True) as session:
        session.execute(update(DELIVERIES).where(DELIVERIES.c.id == json.loads(item.payload)["delivery"],
                                                 DELIVERIES.c.status == DeliveryStatus.FAILED.value)
                        .values(status=DeliveryStatus.PENDING.value, completed_at=None, next_attempt_at=utcnow()))


def _excerpt(body: bytes) -> str:
    return _storable(body.decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS])


def _storable(text: str) -> str:
    # A receiver's answer, and errors quoting it, are outside input: PostgreSQL refuses NUL in text.
    return text.replace("\x00", "\ufffd")

