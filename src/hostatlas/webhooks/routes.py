"""``/api/v1/webhooks``: thin handlers over ``webhooks.service``; the dispatcher does the sending."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.types import Flag, IdPath, Storable
from hostatlas.webhooks import service
from hostatlas.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from hostatlas.webhooks.schemas import (
    DeliveryDetail,
    DeliveryOut,
    WebhookCreate,
    WebhookOut,
    WebhookRotate,
    WebhookUpdate,
    WebhookWithSecret,
)

router = APIRouter(prefix="/api/v1/webhooks", tags=["Webhooks"])

Reader = Annotated[Principal, Security(authenticated, scopes=["webhooks:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["webhooks:write"])]
DeliveryId = Annotated[str, StringConstraints(max_length=32), Storable, Path(description="del_...")]


def _destinations(request: Request) -> service.Destinations:
    return runtime.current(request).part(service.Destinations)


@router.get("", response_model=Page[WebhookOut], responses=errors(422), summary="List webhooks")
def list_webhooks(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                  enabled: Flag | None = Query(None)) -> Page[WebhookOut]:
    page = paginate(session, service.listing(principal.team_id, enabled=enabled), id_column=Webhook.id,
                    params=params, default_sort="-id",
                    sortable={"created_at": Webhook.created_at})
    now = utcnow()
    return page_of(page, lambda webhook: WebhookOut.of(webhook, now))


@router.post("", status_code=201, response_model=WebhookWithSecret, responses=errors(400, 413, 415, 422),
             summary="Create a webhook",
             description="The secret (`whsec_...`) is shown only in this answer. URLs that resolve to loopback, "
                         "private, link-local or other internal addresses are refused (field error on `url`) "
                         "unless HOSTATLAS_WEBHOOK_ALLOW_PRIVATE=true.")
def create_webhook(body: WebhookCreate, principal: Writer, session: DbSession, request: Request) -> WebhookWithSecret:
    now = utcnow()
    webhook = service.create_webhook(session, team_id=principal.team_id, url=body.url, events_=body.events,
                                     description=body.description, now=now, destinations=_destinations(request))
    return WebhookWithSecret.with_secret(webhook, now)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=errors(404, 422), summary="Get a webhook")
def get_webhook(webhook_id: IdPath, principal: Reader, session: DbSession) -> WebhookOut:
    return WebhookOut.of(service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id), utcnow())


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=errors(400, 404, 415, 422),
              summary="Update, disable or re-enable a webhook",
              description="`{\"enabled\": false}` stops new deliveries without deleting anything and parks "
                          "pending ones (`next_attempt_at: null`); re-enabled, the parked ones are due again and "
                          "the webhook receives events from then on.")
def update_webhook(webhook_id: IdPath, body: WebhookUpdate, principal: Writer, session: DbSession,
                   request: Request) -> WebhookOut:
    webhook = service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id)
    changes = body.model_dump(exclude_unset=True)
    now = utcnow()
    return WebhookOut.of(service.update_webhook(session, webhook, changes, now, _destinations(request)), now)


@router.delete("/{webhook_id}", status_code=204, responses=errors(404, 422), summary="Delete a webhook",
               description="Its deliveries and their log go with it.")
def delete_webhook(webhook_id: IdPath, principal: Writer, session: DbSession) -> None:
    service.delete_webhook(session, service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id))


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret, responses=errors(400, 404, 415, 422),
             summary="Rotate the signing secret",
             description="Returns the new secret. The previous one keeps signing too (both signatures are sent) "
                         "for grace_seconds, so receivers can switch without missing a delivery.")
def rotate_secret(webhook_id: IdPath, principal: Writer, session: DbSession,
                  body: WebhookRotate | None = None) -> WebhookWithSecret:
    webhook = service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id)
    now = utcnow()
    service.rotate_secret(webhook, grace=timedelta(seconds=(body or WebhookRotate()).grace_seconds), now=now)
    return WebhookWithSecret.with_secret(webhook, now)


@router.post("/{webhook_id}/test", status_code=202, response_model=DeliveryOut, responses=errors(404, 422),
             summary="Send a test delivery",
             description="Queues a `webhook.test` delivery (even to a disabled webhook), signed, retried and "
                         "logged like any other; follow it at .../deliveries/{id}.")
def send_test(webhook_id: IdPath, principal: Writer, session: DbSession) -> DeliveryOut:
    webhook = service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id)
    return DeliveryOut.of(service.send_test(session, webhook, utcnow()))


@router.get("/{webhook_id}/deliveries", response_model=Page[DeliveryOut], responses=errors(404, 422),
            summary="List a webhook's deliveries", description="Newest first.")
def list_deliveries(webhook_id: IdPath, principal: Reader, session: DbSession,
                    params: ListParams = Depends(list_params), status: DeliveryStatus | None = Query(None),
                    event: Annotated[str, StringConstraints(max_length=64), Storable] | None = Query(None),
                    ) -> Page[DeliveryOut]:
    stmt = service.delivery_listing(session, team_id=principal.team_id, webhook_id=webhook_id, status=status,
                                    event=event)
    page = paginate(session, stmt, id_column=WebhookDelivery.id, params=params, default_sort="-id",
                    sortable={"created_at": WebhookDelivery.created_at})
    return page_of(page, DeliveryOut.of)


@router.get("/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryDetail,
            responses=errors(404, 422), summary="A delivery with every attempt",
            description="Each attempt: request headers, response status, the first 2,048 characters of the "
                        "response body, duration, and what went wrong (timeout, refused, TLS, ...).")
def get_delivery(webhook_id: IdPath, delivery_id: DeliveryId, principal: Reader,
                 session: DbSession) -> DeliveryDetail:
    delivery = service.get_delivery(session, team_id=principal.team_id, webhook_id=webhook_id,
                                    delivery_id=delivery_id)
    return DeliveryDetail.with_attempts(delivery, service.attempts_of(session, delivery))


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryOut,
             responses=errors(404, 422), summary="Send a delivery again",
             description="The same event and data as a new delivery, with a new delivery_id (so receivers that "
                         "dedupe do not skip it) and `redelivery_of` pointing at the original.")
def redeliver(webhook_id: IdPath, delivery_id: DeliveryId, principal: Writer, session: DbSession) -> DeliveryOut:
    webhook = service.get_webhook(session, team_id=principal.team_id, webhook_id=webhook_id)
    delivery = service.get_delivery(session, team_id=principal.team_id, webhook_id=webhook_id,
                                    delivery_id=delivery_id)
    return DeliveryOut.of(service.redeliver(session, webhook, delivery, utcnow()))
