from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel

from hostatlas.http.types import Id, Int64, NonNegativeInt, Timestamp
from hostatlas.servers.schemas import ServerRef


class InventoryItem(BaseModel):
    id: Id
    server: ServerRef
    first_seen_at: Timestamp
    updated_at: Timestamp


class ServiceOut(InventoryItem):
    name: str
    version: str | None
    status: str | None
    unit: str | None
    pid: NonNegativeInt | None
    ports: list[NonNegativeInt]
    log_paths: list[str]


class DomainOut(InventoryItem):
    name: str
    source: str | None
    ssl_expiry: date | None
    days_until_expiry: Int64 | None


class ContainerOut(InventoryItem):
    container_id: str
    name: str
    image: str | None
    status: str | None


class CertificateOut(InventoryItem):
    path: str
    subject: str | None
    issuer: str | None
    domains: list[str]
    not_after: Timestamp | None
    days_until_expiry: Int64 | None


class ChangeOut(BaseModel):
    id: Id
    kind: str
    action: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: Timestamp
