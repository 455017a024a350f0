"""Agent payloads. Unknown fields are ignored so that newer agents keep working with older platforms;
wrong types, oversized lists and out-of-range values are refused with field errors."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from hostatlas.http.types import (
    DateIn,
    Flag,
    Id,
    NonNegativeInt,
    Sha256Hex,
    Storable,
    Timestamp,
    TimestampIn,
    text_problem,
)
from hostatlas.incidents.models import SERVICE_MAX, TITLE_MAX, IncidentStatus, Severity


def _text(max_length: int, *, strip: bool = True, min_length: int = 0) -> StringConstraints:
    return StringConstraints(strip_whitespace=strip, min_length=min_length, max_length=max_length)


# Lengths are those of the columns the values are stored in.
Line = Annotated[str, _text(255), Storable]
Name = Annotated[str, _text(255, min_length=1), Storable]
LongText = Annotated[str, _text(1024, strip=False), Storable]
Version = Annotated[str, _text(64), Storable]
BootId = Annotated[str, _text(128), Storable]
Port = Annotated[NonNegativeInt, Field(le=65535)]


class AgentModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterRequest(AgentModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "machine_id": "4c4c4544-0051-3610-8052-b4c04f4e4a32", "hostname": "web-prod-01", "ip_address": "10.0.1.12",
        "os": "Ubuntu 22.04.3 LTS", "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192,
        "agent_version": "1.4.2",
    }]})

    machine_id: Annotated[str, _text(128, min_length=1), Storable]
    hostname: Name
    ip_address: Annotated[str, _text(45), Storable] | None = None
    os: Line | None = None
    kernel: Line | None = None
    cpu_cores: NonNegativeInt | None = Field(None, le=100_000)
    ram_total_mb: NonNegativeInt | None = Field(None, le=1 << 40)
    agent_version: Version | None = None


class RegisterResponse(BaseModel):
    server_id: Id
    agent_token: str = Field(description="agt_...; shown once; every other agent call sends it as a Bearer token")
    created: bool = Field(description="False when this machine_id was already enrolled (its old token is revoked)")


class CheckInRequest(AgentModel):
    agent_version: Version | None = None
    uptime_s: NonNegativeInt | None = Field(None, le=1 << 40)
    boot_id: BootId | None = None


class CheckInResponse(BaseModel):
    status: str = "ok"
    server_id: Id
    received_at: Timestamp


class ServiceItem(AgentModel):
    name: Name
    version: Annotated[str, _text(128, strip=False), Storable] | None = None
    status: Annotated[str, _text(32, strip=False), Storable] | None = None
    unit: Line | None = None
    pid: NonNegativeInt | None = Field(None, le=2**31 - 1, description="Stored in a 32-bit column")
    ports: list[Port] = Field(default_factory=list, max_length=256)
    log_paths: list[LongText] = Field(default_factory=list, max_length=64)


class DiskCertificate(AgentModel):
    """The certificate file a domain's vhost configuration names."""

    path: Annotated[str, _text(1024, strip=False, min_length=1), Storable]
    not_after: TimestampIn | None = None
    fingerprint_sha256: Sha256Hex


class ServedCertificate(AgentModel):
    """The certificate a TLS handshake to the host (SNI = the domain) got."""

    not_after: TimestampIn | None = None
    fingerprint_sha256: Sha256Hex
    issuer: LongText | None = None
    subject: LongText | None = None


class DomainItem(AgentModel):
    name: Name
    source: Line | None = None
    ssl_expiry: DateIn | None = Field(None, description="A date; a full timestamp is taken as its day")
    certificate: DiskCertificate | None = Field(None, description="The certificate on disk its vhost names")
    served_certificate: ServedCertificate | None = Field(None, description="The certificate the host serves for it; "
                                                                           "differing from `certificate`: reload due")


class ContainerItem(AgentModel):
    id: Annotated[str, _text(128, min_length=1), Storable]
    name: Name
    image: Annotated[str, _text(512, strip=False), Storable] | None = None
    status: Annotated[str, _text(64, strip=False), Storable] | None = None


