"""The published webhook contract: every event the platform emits, the model of its ``data``, and the body and
headers a receiver gets, all in the OpenAPI document's top-level ``webhooks`` section (``document``).

``data`` carries resources in the same shapes as the GET endpoints (a server as ``GET /api/v1/servers`` lists
it, ``ServerSummary``), on purpose: a receiver reads a server the way an API client does. So a change to those
REST schemas changes what receivers get; referencing the very models here makes that change show in the
document too, and tests/test_webhooks_contract.py makes the platform emit every event and checks each body
against the served document. An event added to ``events.WEBHOOK_EVENTS`` needs its entry in ``CATALOGUE``
(or stays in ``events.PLANNED_EVENTS`` until something emits it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import Schema
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from hostatlas.alerts.schemas import AlertEventData
from hostatlas.certwatch.schemas import SslExpiringData
from hostatlas.events import service as events
from hostatlas.heartbeats.machine import Cause
from hostatlas.heartbeats.schemas import HeartbeatDetail
from hostatlas.http.types import Id, Timestamp
from hostatlas.incidents.schemas import IncidentOut
from hostatlas.servers.schemas import ServerRef, ServerSummary
from hostatlas.webhooks.service import TEST_EVENT


class ServerData(BaseModel):
    """``server.registered`` and ``server.deleted``: the server (as it was, when deleted)."""

    server: ServerSummary


class ServerOfflineData(BaseModel):
    server: ServerSummary
    previous_status: Literal["online"]
    offline_since: Timestamp


class ServerOnlineData(BaseModel):
    server: ServerSummary
    previous_status: Literal["offline"]
    offline_since: Timestamp | None = Field(description="When it went offline, if known")


class InventoryKindChanges(BaseModel):
    """The keys (service and domain names, container ids, certificate paths) of one kind's items."""

    added: list[str]
    changed: list[str]
    removed: list[str]


# The discovery snapshot's kinds (inventory.discovery.KINDS); only the kinds that changed are present.
InventoryKind = Literal["services", "domains", "containers", "certificates"]


class InventoryChangedData(BaseModel):
    server: ServerRef
    changes: dict[InventoryKind, InventoryKindChanges]


