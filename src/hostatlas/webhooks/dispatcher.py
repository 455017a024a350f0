"""The webhook dispatcher: events become deliveries, deliveries are sent, retried and logged.

It runs in every worker (``hostatlas worker``, and the worker thread of ``hostatlas serve``), each with
its own asyncio loop in a thread of its own:
- **fan-out**: events not yet dispatched are claimed with ``FOR UPDATE SKIP LOCKED`` and turned into one
  delivery per enabled webhook of the event's team that subscribes to its type and was enabled before
  it happened. Claiming by a flag rather than reading by id order means an event whose transaction
  commits late is not skipped.
- **claim**: due pending deliveries are leased to this worker (``lease_owner``, ``lease_expires_at``)
  under ``SKIP LOCKED``, so several workers share the queue without sending a delivery twice. A worker
  that dies holds its leases until they expire; then another takes the deliveries over (at least once:
  the receiver dedupes on ``delivery_id``, which stays the same).
- **send**: concurrently, at most ``webhook_concurrency`` in flight and ``webhook_per_endpoint`` per
  webhook, so one slow or dead endpoint never holds up the others.
- **record**: every attempt is logged; a 2xx succeeds; 410 fails the delivery and disables the webhook;
  anything else is retried after the next delay of ``HOSTATLAS_WEBHOOK_RETRY_SCHEDULE`` (with ±10%
  jitter), or after ``Retry-After`` on a 429 or 503; after the last retry the delivery is ``failed``.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import structlog
from sqlalchemy import Table, bindparam, insert, or_, select, update

from hostatlas import __version__
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.outbound import Answer, Outbound, OutboundError, Resolver, system_resolver
from hostatlas.settings import Settings
from hostatlas.webhooks.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from hostatlas.webhooks.service import TEST_EVENT, disable, new_delivery, secrets_in_use
from hostatlas.webhooks.signing import signature_headers

log = structlog.get_logger(__name__)

FAN_OUT_BATCH = 500
FAN_OUT_EVERY_SECONDS = 0.25
IDLE_POLL_SECONDS = 0.25
RESPONSE_EXCERPT_CHARS = 2048
MAX_RETRY_AFTER_SECONDS = 86_400
JITTER = 0.1
RECORD_BATCH = 64
RECORD_EVERY_SECONDS = 0.1


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
class Outcome:
    claimed: Claimed
    started_at: datetime
    duration_ms: int
    request_headers: dict[str, str]
    answer: Answer | None
    error: OutboundError | None


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, *, resolver: Resolver = system_resolver,
                 clock: Callable[[], datetime] = utcnow, rng: Callable[[], float] = random.random) -> None:
        self.db = db
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
        self._in_flight: Counter[int] = Counter()

    # -- fan-out --

    def fan_out(self, now: datetime | None = None, limit: int = FAN_OUT_BATCH) -> int:
        """Turn undispatched events into deliveries; returns how many events were dispatched."""
        now = now or self.clock()
        with self.db.session(write=True) as session:
            batch = list(session.scalars(select(Event).where(Event.dispatched_at.is_(None)).order_by(Event.id)
                                         .limit(limit).with_for_update(skip_locked=True)))
            if not batch:
                return 0
            hooks: dict[int, list[Webhook]] = {}
            for webhook in session.scalars(select(Webhook).where(
                    Webhook.team_id.in_(sorted({event.team_id for event in batch})), Webhook.enabled)):
                hooks.setdefault(webhook.team_id, []).append(webhook)
            for event in batch:
                for webhook in hooks.get(event.team_id, ()):
                    if (webhook.events is None or event.type in webhook.events) \
                            and event.created_at >= webhook.enabled_since:
                        session.add(new_delivery(webhook, event=event.type, event_id=event.id, data=event.payload,
                                                 at=event.created_at, now=now))
                event.dispatched_at = now
            return len(batch)

    # -- claim --

    def claim(self, limit: int, now: datetime | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, at most ``webhook_per_endpoint`` in flight per webhook."""
        now = now or self.clock()
        if limit <= 0:
            return []
        per_endpoint = self.settings.webhook_per_endpoint
        with self.db.session(write=True) as session:
            candidates = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.webhook_id)
                .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.status == DeliveryStatus.PENDING.value,
                       WebhookDelivery.next_attempt_at <= now,
                       or_(WebhookDelivery.lease_expires_at.is_(None), WebhookDelivery.lease_expires_at < now),
                       or_(Webhook.enabled, WebhookDelivery.event == TEST_EVENT))
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit * 2).with_for_update(skip_locked=True, of=WebhookDelivery)).all()
            taking: Counter[int] = Counter()
            chosen: list[int] = []
            for delivery_id, webhook_id in candidates:
                if self._in_flight[webhook_id] + taking[webhook_id] < per_endpoint:
                    taking[webhook_id] += 1
                    chosen.append(delivery_id)
                    if len(chosen) == limit:
                        break
            if not chosen:
                return []
            session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(chosen))
                            .values(lease_owner=self.owner, lease_expires_at=now + self.lease))
            rows = session.execute(
                select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.id.in_(chosen)).order_by(WebhookDelivery.next_attempt_at)).all()
            return [Claimed(d.id, d.delivery_id, d.webhook_id, d.event, d.body, d.attempts, w.url,
                            secrets_in_use(w, now)) for d, w in rows]

    # -- send --

    async def attempt(self, claimed: Claimed) -> Outcome:
        started_at = self.clock()
        body = claimed.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"HostAtlas-Webhooks/{__version__}",
                   **signature_headers(body, claimed.secrets, delivery_id=claimed.delivery_id, event=claimed.event,
                                       timestamp=int(started_at.timestamp()))}
        began = time.perf_counter()
        answer: Answer | None = None
        error: OutboundError | None = None
        self._in_flight[claimed.webhook_id] += 1
        try:
            answer = await self.outbound.post(claimed.url, body, headers)
        except OutboundError as exc:
            error = exc
        except Exception as exc:  # anything unforeseen is one failed attempt, not a dead dispatcher
            error = OutboundError("connection_error", f"{type(exc).__name__}: {exc}"[:500])
        finally:
            self._in_flight[claimed.webhook_id] -= 1
        duration_ms = answer.duration_ms if answer else round((time.perf_counter() - began) * 1000)
        return Outcome(claimed, started_at, duration_ms, headers, answer, error)

    # -- record --

    def record(self, outcomes: list[Outcome], now: datetime | None = None) -> None:
        """Log every attempt and move each delivery on, in one transaction."""
        if not outcomes:
            return
        now = now or self.clock()
        attempts: list[dict[str, object]] = []
        moves: list[dict[str, object]] = []
        gone: set[int] = set()
        with self.db.session(write=True) as session:
            # A delivery deleted meanwhile (its webhook was) has nothing left to log to. Locked, so that
            # a deletion now waits for this transaction instead of failing it; in id order, as
            # service.delete_webhook locks them, so that the two cannot deadlock.
            existing = set(session.scalars(select(WebhookDelivery.id).where(
                WebhookDelivery.id.in_([outcome.claimed.id for outcome in outcomes]))
                .order_by(WebhookDelivery.id).with_for_update()))
            for outcome in outcomes:
                if outcome.claimed.id not in existing:
                    continue
                claimed, answer, number = outcome.claimed, outcome.answer, outcome.claimed.attempts + 1
                status = answer.status if answer else None
                error = outcome.error.kind if outcome.error else (None if status and 200 <= status < 300
                                                                   else "http_status")
                excerpt = answer.body.decode("utf-8", "replace")[:RESPONSE_EXCERPT_CHARS] if answer else None
                attempts.append({
                    "delivery_id": claimed.id, "number": number, "started_at": outcome.started_at,
                    "duration_ms": outcome.duration_ms, "url": claimed.url, "request_headers": outcome.request_headers,
                    "response_status": status, "response_body": excerpt, "error": error,
                    "error_detail": outcome.error.detail[:500] if outcome.error else None})
                state = self._next_state(outcome, number, now)
                moves.append({"b_id": claimed.id, "b_attempts": number, "b_status": state["status"],
                              "b_completed": state["completed_at"], "b_next": state["next_attempt_at"]})
                if status == 410:
                    gone.add(claimed.webhook_id)
            if not moves:
                return
            # One executemany. Only while we still hold the lease: a worker that took it over decides now.
            deliveries = WebhookDelivery.__table__
            assert isinstance(deliveries, Table)
            session.execute(update(deliveries).where(deliveries.c.id == bindparam("b_id"),
                                                     deliveries.c.lease_owner == self.owner)
                            .values(attempts=bindparam("b_attempts"), status=bindparam("b_status"),
                                    completed_at=bindparam("b_completed"), next_attempt_at=bindparam("b_next"),
                                    lease_owner=None, lease_expires_at=None), moves)
            session.execute(insert(WebhookAttempt), attempts)
            if gone:
                disable(session, sorted(gone), reason="The endpoint answered 410 Gone", now=now)

    def _next_state(self, outcome: Outcome, number: int, now: datetime) -> dict[str, object]:
        answer = outcome.answer
        if answer is not None and 200 <= answer.status < 300:
            return {"status": DeliveryStatus.SUCCEEDED.value, "completed_at": now, "next_attempt_at": None}
        if (answer is not None and answer.status == 410) or number > len(self.schedule):
            return {"status": DeliveryStatus.FAILED.value, "completed_at": now, "next_attempt_at": None}
        delay = self.schedule[number - 1] * (1 + JITTER * (2 * self.rng() - 1))
        if answer is not None and answer.status in (429, 503):
            delay = _retry_after(answer, now) or delay
        return {"status": DeliveryStatus.PENDING.value, "completed_at": None,
                "next_attempt_at": now + timedelta(seconds=delay)}

    # -- the loop --

    async def run_once(self, now: datetime | None = None) -> int:
        """Fan out, claim what is due, send it all, record: one pass, for tests and the loop's idle ticks."""
        try:
            await asyncio.to_thread(self.fan_out, now)
            claimed = await asyncio.to_thread(self.claim, self.settings.webhook_concurrency, now)
            outcomes = await asyncio.gather(*(self.attempt(item) for item in claimed))
            await asyncio.to_thread(self.record, list(outcomes), now)
            return len(outcomes)
        finally:
            await self.outbound.aclose()  # its connections belong to this event loop

    async def run(self, stopping: threading.Event) -> None:
        """Keep ``webhook_concurrency`` attempts in flight until ``stopping``; claim and record in batches.

        Claims wait until a quarter of the slots are free and finished attempts are recorded 64 at a time
        (or after 0.1 s): a transaction per attempt would cost the database more than the sending.
        """
        in_flight: set[asyncio.Task[Outcome]] = set()
        finished: list[Outcome] = []
        fanned_out_at, first_finished_at = 0.0, 0.0
        concurrency = self.settings.webhook_concurrency
        while not stopping.is_set() or in_flight or finished:
            try:
                if not stopping.is_set() and time.monotonic() - fanned_out_at >= FAN_OUT_EVERY_SECONDS:
                    fanned_out_at = time.monotonic()
                    while await asyncio.to_thread(self.fan_out) == FAN_OUT_BATCH:
                        pass
                room = 0 if stopping.is_set() else concurrency - len(in_flight)
                wanted = room > 0 and (room >= max(1, concurrency // 4) or not in_flight)
                claimed = await asyncio.to_thread(self.claim, room) if wanted else []
            except Exception:
                log.exception("webhook_dispatch_failed")
                claimed = []
            in_flight.update(asyncio.create_task(self.attempt(item)) for item in claimed)
            if in_flight:
                done, in_flight = await asyncio.wait(in_flight, timeout=RECORD_EVERY_SECONDS,
                                                     return_when=asyncio.FIRST_COMPLETED)
                if done and not finished:
                    first_finished_at = time.monotonic()
                finished.extend(task.result() for task in done)
            elif not finished:
                await asyncio.sleep(IDLE_POLL_SECONDS)
                continue
            if finished and (len(finished) >= RECORD_BATCH or not in_flight
                             or time.monotonic() - first_finished_at >= RECORD_EVERY_SECONDS):
                try:
                    await asyncio.to_thread(self.record, finished)
                except Exception:
                    # The leases expire and the deliveries are tried again: at least once.
                    log.exception("webhook_record_failed", attempts=len(finished))
                finished = []
        await self.outbound.aclose()

    def run_forever(self, stopping: threading.Event) -> None:
        log.info("webhook_dispatcher_started", owner=self.owner, concurrency=self.settings.webhook_concurrency)
        asyncio.run(self.run(stopping))
        log.info("webhook_dispatcher_stopped", owner=self.owner)


def _retry_after(answer: Answer, now: datetime) -> float | None:
    value = answer.retry_after
    if not value:
        return None
    if value.strip().isdigit():
        seconds = float(value.strip())
    else:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_SECONDS)
