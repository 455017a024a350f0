"""The fan-out: an event becomes one delivery per webhook of its team that takes it.

Events are claimed by the dispatcher (``dispatcher.Dispatcher.fan_out``); this module holds what a
claimed batch turns into, and the way out for an event that cannot be turned into deliveries at all
(its payload does not encode, say): set aside in the quarantine as ``webhooks.fanout`` and marked
dispatched, so that it is not claimed again, and made into deliveries again on replay.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.webhooks.models import Webhook
from hostatlas.webhooks.service import new_delivery

FAN_OUT = "webhooks.fanout"


def make_deliveries(session: Session, batch: list[Event], now: datetime) -> None:
    """One delivery per event and enabled webhook of its team that subscribes to its type and was enabled
    before it happened; the events are marked dispatched."""
    hooks: dict[int, list[Webhook]] = {}
    for webhook in session.scalars(select(Webhook).where(
            Webhook.team_id.in_(sorted({event.team_id for event in batch})), Webhook.enabled)):
        hooks.setdefault(webhook.team_id, []).append(webhook)
    for event in batch:
        for webhook in hooks.get(event.team_id, ()):
            if (webhook.events is None or event.type in webhook.events) and event.created_at >= webhook.enabled_since:
                session.add(new_delivery(webhook, event=event.type, event_id=event.id, data=event.payload,
                                         at=event.created_at, now=now))
        event.dispatched_at = now


def set_event_aside(db: Database, event_id: int, exc: Exception, now: datetime) -> None:
    """Quarantine an event that cannot be fanned out, marked dispatched so that it is not claimed again."""
    with db.session(write=True) as session:
        team_id = session.scalar(update(Event).where(Event.id == event_id, Event.dispatched_at.is_(None))
                                 .values(dispatched_at=now).returning(Event.team_id))
        if team_id is not None:
            quarantine.set_aside(session, pipeline=FAN_OUT, reason=quarantine.describe(exc),
                                 payload=json.dumps({"event_id": event_id}).encode(), team_id=team_id, now=now)


def replay_fan_out(db: Database, item: QuarantinedItem) -> None:
    """Make the set-aside event's deliveries, for the webhooks that would take it now."""
    with db.session(write=True) as session:
        event = session.scalar(select(Event).where(Event.id == json.loads(item.payload)["event_id"])
                               .with_for_update())
        if event is not None:  # else its team was deleted: nobody is left to deliver it to
            make_deliveries(session, [event], utcnow())
