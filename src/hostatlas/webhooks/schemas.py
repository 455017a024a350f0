from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from hostatlas.http.types import Timestamp
from hostatlas.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from hostatlas.webhooks.service import MAX_GRACE


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://hooks.example.com/hostatlas", "events": ["server.offline", "server.online"],
        "description": "On-call pager"}]})

    url: str = Field(max_length=2048)
    events: list[str] | None = Field(None, max_length=64, description="Event types; leave out for every event")
    description: str = Field("", max_length=500)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    url: str | None = Field(None, max_length=2048)
    events: list[str] | None = Field(None, max_length=64, description="null subscribes to every event")
    description: str | None = Field(None, max_length=500)
    enabled: bool | None = Field(None, description="false: receive nothing new; true: events from now on")


class WebhookRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(86_400, ge=0, le=int(MAX_GRACE.total_seconds()),
                               description="How long the previous secret keeps signing too (default 24 h)")


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 3, "url": "https://hooks.example.com/hostatlas", "description": "On-call pager",
        "events": ["server.offline", "server.online"], "enabled": True, "disabled_reason": None,
        "previous_secret_expires_at": None, "created_at": "2026-03-21T14:00:00Z",
        "updated_at": "2026-03-21T14:00:00Z"}]})

    id: int
    url: str
    description: str
    events: list[str] | None = Field(description="null: every event")
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: Timestamp | None = Field(description="While set, the previous secret signs too")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, webhook: Webhook, now: datetime) -> WebhookOut:
        expires = webhook.previous_secret_expires_at
        return cls(id=webhook.id, url=webhook.url, description=webhook.description, events=webhook.events,
                   enabled=webhook.enabled, disabled_reason=webhook.disabled_reason,
                   previous_secret_expires_at=expires if expires and expires > now else None,
                   created_at=webhook.created_at, updated_at=webhook.updated_at)


class WebhookWithSecret(WebhookOut):
    secret: str = Field(description="Shown only now: store it to verify signatures")


class DeliveryOut(BaseModel):
    id: str = Field(description="The delivery_id of the body and the X-HostAtlas-Delivery header")
    webhook_id: int
    event: str
    status: str = Field(description="pending, succeeded or failed")
    attempt_count: int
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    completed_at: Timestamp | None
    redelivery_of: str | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(id=delivery.delivery_id, webhook_id=delivery.webhook_id, event=delivery.event,
                   status=delivery.status, attempt_count=delivery.attempts, next_attempt_at=delivery.next_attempt_at,
                   created_at=delivery.created_at, completed_at=delivery.completed_at,
                   redelivery_of=delivery.redelivery_of)


class AttemptOut(BaseModel):
    number: int
    started_at: Timestamp
    duration_ms: int
    url: str
    request_headers: dict[str, Any]
    response_status: int | None
    response_body: str | None = Field(description="The first 2,048 characters")
    error: str | None = Field(description="null on a 2xx; http_status, timeout, connection_refused, tls, dns, "
                                          "blocked_address or connection_error")
    error_detail: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> AttemptOut:
        return cls(number=attempt.number, started_at=attempt.started_at, duration_ms=attempt.duration_ms,
                   url=attempt.url, request_headers=attempt.request_headers,
                   response_status=attempt.response_status, response_body=attempt.response_body,
                   error=attempt.error, error_detail=attempt.error_detail)


class DeliveryDetail(DeliveryOut):
    request_body: dict[str, Any] = Field(description="The body sent on every attempt")
    attempts: list[AttemptOut] = Field(description="Every attempt, first to last")

    @classmethod
    def with_attempts(cls, delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryDetail:
        return cls(**DeliveryOut.of(delivery).model_dump(), request_body=orjson.loads(delivery.body),
                   attempts=[AttemptOut.of(attempt) for attempt in attempts])
