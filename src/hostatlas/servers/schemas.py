from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hostatlas.http.types import Id, Int64, NonNegativeInt, Storable, Timestamp
from hostatlas.servers.models import ServerStatus

# The pattern already keeps NUL out; Storable says so where a reader of the type looks.
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                       pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$"), Storable]


class ServerRef(BaseModel):
    """Which server an item belongs to, as every list that spans servers names it."""

    id: Id
    hostname: str


class ServerSummary(BaseModel):
    """A server as lists and event payloads show it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 47, "hostname": "web-prod-01", "display_name": None, "ip_address": "10.0.1.12",
        "os": "Ubuntu 22.04.3 LTS", "status": "online", "last_seen_at": "2026-03-21T14:32:01Z",
        "services_count": 5, "domains_count": 3, "tags": ["prod"], "agent_version": "1.4.2",
        "created_at": "2026-01-10T08:00:00Z",
    }]})

    id: Id
    hostname: str
    display_name: str | None
    ip_address: str | None
    os: str | None
    status: ServerStatus
    last_seen_at: Timestamp
    services_count: NonNegativeInt
    domains_count: NonNegativeInt
    tags: list[str]
    agent_version: str | None
    created_at: Timestamp


class ServiceBrief(BaseModel):
    name: str
    version: str | None
    status: str | None
    unit: str | None = None
    pid: NonNegativeInt | None = None
    ports: list[NonNegativeInt] = []


class DomainBrief(BaseModel):
    name: str
    ssl_expiry: date | None
    source: str | None = None
    reload_needed: bool = Field(False, description="Its web server still serves an older certificate than the one "
                                                   "on disk: renewed but not reloaded")


class ContainerBrief(BaseModel):
    id: str
    name: str
    image: str | None
    status: str | None


class CertificateBrief(BaseModel):
    path: str
    subject: str | None
    issuer: str | None
    domains: list[str]
    not_after: Timestamp | None


class ServerDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 47, "hostname": "web-prod-01", "ip_address": "10.0.1.12", "os": "Ubuntu 22.04.3 LTS",
        "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192, "status": "online",
        "agent_version": "1.4.2", "last_seen_at": "2026-03-21T14:32:01Z",
        "services": [{"name": "nginx", "version": "1.24.0", "status": "running"},
                     {"name": "postgresql", "version": "15.4", "status": "running"},
                     {"name": "redis", "version": "7.2.3", "status": "running"}],
        "domains": [{"name": "app.example.com", "ssl_expiry": "2026-08-14"},
                    {"name": "api.example.com", "ssl_expiry": "2026-08-14"}],
    }]})

    id: Id
    hostname: str
    display_name: str | None
    ip_address: str | None
    os: str | None
    kernel: str | None
    cpu_cores: Int64 | None
    ram_total_mb: Int64 | None
    status: ServerStatus
    agent_version: str | None
    last_seen_at: Timestamp
    offline_since: Timestamp | None
    uptime_s: Int64 | None
    tags: list[str]
    created_at: Timestamp
    services: list[ServiceBrief]
    domains: list[DomainBrief]
    containers: list[ContainerBrief]
    certificates: list[CertificateBrief]


class ServerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=255), Storable] | None = Field(
        None, description="Shown instead of the hostname; empty string clears it")
    tags: list[Tag] | None = Field(None, max_length=50, description="Replaces the server's tags")