class HeartbeatEventData(HeartbeatDetail):
    """``heartbeat.missed`` and ``heartbeat.recovered``: the heartbeat as ``GET /api/v1/heartbeats/{id}`` shows
    it (its fields at the top level of ``data``), plus why it changed."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 12, "name": "nightly-backup", "slug": "nightly-backup",
        "ping_url": "https://api.hostatlas.app/heartbeat/abc123def456", "interval": 86400, "grace": 3600,
        "schedule": None, "timezone": "UTC", "status": "down", "tags": ["backup"], "server_id": 47,
        "last_ping_at": "2026-03-21T02:00:41Z", "next_due_at": "2026-03-22T02:00:41Z", "last_duration_s": 38.2,
        "min_runtime": None, "max_runtime": 3600, "manual_resume": False, "created_at": "2026-03-01T14:35:00Z",
        "runs": {"count": 30, "p50_s": 37.9, "p95_s": 44.0}, "too_often_recent": 0, "cause": "missed",
    }]})

    cause: str = Field(description="Why the status changed: " + ", ".join(f"`{cause.value}`" for cause in Cause)
                       + " (`exit_status:<n>` for a failing exit status)")


class WebhookRef(BaseModel):
    id: Id
    url: str
    description: str


class WebhookTestData(BaseModel):
    webhook: WebhookRef
    message: str


@dataclass(frozen=True)
class Published:
    data: type[BaseModel]
    summary: str  # when it is sent
    sent_to: str = "every enabled webhook of the team subscribed to it (or to every event)"


CATALOGUE: dict[str, Published] = {
    events.SERVER_REGISTERED: Published(ServerData, "An agent registered a new server"),
    events.SERVER_OFFLINE: Published(ServerOfflineData, "A server stopped checking in (HOSTATLAS_OFFLINE_AFTER)"),
    events.SERVER_ONLINE: Published(ServerOnlineData, "An offline server checked in again"),
    events.SERVER_DELETED: Published(ServerData, "A server was deleted"),
    events.INVENTORY_CHANGED: Published(InventoryChangedData, "A discovery snapshot added, changed or removed "
                                                              "services, domains, containers or certificates"),
    events.HEARTBEAT_MISSED: Published(HeartbeatEventData, "A heartbeat went down: its ping is overdue past its "
                                                           "grace, a run timed out, failed or ran too short or too "
                                                           "long (once per outage)"),
    events.HEARTBEAT_RECOVERED: Published(HeartbeatEventData, "A heartbeat that was down received a successful ping"),
    # Incidents: data is the incident as GET /api/v1/incidents lists it (no timeline). One attached to a server's
    # outage is announced when the outage ends, if it is still unresolved then (docs/incidents.md).
    events.INCIDENT_CREATED: Published(IncidentOut, "An incident was opened: by hand, or automatically (a server "
                                                    "went offline, an alert fired, a heartbeat went down, a "
                                                    "certificate is expiring, an agent reported a crash)"),
    events.INCIDENT_ACKNOWLEDGED: Published(IncidentOut, "An incident was acknowledged (once)"),
    events.INCIDENT_RESOLVED: Published(IncidentOut, "An incident was resolved: by hand, or by its problem's "
                                                     "recovery"),
    events.INCIDENT_REOPENED: Published(IncidentOut, "A resolved incident was reopened: by hand, or because its "
                                                     "problem came back within 30 minutes"),
    events.ALERT_TRIGGERED: Published(AlertEventData, "An alert rule started firing for a server (and label set): "
                                                      "its condition held for its `for_s` (none while the server is "
                                                      "offline: attached to the server's incident instead)"),
    events.ALERT_RESOLVED: Published(AlertEventData, "A firing alert resolved: its value went back past the "
                                                     "recovery threshold, no data under the `ok` policy, or the "
                                                     "rule was disabled, deleted or narrowed"),
    events.SSL_EXPIRING: Published(SslExpiringData, "A certificate (or a domain's SSL) came within 30, 14, 7 or 1 "
                                                    "days of expiry: once per threshold and certificate, again "
                                                    "after a renewal (docs/certificates.md)"),
    TEST_EVENT: Published(WebhookTestData, "A test delivery, on request (POST /api/v1/webhooks/{id}/test)",
                          sent_to="the webhook tested, enabled or not, whatever it subscribes to"),
}


def envelope(event: str) -> type[BaseModel]:
    """The body of a delivery of ``event``, as ``webhooks.service.payload`` writes it."""
    name = "".join(part.title() for part in event.split(".")) + "Delivery"
    return create_model(
        name,
        event=(str, Field(description="The event type, also in X-HostAtlas-Event", json_schema_extra={"const": event})),
        delivery_id=(str, Field(description="del_...: the same on every attempt of this delivery (dedupe on it); "
                                            "also in X-HostAtlas-Delivery and webhook-id")),
        timestamp=(Timestamp, Field(description="When the event happened")),
        data=(CATALOGUE[event].data, ...),
    )


# Every attempt's headers (webhooks.signing.signature_headers, and the dispatcher's User-Agent); the body is
# application/json. Name, description, schema.
HEADERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("X-HostAtlas-Signature", '"sha256=" + hex HMAC-SHA256 of the raw body keyed with the secret (UTF-8); during a '
                              'rotation\'s grace two values, "sha256=<new>, sha256=<old>"', {"type": "string"}),
    ("X-HostAtlas-Delivery", "The body's delivery_id", {"type": "string"}),
    ("X-HostAtlas-Event", "The body's event", {"type": "string"}),
    ("webhook-id", "Standard Webhooks: the delivery_id", {"type": "string"}),
    ("webhook-timestamp", "Standard Webhooks: unix seconds of this attempt", {"type": "string", "pattern": "^[0-9]+$"}),
    ("webhook-signature", 'Standard Webhooks: "v1," + base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}" '
                          "keyed with the base64-decoded secret after whsec_; space-separated, two during a rotation's "
                          "grace", {"type": "string"}),
    ("User-Agent", "HostAtlas-Webhooks/<version>", {"type": "string"}),
)

RESPONSES: dict[str, dict[str, str]] = {
    "2XX": {"description": "Received: the delivery succeeded"},
    "410": {"description": "Gone: the delivery fails at once and the webhook is disabled"},
    "429": {"description": "Retried after Retry-After (seconds or an HTTP date) if given, else on the schedule"},
    "503": {"description": "Retried after Retry-After (seconds or an HTTP date) if given, else on the schedule"},
    "default": {"description": "Anything else, a redirect, or no answer within the timeouts: retried on "
                               "HOSTATLAS_WEBHOOK_RETRY_SCHEDULE, then failed"},
}

REF = "#/components/schemas/{model}"


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Publish every catalogued event in the OpenAPI document's ``webhooks`` section.

    Bodies are documented as the platform writes them (pydantic's serialization mode), so that a server in
    ``data`` is the very ``ServerSummary`` component the GET endpoints answer with.
    """
    envelopes = {event: envelope(event) for event in CATALOGUE}
    _, found = models_json_schema([(model, "serialization") for model in envelopes.values()], ref_template=REF)
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, raw in found.get("$defs", {}).items():
        # As FastAPI writes every schema of the document (its bounds as floats, say), so that the two compare.
        schema = jsonable_encoder(Schema.model_validate(raw), by_alias=True, exclude_none=True)
        if schemas.setdefault(name, schema) != schema:
            # Two different models by one name: the document would show one for both. Rename one.
            raise RuntimeError(f"webhook payload schema {name!r} differs from the API's schema of that name")
    openapi["components"]["schemas"] = dict(sorted(schemas.items()))
    openapi["webhooks"] = {event: {"post": _operation(event, model.__name__)} for event, model in envelopes.items()}
    return openapi


def _operation(event: str, model: str) -> dict[str, Any]:
    return {
        "tags": ["Webhooks"], "summary": CATALOGUE[event].summary, "operationId": f"webhook_{event.replace('.', '_')}",
        "description": f"HostAtlas POSTs this to {CATALOGUE[event].sent_to}, signed, and retries it until a 2xx "
                       "(docs/webhooks.md). Verify a signature before trusting the body.",
        "parameters": [{"name": name, "in": "header", "required": True, "description": description, "schema": schema}
                       for name, description, schema in HEADERS],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}},
        "responses": RESPONSES,
    }
