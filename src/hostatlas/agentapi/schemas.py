"""Agent payloads. Unknown fields are ignored so that newer agents keep working with older platforms;
wrong types, oversized lists and out-of-range values are refused with field errors."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from hostatlas.http.types import Timestamp, TimestampIn

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
LongText = Annotated[str, StringConstraints(max_length=1024)]


class AgentModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterRequest(AgentModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "machine_id": "4c4c4544-0051-3610-8052-b4c04f4e4a32", "hostname": "web-prod-01", "ip_address": "10.0.1.12",
        "os": "Ubuntu 22.04.3 LTS", "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192,
        "agent_version": "1.4.2",
    }]})

    machine_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    hostname: Name
    ip_address: Annotated[str, StringConstraints(strip_whitespace=True, max_length=45)] | None = None
    os: Text | None = None
    kernel: Text | None = None
    cpu_cores: int | None = Field(None, ge=0, le=100_000)
    ram_total_mb: int | None = Field(None, ge=0, le=1 << 40)
    agent_version: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None


class RegisterResponse(BaseModel):
    server_id: int
    agent_token: str = Field(description="agt_...; shown once; every other agent call sends it as a Bearer token")
    created: bool = Field(description="False when this machine_id was already enrolled (its old token is revoked)")


class CheckInRequest(AgentModel):
    agent_version: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    uptime_s: int | None = Field(None, ge=0, le=1 << 40)
    boot_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = None


class CheckInResponse(BaseModel):
    status: str = "ok"
    server_id: int
    received_at: Timestamp


class ServiceItem(AgentModel):
    name: Name
    version: Annotated[str, StringConstraints(max_length=128)] | None = None
    status: Annotated[str, StringConstraints(max_length=32)] | None = None
    unit: Text | None = None
    pid: int | None = Field(None, ge=0, le=1 << 31)
    ports: list[Annotated[int, Field(ge=0, le=65535)]] = Field(default_factory=list, max_length=256)
    log_paths: list[LongText] = Field(default_factory=list, max_length=64)


class DomainItem(AgentModel):
    name: Name
    source: Text | None = None
    ssl_expiry: date | None = None

    @field_validator("ssl_expiry", mode="before")
    @classmethod
    def _date_of_datetime(cls, value: object) -> object:
        # Agents may send a full timestamp; the expiry day is what is kept.
        if isinstance(value, str) and "T" in value:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        return value


class ContainerItem(AgentModel):
    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    name: Name
    image: Annotated[str, StringConstraints(max_length=512)] | None = None
    status: Annotated[str, StringConstraints(max_length=64)] | None = None


class CertificateItem(AgentModel):
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    subject: LongText | None = None
    issuer: LongText | None = None
    domains: list[Name] = Field(default_factory=list, max_length=500)
    not_after: TimestampIn | None = None


IDENTITY = {"services": "name", "domains": "name", "containers": "id", "certificates": "path"}


class DiscoveryRequest(AgentModel):
    """A full snapshot per kind; leave a kind out to keep what is stored for it."""

    services: list[ServiceItem] | None = Field(None, max_length=2000)
    domains: list[DomainItem] | None = Field(None, max_length=5000)
    containers: list[ContainerItem] | None = Field(None, max_length=2000)
    certificates: list[CertificateItem] | None = Field(None, max_length=2000)

    @field_validator("services", "domains", "containers", "certificates")
    @classmethod
    def _no_duplicates(cls, items: list[BaseModel] | None, info: ValidationInfo) -> list[BaseModel] | None:
        key = IDENTITY[str(info.field_name)]
        seen: set[str] = set()
        for item in items or []:
            value = str(getattr(item, key))
            if value in seen:
                raise PydanticCustomError("duplicate", "{key} {value} appears twice",
                                          {"key": key, "value": repr(value)})
            seen.add(value)
        return items


class KindChanges(BaseModel):
    added: list[str]
    changed: list[str]
    removed: list[str]


class DiscoveryResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "summary": {"added": 0, "changed": 1, "removed": 1},
        "services": {"added": [], "changed": ["nginx"], "removed": ["redis"]},
    }]})

    summary: dict[str, int]
    services: KindChanges | None = None
    domains: KindChanges | None = None
    containers: KindChanges | None = None
    certificates: KindChanges | None = None
