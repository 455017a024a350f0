"""Webhooks, their deliveries (one per event and webhook), and every attempt at a delivery."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostatlas.clock import utcnow
from hostatlas.db.base import Base, UTCDateTime
from hostatlas.secretbox import Sealed


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Webhook(Base):
    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_team", "team_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    # None: every event, including types added later.
    events: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Events from this moment on are delivered: set at creation and at every re-enabling.
    enabled_since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Why the platform disabled it by itself (the endpoint answered 410 Gone), if it did.
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # The signing secret must be readable to sign with: stored sealed with the platform key (secretbox),
    # read back in clear. It is never logged or returned after creation and rotation.
    # Deferred: loaded (and opened) only when signing or rotating, not with every listed webhook.
    secret: Mapped[str] = mapped_column(Sealed(255), deferred=True)
    previous_secret: Mapped[str | None] = mapped_column(Sealed(255), deferred=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
        # The dispatcher's claim: each webhook's due pending deliveries, oldest first.
        Index("ix_webhook_deliveries_webhook_due", "webhook_id", "status", "next_attempt_at"),
        # Delivery-log retention: finished deliveries, oldest first.
        Index("ix_webhook_deliveries_completed", "completed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # del_<24 hex>: the body's delivery_id and the id the API shows.
    delivery_id: Mapped[str] = mapped_column(String(32), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int | None]  # None for webhook.test
    event: Mapped[str] = mapped_column(String(64))
    # The exact bytes sent on every attempt, so that retries and the log show the same body.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A worker owns a claimed delivery until the lease expires; then another may take it (at least once).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    redelivery_of: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    request_headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)  # an excerpt, capped
    # None on a 2xx; else what went wrong: http_status, timeout, connection_refused, tls, dns,
    # blocked_address, response_too_large, connection_error.
    error: Mapped[str | None] = mapped_column(String(32))
    error_detail: Mapped[str | None] = mapped_column(String(500))
