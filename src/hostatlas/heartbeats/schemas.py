"""Heartbeats as the API shows them: the seed's shape, plus schedule, runs and state."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from hostatlas.heartbeats.models import Heartbeat, HeartbeatStatus
from hostatlas.http.types import Id, Timestamp


def ping_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/heartbeat/{token}"


class HeartbeatOut(BaseModel):
    """A heartbeat as lists, its detail and its event payloads show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 12, "name": "nightly-backup", "slug": "nightly-backup",
        "ping_url": "https://api.hostatlas.app/heartbeat/abc123def456", "interval": 86400, "grace": 3600,
        "schedule": None, "timezone": "UTC", "status": "new", "tags": [], "server_id": None,
        "last_ping_at": None, "next_due_at": None, "last_duration_s": None, "min_runtime": None,
        "max_runtime": None, "manual_resume": False, "created_at": "2026-03-21T14:35:00Z",
    }]})

    id: Id
    name: str
    slug: str
    ping_url: str
    interval: int | None = Field(description="Seconds between pings; null when `schedule` is set")
    grace: int = Field(description="Seconds a ping may be late before the heartbeat is down")
    schedule: str | None = Field(description="Cron expression, read in `timezone`; null when `interval` is set")
    timezone: str
    status: HeartbeatStatus
    tags: list[str]
    server_id: Id | None
    last_ping_at: Timestamp | None
    next_due_at: Timestamp | None
    last_duration_s: float | None
    min_runtime: int | None
    max_runtime: int | None
    manual_resume: bool
    created_at: Timestamp

    @classmethod
    def of(cls, heartbeat: Heartbeat, public_url: str) -> HeartbeatOut:
        return cls(
            id=heartbeat.id, name=heartbeat.name, slug=heartbeat.slug,
            ping_url=ping_url(public_url, heartbeat.ping_token), interval=heartbeat.interval,
            grace=heartbeat.grace, schedule=heartbeat.schedule, timezone=heartbeat.timezone,
            status=HeartbeatStatus(heartbeat.status), tags=list(heartbeat.tags or []), server_id=heartbeat.server_id,
            last_ping_at=heartbeat.last_ping_at, next_due_at=heartbeat.next_due_at,
            last_duration_s=heartbeat.last_duration_s, min_runtime=heartbeat.min_runtime,
            max_runtime=heartbeat.max_runtime, manual_resume=heartbeat.manual_resume, created_at=heartbeat.created_at,
        )

