"""Webhooks: the team's endpoints, their secrets, and the deliveries the API and the fan-out create."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z
from hostatlas.errors import FieldProblem, InvalidInput, NotFound
from hostatlas.events import service as events
from hostatlas.outbound import Resolver, destination_problem, system_resolver
from hostatlas.webhooks.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from hostatlas.webhooks.signing import new_secret

TEST_EVENT = "webhook.test"
MAX_GRACE = timedelta(days=7)
# What an update may leave out (to keep) but not set to null. Events may be null: every event.
NOT_NULLABLE = ("url", "description", "enabled")


def new_delivery_id() -> str:
    return "del_" + secrets.token_hex(12)


@dataclass(frozen=True)
class Destinations:
    """Where webhooks may send: no internal address (SSRF), unless the install allows private ones.

    Checked when a URL is saved; ``outbound`` checks again at every request, as DNS may answer otherwise.
    """

    allow_private: bool
    resolver: Resolver = system_resolver

    def problem(self, url: str) -> FieldProblem | None:
        found = destination_problem(url, allow_private=self.allow_private, resolver=self.resolver)
        return FieldProblem("url", "invalid_destination", found) if found else None


def _events_problem(names: Sequence[str]) -> FieldProblem | None:
    unknown = sorted(set(names) - set(events.WEBHOOK_EVENTS))
    if unknown:
        return FieldProblem("events", "unknown_event", f"Unknown event {unknown[0]!r}; known: "
                            + ", ".join(events.WEBHOOK_EVENTS))
    if not names:
        return FieldProblem("events", "empty", "Subscribe to at least one event, or leave events out for all")
    return None


def check_events(names: Sequence[str] | None) -> list[str] | None:
    """The subscription as stored: None for every event, else the names, each one the platform emits."""
    if names is None:
        return None
    problem = _events_problem(names)
    if problem:
        raise InvalidInput([problem], problem.message)
    return _stored(names)


def _stored(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else sorted(set(names))


def null_problem(field: str, value: object) -> FieldProblem | None:
    """A field of ``NOT_NULLABLE`` set to null: leaving it out keeps it, null would erase it."""
    if field in NOT_NULLABLE and value is None:
        return FieldProblem(field, "null", "This field cannot be null; leave it out to keep it")
    return None


def _check(url: str | None, names: Sequence[str] | None, destinations: Destinations,
           changes: Mapping[str, object] | None = None) -> None:
    """Every problem of a webhook's URL, subscription and (on an update) nulls at once."""
    nulls = [null_problem(field, value) for field, value in (changes or {}).items()]
    problems = [problem for problem in (*nulls, None if url is None else destinations.problem(url),
                                        None if names is None else _events_problem(names)) if problem]
    if problems:
        raise InvalidInput(problems)


def create_webhook(session: Session, *, team_id: int, url: str, events_: Sequence[str] | None, description: str,
                   now: datetime, destinations: Destinations) -> Webhook:
    _check(url, events_, destinations)
    webhook = Webhook(team_id=team_id, url=url, description=description, events=_stored(events_),
                      enabled=True, enabled_since=now, secret=new_secret(), created_at=now, updated_at=now)
    session.add(webhook)
    session.flush()
    return webhook


def listing(team_id: int, *, enabled: bool | None) -> Select[Webhook]:
    """The team's webhooks, filtered (the caller pages and sorts)."""
    stmt = select(Webhook).where(Webhook.team_id == team_id)
    if enabled is not None:
        stmt = stmt.where(Webhook.enabled == enabled)
    return stmt


def get_webhook(session: Session, *, team_id: int, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.team_id != team_id:
        raise NotFound("Webhook", "webhook_not_found")
    return webhook


def update_webhook(session: Session, webhook: Webhook, changes: dict[str, Any], now: datetime,
                   destinations: Destinations) -> Webhook:
    """Apply the fields given. Re-enabling delivers events from now on, not those missed meanwhile."""
    _check(changes.get("url"), changes.get("events"), destinations, changes)
    if "url" in changes:
        webhook.url = changes["url"]
    if "description" in changes:
        webhook.description = changes["description"]
    if "events" in changes:
        webhook.events = _stored(changes["events"])
    if "enabled" in changes and changes["enabled"] != webhook.enabled:
        if changes["enabled"]:
            webhook.enabled = True
            webhook.enabled_since = now
            webhook.disabled_reason = None
            resume_deliveries(session, [webhook.id], now)
        else:
            disable(session, [webhook.id], reason=None, now=now)
    webhook.updated_at = now
    return webhook


def disable(session: Session, webhook_ids: Sequence[int], *, reason: str | None, now: datetime) -> None:
    """Disable webhooks and park their pending deliveries (``next_attempt_at`` NULL) until re-enabled.

    Parked, a disabled webhook's backlog stays out of the dispatcher's claim query, which would
    otherwise step over every one of those rows on each claim: with a disabled webhook's 100,000
    deliveries due, a claim took 29.5 ms on PostgreSQL, parked 6.4 ms (bench/webhook_claims.py). Test
    deliveries stay due: they go to disabled webhooks too.
    """
    session.execute(update(Webhook).where(Webhook.id.in_(webhook_ids))
                    .values(enabled=False, disabled_reason=reason, updated_at=now))
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.webhook_id.in_(webhook_ids), WebhookDelivery.status == DeliveryStatus.PENDING.value,
        WebhookDelivery.event != TEST_EVENT).values(next_attempt_at=None))


