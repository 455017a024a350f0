from __future__ import annotations

from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from hostatlas.http.types import Id, Int64, NonNegativeInt, Timestamp
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, Service, days_until
from hostatlas.servers.schemas import ServerRef


class InventoryItem(BaseModel):
    id: Id
    server: ServerRef
    first_seen_at: Timestamp
    updated_at: Timestamp


def _item(row: Service | Domain | Container | Certificate, server: ServerRef) -> dict[str, Any]:
    return {"id": row.id, "server": server, "first_seen_at": row.first_seen_at, "updated_at": row.updated_at}


class ServiceOut(InventoryItem):
    name: str
    version: str | None
    status: str | None
    unit: str | None
    pid: NonNegativeInt | None
    ports: list[NonNegativeInt]
    log_paths: list[str]

    @classmethod
    def of(cls, s: Service, server: ServerRef) -> ServiceOut:
        return cls(**_item(s, server), name=s.name, version=s.version, status=s.status, unit=s.unit, pid=s.pid,
                   ports=list(s.ports or []), log_paths=list(s.log_paths or []))


class DiskCertificateOut(BaseModel):
    path: str
    not_after: Timestamp | None
    fingerprint_sha256: str = Field(description="SHA-256 of the certificate (DER), 64 lower-case hex digits")


class ServedCertificateOut(BaseModel):
    not_after: Timestamp | None
    fingerprint_sha256: str = Field(description="SHA-256 of the certificate (DER), 64 lower-case hex digits")
    issuer: str | None
    subject: str | None


M = TypeVar("M", bound=BaseModel)


def _stored_object(model: type[M], value: Any) -> M | None:
    # Only agents that send it have it (older ones: null); the stored object was validated on its way in.
    return model.model_validate({name: value.get(name) for name in model.model_fields}) \
        if isinstance(value, dict) else None


class DomainOut(InventoryItem):
    name: str
    source: str | None
    ssl_expiry: date | None = Field(description="The served certificate's expiry when the agent could connect, "
                                                "else the one on disk")
    days_until_expiry: Int64 | None
    certificate: DiskCertificateOut | None = Field(description="The certificate on disk its web server configuration "
                                                               "names; null when unknown")
    served_certificate: ServedCertificateOut | None = Field(description="What a TLS handshake to the host got; "
                                                                        "null when unknown")
    reload_needed: bool = Field(description="Both are known and differ: renewed on disk, but the web server still "
                                            "serves the old certificate (it needs a reload)")

    @classmethod
    def of(cls, d: Domain, server: ServerRef, today: date) -> DomainOut:
        return cls(**_item(d, server), name=d.name, source=d.source, ssl_expiry=d.ssl_expiry,
                   days_until_expiry=days_until(d.ssl_expiry, today),
                   certificate=_stored_object(DiskCertificateOut, d.certificate),
                   served_certificate=_stored_object(ServedCertificateOut, d.served_certificate),
                   reload_needed=bool(d.reload_needed))


class ContainerOut(InventoryItem):
    container_id: str
    name: str
    image: str | None
    status: str | None

    @classmethod
    def of(cls, c: Container, server: ServerRef) -> ContainerOut:
        return cls(**_item(c, server), container_id=c.container_id, name=c.name, image=c.image, status=c.status)


class CertificateOut(InventoryItem):
    path: str
    subject: str | None
    issuer: str | None
    domains: list[str]
    not_after: Timestamp | None
    days_until_expiry: Int64 | None
    fingerprint_sha256: str | None = Field(description="SHA-256 of the certificate (DER); null from older agents")

    @classmethod
    def of(cls, c: Certificate, server: ServerRef, today: date) -> CertificateOut:
        return cls(**_item(c, server), path=c.path, subject=c.subject, issuer=c.issuer, domains=list(c.domains or []),
                   not_after=c.not_after, days_until_expiry=days_until(c.not_after, today),
                   fingerprint_sha256=c.fingerprint_sha256)


class ChangeOut(BaseModel):
    id: Id
    kind: str
    action: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    created_at: Timestamp

    @classmethod
    def of(cls, c: InventoryChange) -> ChangeOut:
        return cls(id=c.id, kind=c.kind, action=c.action, key=c.key, before=c.before, after=c.after,
                   created_at=c.created_at)
