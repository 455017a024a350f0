"""Writing and reading the event feed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from hostatlas.events.models import Event

# The event types the platform emits; features add theirs here.
SERVER_OFFLINE = "server.offline"
SERVER_ONLINE = "server.online"
SERVER_REGISTERED = "server.registered"
SERVER_DELETED = "server.deleted"
INVENTORY_CHANGED = "inventory.changed"
# A heartbeat went down (missed its deadline, a run failed or timed out): once per outage; and came back up.
HEARTBEAT_MISSED = "heartbeat.missed"
HEARTBEAT_RECOVERED = "heartbeat.recovered"
# Incidents (hostatlas.incidents): opened (by hand or automatically), acknowledged, resolved, reopened.
INCIDENT_CREATED = "incident.created"
INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
INCIDENT_RESOLVED = "incident.resolved"
INCIDENT_REOPENED = "incident.reopened"
# Alert rules (hostatlas.alerts): a rule started or stopped firing for one server (and label set).
ALERT_TRIGGERED = "alert.triggered"
ALERT_RESOLVED = "alert.resolved"
# A certificate crossed one of its expiry thresholds (hostatlas.certwatch).
SSL_EXPIRING = "ssl.expiring"

# In the seed's catalogue, for features not built yet: a webhook may subscribe to them already, and nothing
# emits them until their feature lands (with its payload model in webhooks.payloads).
PLANNED_EVENTS: tuple[str, ...] = ()

# What a webhook may subscribe to: the seed's catalogue plus the platform's own server, inventory and heartbeat
# events. A webhook without a list gets every event.
WEBHOOK_EVENTS = (
    SERVER_OFFLINE, SERVER_ONLINE, INCIDENT_CREATED, INCIDENT_RESOLVED, ALERT_TRIGGERED, ALERT_RESOLVED, SSL_EXPIRING,
    *PLANNED_EVENTS,
    INCIDENT_ACKNOWLEDGED, INCIDENT_REOPENED, HEARTBEAT_MISSED, SERVER_REGISTERED, SERVER_DELETED,
    INVENTORY_CHANGED, HEARTBEAT_RECOVERED,
)


def record(session: Session, *, team_id: int, type: str, resource_type: str, resource_id: int | None,
           payload: dict[str, Any], at: datetime, server_id: int | None = None) -> Event:
    """Add an event to the caller's transaction: it exists exactly when the change that caused it does."""
    event = Event(team_id=team_id, type=type, resource_type=resource_type, resource_id=resource_id,
                  server_id=server_id, payload=payload, created_at=at)
    session.add(event)
    return event


def listing(team_id: int, *, types: Sequence[str] | None, server_id: int | None, after_id: int | None,
            since: datetime | None, until: datetime | None) -> Select[Event]:
    """The team's events, filtered (the caller pages and sorts): of any of ``types``, about ``server_id``, past
    ``after_id`` (to catch up), created in [``since``, ``until``)."""
    stmt = select(Event).where(Event.team_id == team_id)
    if types:
        stmt = stmt.where(Event.type.in_(types))
    if server_id is not None:
        stmt = stmt.where(Event.server_id == server_id)
    if after_id is not None:
        stmt = stmt.where(Event.id > after_id)
    if since is not None:
        stmt = stmt.where(Event.created_at >= since)
    if until is not None:
        stmt = stmt.where(Event.created_at < until)
    return stmt