class CertificateItem(AgentModel):
    path: Annotated[str, _text(1024, strip=False, min_length=1), Storable]
    subject: LongText | None = None
    issuer: LongText | None = None
    domains: list[Name] = Field(default_factory=list, max_length=500)
    not_after: TimestampIn | None = None
    fingerprint_sha256: Sha256Hex | None = None


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

    summary: dict[str, NonNegativeInt]
    services: KindChanges | None = None
    domains: KindChanges | None = None
    containers: KindChanges | None = None
    certificates: KindChanges | None = None


# Crash reports (POST /api/v1/agent/incidents). What an agent captured at a crash is kept on the incident's
# timeline as it was sent, so it is bounded here: lines, bytes per line, bytes per object, nesting.
CRASH_KEY_MAX = 128
CRASH_LOG_LINES = 1000
CRASH_LOG_LINE_BYTES = 8192
CRASH_OBJECT_BYTES = 65_536
CRASH_OBJECT_DEPTH = 32


def _line_bytes(line: str) -> str:
    if len(line.encode("utf-8")) > CRASH_LOG_LINE_BYTES:
        raise PydanticCustomError("line_too_long", "A log line may hold at most {limit} bytes (UTF-8)",
                                  {"limit": CRASH_LOG_LINE_BYTES})
    return line


def _storable_json(value: Any, depth: int = 0) -> None:
    """Refuse what a JSON column cannot keep or a reader cannot walk: NUL, lone surrogates, deep nesting."""
    if depth > CRASH_OBJECT_DEPTH:
        raise PydanticCustomError("too_deep", "Nested deeper than {limit} levels", {"limit": CRASH_OBJECT_DEPTH})
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise PydanticCustomError("invalid_text", "A string {problem}", {"problem": problem})
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key, depth + 1)
            _storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, depth + 1)


def _bounded_object(value: dict[str, Any]) -> dict[str, Any]:
    _storable_json(value)
    if len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")) > CRASH_OBJECT_BYTES:
        raise PydanticCustomError("too_large", "At most {limit} bytes once serialized as JSON",
                                  {"limit": CRASH_OBJECT_BYTES})
    return value


LogLine = Annotated[str, StringConstraints(max_length=CRASH_LOG_LINE_BYTES), Storable, AfterValidator(_line_bytes)]
CapturedObject = Annotated[dict[str, Any], AfterValidator(_bounded_object)]


class CrashReport(AgentModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "key": "nginx-crash-1711031281", "service": "nginx", "title": "nginx process stopped", "severity": "critical",
        "detected_at": "2026-03-21T14:28:41Z",
        "logs": ["2026/03/21 14:28:40 [emerg] 812#812: bind() to 0.0.0.0:443 failed (98: Address already in use)"],
        "metrics": {"cpu.percent": 12.5, "mem.used_percent": 71.2}, "state": {"unit": "failed", "exit_status": 1},
        "resolved": False,
    }]})

    key: Annotated[str, _text(CRASH_KEY_MAX, min_length=1), Storable] = Field(
        description="Names the problem on this server: the same key again is a follow-up to the same incident")
    service: Annotated[str, _text(SERVICE_MAX, min_length=1), Storable] | None = None
    title: Annotated[str, _text(TITLE_MAX, min_length=1), Storable] | None = Field(
        None, description="The incident's title when this report opens it; `<service> crashed` when left out")
    severity: Severity = Severity.CRITICAL
    detected_at: TimestampIn | None = Field(None, description="When the agent saw it; now when left out")
    logs: list[LogLine] = Field(default_factory=list, max_length=CRASH_LOG_LINES,
                                description=f"At most {CRASH_LOG_LINES} lines of {CRASH_LOG_LINE_BYTES} bytes each")
    metrics: CapturedObject = Field(default_factory=dict, description="A metric snapshot, at most 64 KiB as JSON")
    state: CapturedObject = Field(default_factory=dict, description="System state (units, processes...), at most "
                                                                    "64 KiB as JSON")
    resolved: Flag = Field(False, description="True: the problem is over; resolves the key's open incident")


class CrashReportResult(BaseModel):
    incident_id: Id | None = Field(description="The incident this report went to; null for a resolution of a key "
                                               "with no open incident")
    status: IncidentStatus | None
    opened: bool = Field(description="True when this report opened (or reopened) the incident: answered with 201")
