"""Heartbeats as the API shows them (the seed's shape, plus schedule, runs and state) and the requests that
make and change them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatStatus, PingKind
from hostatlas.heartbeats.schedule import MAX_CRON_LENGTH
from hostatlas.http.types import Flag, Id, NonNegativeInt, Storable, Timestamp
from hostatlas.servers.schemas import Tag


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



# Bounds of the durations a heartbeat is configured with, in seconds (service.py enforces them as well, for
# callers other than the API). Under a minute between pings is not a cron job any more; beyond a leap year
# is a typing mistake, and 366 days also keeps every sum of a moment and a duration far inside what the
# stores can hold.
MIN_INTERVAL = 60
MAX_SECONDS = 366 * 86_400
DEFAULT_GRACE = 3600
MAX_TAGS = 50
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,98}[a-z0-9])?$"

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=SLUG_PATTERN), Storable]
Interval = Annotated[int, Strict(), Field(ge=MIN_INTERVAL, le=MAX_SECONDS)]
Seconds = Annotated[int, Strict(), Field(ge=0, le=MAX_SECONDS)]
Cron = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CRON_LENGTH), Storable]
TimezoneName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), Storable]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]


class HeartbeatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "nightly-backup", "interval": 86400, "grace": 3600},
        {"name": "Invoice run", "schedule": "30 2 * * 1-5", "timezone": "Europe/Berlin", "grace": 900,
         "tags": ["billing"], "max_runtime": 1800},
    ]})

    name: Name
    slug: Slug | None = Field(None, description="For slug ping URLs; derived from the name when left out "
                                                "(a taken derived slug gets -2, -3...; a taken given one is 409)")
    interval: Interval | None = Field(None, description=f"Seconds between pings ({MIN_INTERVAL}..{MAX_SECONDS}); "
                                                        "give exactly one of interval and schedule")
    schedule: Cron | None = Field(None, description="Cron expression (5 fields), read in `timezone`")
    timezone: TimezoneName = Field("UTC", description="IANA name such as Europe/Berlin; only read for `schedule`")
    grace: Seconds = Field(DEFAULT_GRACE, description=f"Seconds a ping may be late before the heartbeat is down "
                                                      f"(0..{MAX_SECONDS})")
    tags: Tags = Field(default_factory=list)
    server_id: Id | None = Field(None, description="The team's server the job runs on")
    min_runtime: Seconds | None = Field(None, description="A run (from /start) shorter than this fails")
    max_runtime: Seconds | None = Field(None, description="A run longer than this fails; a started run with no end "
                                                          "is down after it (after grace when unset)")
    manual_resume: Flag = Field(False, description="Once down, stay down until resumed, whatever pings arrive")


class HeartbeatUpdate(BaseModel):
    """Every field optional; ``null`` clears the nullable ones (a schedule given replaces the interval, and
    the other way round)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"schedule": "0 3 * * *", "timezone": "Europe/Berlin"}, {"grace": 600, "tags": ["prod"]}]})

    name: Name | None = None
    slug: Slug | None = None
    interval: Interval | None = None
    schedule: Cron | None = None
    timezone: TimezoneName | None = None
    grace: Seconds | None = None
    tags: Tags | None = None
    server_id: Id | None = None
    min_runtime: Seconds | None = None
    max_runtime: Seconds | None = None
    manual_resume: Flag | None = None


class RunHistory(BaseModel):
    """Durations of the last runs that reported one (a success or failure ping ending a /start)."""

    count: NonNegativeInt = Field(description="Runs with a duration among the last pings considered")
    p50_s: float | None
    p95_s: float | None


class HeartbeatDetail(HeartbeatOut):
    runs: RunHistory
    too_often_recent: NonNegativeInt = Field(
        description="How many of the most recent pings came far sooner than the schedule expects")


class PingOut(BaseModel):
    id: Id
    kind: PingKind
    exit_status: int | None
    at: Timestamp
    rid: str | None
    duration_s: float | None
    remote_addr: str | None
    user_agent: str | None
    method: str
    body: str = Field(description="The body as UTF-8 text (undecodable bytes replaced)")
    body_size: NonNegativeInt = Field(description="Bytes kept of the body")
    body_truncated: bool = Field(description="Whether the body was longer than the bytes kept")
    too_often: bool

    @classmethod
    def of(cls, ping: HeartbeatPing) -> PingOut:
        body = bytes(ping.body or b"")
        return cls(id=ping.id, kind=PingKind(ping.kind), exit_status=ping.exit_status, at=ping.at, rid=ping.rid,
                   duration_s=ping.duration_s, remote_addr=ping.remote_addr, user_agent=ping.user_agent,
                   method=ping.method, body=body.decode("utf-8", errors="replace"), body_size=len(body),
                   body_truncated=ping.body_truncated, too_often=ping.too_often)


class FlipOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: Id
    at: Timestamp
    from_: HeartbeatStatus = Field(alias="from", serialization_alias="from")
    to: HeartbeatStatus
    cause: str = Field(description="ping, started, fail_ping, exit_status:N, run_too_short, run_too_long, late, "
                                   "missed, run_timeout, paused, resumed")

    @classmethod
    def of(cls, flip: HeartbeatFlip) -> FlipOut:
        return cls(id=flip.id, at=flip.at, from_=HeartbeatStatus(flip.from_status),
                   to=HeartbeatStatus(flip.to_status), cause=flip.cause)


class PingSettingsOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ping_key": "q3Zt9xYbW1mK0pLd", "ping_create": False,
        "slug_url_template": "https://api.hostatlas.app/heartbeat/q3Zt9xYbW1mK0pLd/<slug>"}]})

    ping_key: str = Field(description="The team's part of slug ping URLs")
    ping_create: bool = Field(description="Whether a ping to an unknown slug with ?create=1 creates it")
    slug_url_template: str


class PingSettingsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ping_create: Flag
