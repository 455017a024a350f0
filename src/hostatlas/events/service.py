"""Writing and reading the event feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hostatlas.events.models import Event

# The event types the platform emits; features add theirs here.
SERVER_OFFLINE = "server.offline"
SERVER_ONLINE = "server.online"
SERVER_REGISTERED = "server.registered"
SERVER_DELETED = "server.deleted"
INVENTORY_CHANGED = "inventory.changed"

# What a webhook may subscribe to: the seed's catalogue (features not built yet emit theirs when they
# land) plus the platform's own server and inventory events. A webhook without a list gets every event.
WEBHOOK_EVENTS = (
    SERVER_OFFLINE, SERVER_ONLINE, "incident.created", "incident.resolved", "alert.triggered", "alert.resolved",
    "ssl.expiring", "heartbeat.missed", SERVER_REGISTERED, SERVER_DELETED, INVENTORY_CHANGED,
)


def record(session: Session, *, team_id: int, type: str, resource_type: str, resource_id: int | None,
           payload: dict[str, Any], at: datetime, server_id: int | None = None) -> Event:
    """Add an event to the caller's transaction: it exists exactly when the change that caused it does."""
    event = Event(team_id=team_id, type=type, resource_type=resource_type, resource_id=resource_id,
                  server_id=server_id, payload=payload, created_at=at)
    session.add(event)
    return event
