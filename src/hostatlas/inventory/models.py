from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime


def days_until(moment: date | datetime | None, today: date) -> int | None:
    """Whole days from ``today`` to an expiry (negative once past); None when there is no expiry."""
    if moment is None:
        return None
    return ((moment.date() if isinstance(moment, datetime) else moment) - today).days


class InventoryRow:
    """Columns every discovered item has: its server, team and when it was first and last changed."""

    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Service(InventoryRow, Base):
    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("server_id", "name", name="uq_services_server_name"),
                      Index("ix_services_team_name", "team_id", "name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(32))
    unit: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    ports: Mapped[list[int]] = mapped_column(JSON, default=list)
    log_paths: Mapped[list[str]] = mapped_column(JSON, default=list)


class Domain(InventoryRow, Base):
    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("server_id", "name", name="uq_domains_server_name"),
                      Index("ix_domains_team_expiry", "team_id", "ssl_expiry"),
                      Index("ix_domains_team_reload_needed", "team_id", "reload_needed"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(255))
    ssl_expiry: Mapped[date | None] = mapped_column(Date)
    # {"path", "not_after", "fingerprint_sha256"}: the certificate on disk the vhost names (JSON-ready values).
    certificate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # {"not_after", "fingerprint_sha256", "issuer", "subject"}: what a TLS handshake to the host got.
    served_certificate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # inventory.reload.reload_needed of the two above, set whenever they are stored.
    reload_needed: Mapped[bool] = mapped_column(Boolean, default=False)


class Container(InventoryRow, Base):
    __tablename__ = "containers"
    __table_args__ = (UniqueConstraint("server_id", "container_id", name="uq_containers_server_container"),
                      Index("ix_containers_team_name", "team_id", "name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    container_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    image: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str | None] = mapped_column(String(64))


class Certificate(InventoryRow, Base):
    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("server_id", "path", name="uq_certificates_server_path"),
                      Index("ix_certificates_team_not_after", "team_id", "not_after"))

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str | None] = mapped_column(String(1024))
    issuer: Mapped[str | None] = mapped_column(String(1024))
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fingerprint_sha256: Mapped[str | None] = mapped_column(String(64))


class InventoryChange(Base):
    """One added, changed or removed item of one discovery snapshot: the server's change history."""

    __tablename__ = "inventory_changes"
    __table_args__ = (Index("ix_inventory_changes_server", "server_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # service, domain, container, certificate
    action: Mapped[str] = mapped_column(String(16))  # added, changed, removed
    key: Mapped[str] = mapped_column(String(1024))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
