from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from hostatlas.events.models import Event
from hostatlas.http.types import Id, Timestamp


class EventOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 5012, "type": "server.offline", "resource_type": "server", "resource_id": 47, "server_id": 47,
        "created_at": "2026-03-21T14:37:22Z",
        "data": {"server": {"id": 47, "hostname": "web-prod-01", "ip_address": "10.0.1.12", "status": "offline",
                            "last_seen_at": "2026-03-21T14:32:01Z"},
                 "previous_status": "online", "offline_since": "2026-03-21T14:37:22Z"},
    }]})

    id: Id
    type: str
    resource_type: str
    resource_id: Id | None
    server_id: Id | None
    created_at: Timestamp
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(id=event.id, type=event.type, resource_type=event.resource_type, resource_id=event.resource_id,
                   server_id=event.server_id, created_at=event.created_at, data=event.payload)
