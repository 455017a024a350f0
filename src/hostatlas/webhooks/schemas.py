from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from hostatlas.errors import InvalidInput
from hostatlas.http.types import Flag, Id, Int64, NonNegativeInt, Storable, Timestamp
from hostatlas.webhooks import service
from hostatlas.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

Url = Annotated[str, StringConstraints(max_length=2048), Storable]
EventName = Annotated[str, StringConstraints(max_length=64), Storable]
Description = Annotated[str, StringConstraints(max_length=500), Storable]


def _subscription(names: list[str]) -> list[str]:
    # The service's rule, applied here as well so that its problem is listed with every other field's.
    try:
        service.check_events(names)
    except InvalidInput as exc:
        problem = exc.fields[0]
        raise PydanticCustomError(problem.code, "{message}", {"message": problem.message}) from None
    return names


Subscription = Annotated[list[EventName], Field(max_length=64), AfterValidator(_subscription)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "url": "https://hooks.example.com/hostatlas", "events": ["server.offline", "server.online"],
        "description": "On-call pager"}]})

    url: Url
    events: Subscription | None = Field(None, description="Event types; leave out for every event")
    description: Description = ""


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"enabled": False}]})

    url: Url | None = None
    events: Subscription | None = Field(None, description="null subscribes to every event")
    description: Description | None = None
    enabled: Flag | None = Field(None, description="false: receive nothing new; true: events from now on")

    @field_validator(*service.NOT_NULLABLE)
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        # The service's rule, applied here as well so that its problem is listed with every other field's.
        problem = service.null_problem(info.field_name or "", value)
        if problem:
            raise PydanticCustomError(problem.code, "{message}", {"message": problem.message})
        return value


class WebhookRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The bound goes inside the Annotated: a Field(le=...) beside it would lose to NonNegativeInt's own.
    grace_seconds: Annotated[NonNegativeInt, Field(le=int(service.MAX_GRACE.total_seconds()))] = Field(
        86_400, description="How long the previous secret keeps signing too (default 24 h)")


class WebhookOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 3, "url": "https://hooks.example.com/hostatlas", "description": "On-call pager",
        "events": ["server.offline", "server.online"], "enabled": True, "disabled_reason": None,
        "previous_secret_expires_at": None, "created_at": "2026-03-21T14:00:00Z",
        "updated_at": "2026-03-21T14:00:00Z"}]})

    id: Id
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

    @classmethod
    def with_secret(cls, webhook: Webhook, now: datetime) -> WebhookWithSecret:
        """The answer to a creation or a rotation: the one time the secret is shown."""
        return cls(**WebhookOut.of(webhook, now).model_dump(), secret=webhook.secret)


class DeliveryOut(BaseModel):
    id: str = Field(description="The delivery_id of the body and the X-HostAtlas-Delivery header")
    webhook_id: Id
    event: str
    status: str = Field(description="pending, succeeded or failed")
    attempt_count: NonNegativeInt
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
    number: NonNegativeInt
    started_at: Timestamp
    duration_ms: Int64
    url: str
    request_headers: dict[str, Any]
    response_status: Int64 | None
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