def resume_deliveries(session: Session, webhook_ids: Sequence[int], now: datetime) -> None:
    """Deliveries parked when their webhook was disabled are due again (they predate the disabling)."""
    session.execute(update(WebhookDelivery).where(
        WebhookDelivery.webhook_id.in_(webhook_ids), WebhookDelivery.status == DeliveryStatus.PENDING.value,
        WebhookDelivery.next_attempt_at.is_(None)).values(next_attempt_at=now))


def delete_webhook(session: Session, webhook: Webhook) -> None:
    """Delete a webhook; its deliveries and their attempts go with it (ON DELETE CASCADE)."""
    # Its deliveries are locked first, in id order: the order in which a dispatcher recording attempts
    # locks them. A cascade taking them in another order could deadlock with it.
    session.execute(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == webhook.id)
                    .order_by(WebhookDelivery.id).with_for_update())
    session.delete(webhook)


def rotate_secret(webhook: Webhook, *, grace: timedelta, now: datetime) -> Webhook:
    """A new secret signs from now on; the old one signs too until the grace period ends."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidInput.single("grace_seconds", "out_of_range", "grace_seconds must be between 0 and 604800")
    webhook.previous_secret = webhook.secret if grace else None
    webhook.previous_secret_expires_at = now + grace if grace else None
    webhook.secret = new_secret()
    webhook.updated_at = now
    return webhook


def signing_secrets(secret: str, previous: str | None, previous_expires_at: datetime | None,
                    now: datetime) -> list[str]:
    """The secrets that sign an attempt made at ``now``: the current one, then the previous in its grace."""
    if previous and previous_expires_at and previous_expires_at > now:
        return [secret, previous]
    return [secret]


def payload(event: str, delivery_id: str, at: datetime, data: dict[str, Any]) -> str:
    return orjson.dumps({"event": event, "delivery_id": delivery_id, "timestamp": isoformat_z(at),
                         "data": data}).decode()


def new_delivery(webhook: Webhook, *, event: str, event_id: int | None, data: dict[str, Any], at: datetime,
                 now: datetime, redelivery_of: str | None = None) -> WebhookDelivery:
    delivery_id = new_delivery_id()
    return WebhookDelivery(delivery_id=delivery_id, team_id=webhook.team_id, webhook_id=webhook.id,
                           event_id=event_id, event=event, body=payload(event, delivery_id, at, data),
                           status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now,
                           redelivery_of=redelivery_of, created_at=now)


def send_test(session: Session, webhook: Webhook, now: datetime) -> WebhookDelivery:
    data = {"webhook": {"id": webhook.id, "url": webhook.url, "description": webhook.description},
            "message": "This is a test delivery from HostAtlas."}
    delivery = new_delivery(webhook, event=TEST_EVENT, event_id=None, data=data, at=now, now=now)
    session.add(delivery)
    session.flush()
    return delivery


def delivery_listing(session: Session, *, team_id: int, webhook_id: int, status: DeliveryStatus | None,
                     event: str | None) -> Select[WebhookDelivery]:
    """A webhook's deliveries, filtered (the caller pages and sorts); another team's webhook is not found."""
    get_webhook(session, team_id=team_id, webhook_id=webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.team_id == team_id, WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status.value)
    if event:
        stmt = stmt.where(WebhookDelivery.event == event)
    return stmt


def get_delivery(session: Session, *, team_id: int, webhook_id: int, delivery_id: str) -> WebhookDelivery:
    delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id)).first()
    if delivery is None or delivery.team_id != team_id or delivery.webhook_id != webhook_id:
        raise NotFound("Delivery", "delivery_not_found")
    return delivery


def attempts_of(session: Session, delivery: WebhookDelivery) -> list[WebhookAttempt]:
    return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
                                .order_by(WebhookAttempt.number)))


def redeliver(session: Session, webhook: Webhook, delivery: WebhookDelivery, now: datetime) -> WebhookDelivery:
    """The same event and data again, as a new delivery (new delivery_id: the receiver must not skip it)."""
    original = orjson.loads(delivery.body)
    copy = new_delivery(webhook, event=delivery.event, event_id=delivery.event_id, data=original["data"],
                        at=datetime.fromisoformat(original["timestamp"].replace("Z", "+00:00")), now=now,
                        redelivery_of=delivery.delivery_id)
    session.add(copy)
    session.flush()
    return copy


def latest_deliveries(session: Session, *, team_id: int, webhook_ids: Sequence[int]) -> dict[int, WebhookDelivery]:
    """Each webhook's newest delivery (for a list of webhooks showing how their last delivery went)."""
    if not webhook_ids:
        return {}
    newest = (select(func.max(WebhookDelivery.id)).where(WebhookDelivery.team_id == team_id,
                                                          WebhookDelivery.webhook_id.in_(webhook_ids))
              .group_by(WebhookDelivery.webhook_id))
    rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.id.in_(newest)))
    return {row.webhook_id: row for row in rows}


def attempts_by_delivery(session: Session, deliveries: Sequence[WebhookDelivery]) -> dict[int, list[WebhookAttempt]]:
    """``attempts_of`` for a page of deliveries in one query: {delivery row id: attempts, first to last}."""
    found: dict[int, list[WebhookAttempt]] = {delivery.id: [] for delivery in deliveries}
    if found:
        for attempt in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(found)))
                                       .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)):
            found[attempt.delivery_id].append(attempt)
    return found
