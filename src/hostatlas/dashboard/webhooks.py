"""``/webhooks``: the team's endpoints, their settings and secrets, and every delivery with every attempt.

The same calls as the REST API (``webhooks/routes.py``): ``service.listing`` and ``delivery_listing`` paged with
``list_params``; the forms go through ``WebhookCreate`` / ``WebhookUpdate`` / ``WebhookRotate`` then the service
(with the install's ``Destinations``, so the SSRF rule is the API's); "Send test" is ``service.send_test``,
"Redeliver" ``service.redeliver``. A secret is shown once, in the answer to the creation or rotation that made it,
as the API shows it. ``/webhooks/{id}/deliveries/live`` refreshes the deliveries while the page is open, so a
test's attempt appears without a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import field_errors, query_with, render, validated
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader, writer
from hostatlas.errors import InvalidInput
from hostatlas.events.service import WEBHOOK_EVENTS
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, list_params, paginate
from hostatlas.http.types import Flag, IdPath, Storable
from hostatlas.webhooks import service
from hostatlas.webhooks.models import DeliveryStatus, Webhook, WebhookDelivery
from hostatlas.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    WebhookCreate,
    WebhookOut,
    WebhookRotate,
    WebhookUpdate,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

DeliveryId = Annotated[str, StringConstraints(max_length=32), Storable, Path()]
EventQuery = Annotated[str, StringConstraints(max_length=64), Storable]
EVENTS = sorted({*WEBHOOK_EVENTS, service.TEST_EVENT})
GRACES = ((0, "at once"), (3600, "in 1 hour"), (86_400, "in 24 hours"), (7 * 86_400, "in 7 days"))



def _destinations(request: Request) -> service.Destinations:
    return runtime.current(request).part(service.Destinations)


async def _form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The form's single fields (each cut at 4 KiB) and its checked events."""
    form = await request.form()
    fields = {key: value[:4096] for key, value in form.items() if isinstance(value, str)}
    events = [value[:64] for value in form.getlist("events") if isinstance(value, str)][:100]
    return fields, events


def _body(fields: Mapping[str, str], events: list[str]) -> dict[str, Any]:
    """The create/edit form as the API's body: ``events`` null (every event) unless "chosen events" is picked."""
    return {"url": fields.get("url", "").strip(), "description": fields.get("description", "").strip(),
            "events": events if fields.get("scope") == "chosen" else None}


def _link(request: Request, base: str, **changes: Any) -> str:
    return base + query_with(request, **changes).removeprefix(request.url.path)


def _list_context(request: Request, session: Session, viewer: Viewer, params: ListParams,
                  enabled: bool | None) -> dict[str, Any]:
    page = paginate(session, service.listing(viewer.team_id, enabled=enabled), id_column=Webhook.id, params=params,
                    default_sort="-id", sortable={"created_at": Webhook.created_at})
    now = utcnow()
    latest = service.latest_deliveries(session, team_id=viewer.team_id, webhook_ids=[row.id for row in page.rows])
    return {"webhooks": [WebhookOut.of(row, now) for row in page.rows], "page": page,
            "latest": {webhook_id: DeliveryOut.of(delivery) for webhook_id, delivery in latest.items()},
            "enabled": "" if enabled is None else str(enabled).lower(), "events": WEBHOOK_EVENTS,
            "link": lambda **changes: _link(request, "/webhooks", **changes)}


@router.get("/webhooks")
def webhooks(request: Request, session: DbSession, viewer: Viewer = Depends(reader("webhooks:read")),
             params: ListParams = Depends(list_params), enabled: Flag | None = Query(None)) -> Response:
    context = _list_context(request, session, viewer, params, enabled)
    return render(request, "webhooks/list.html", {**context, "form": {"scope": "all"}, "chosen": [], "errors": {}})


@router.post("/webhooks")
async def create(request: Request, session: DbSession, viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    fields, events = await _form(request)
    now = utcnow()
    try:
        body = validated(WebhookCreate, _body(fields, events))
        webhook = service.create_webhook(session, team_id=viewer.team_id, url=body.url, events_=body.events,
                                         description=body.description, now=now, destinations=_destinations(request))
    except InvalidInput as exc:
        context = _list_context(request, session, viewer, list_params(25, None, None), None)
        return render(request, "webhooks/list.html", {**context, "form": fields, "chosen": events,
                                                      "errors": field_errors(exc)}, status=422)
    # The one time the secret is shown, as the API's answer to the creation shows it.
    return _detail_page(request, session, viewer, webhook, list_params(25, None, None), None, None,
                        secret=webhook.secret, notice="created", status_code=201)


def _deliveries(request: Request, session: Session, viewer: Viewer, webhook_id: int, params: ListParams,
                status: DeliveryStatus | None, event: str | None) -> dict[str, Any]:
    stmt = service.delivery_listing(session, team_id=viewer.team_id, webhook_id=webhook_id, status=status,
                                    event=event)
    page = paginate(session, stmt, id_column=WebhookDelivery.id, params=params, default_sort="-id",
                    sortable={"created_at": WebhookDelivery.created_at})
    attempts = service.attempts_by_delivery(session, page.rows)
    return {"deliveries": [(DeliveryOut.of(row), [AttemptOut.of(a) for a in attempts[row.id]]) for row in page.rows],
            "page": page, "status": status.value if status else "", "event": event or "",
            "statuses": [value.value for value in DeliveryStatus], "event_names": EVENTS, "webhook_id": webhook_id,
            "link": lambda **changes: _link(request, f"/webhooks/{webhook_id}", **changes)}


def _detail_page(request: Request, session: Session, viewer: Viewer, webhook: Webhook, params: ListParams,
                 status: DeliveryStatus | None, event: str | None, *, secret: str | None = None,
                 notice: str | None = None, form: Mapping[str, str] | None = None, chosen: list[str] | None = None,
                 errors: Mapping[str, str] | None = None, status_code: int = 200) -> Response:
    out = WebhookOut.of(webhook, utcnow())
    context = _deliveries(request, session, viewer, webhook.id, params, status, event)
    values = form if form is not None else {"url": out.url, "description": out.description,
                                            "scope": "all" if out.events is None else "chosen"}
    return render(request, "webhooks/detail.html", {
        **context, "webhook": out, "secret": secret, "notice": notice or request.query_params.get("done"),
        "form": values, "chosen": chosen if chosen is not None else (out.events or []), "errors": errors or {},
        "events": WEBHOOK_EVENTS, "graces": GRACES}, status=status_code)


@router.get("/webhooks/{webhook_id}")
def detail(request: Request, webhook_id: IdPath, session: DbSession, viewer: Viewer = Depends(reader("webhooks:read")),
           params: ListParams = Depends(list_params), status: DeliveryStatus | None = Query(None),
           event: EventQuery | None = Query(None)) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    return _detail_page(request, session, viewer, webhook, params, status, event)


@router.get("/webhooks/{webhook_id}/deliveries/live")
def deliveries_live(request: Request, webhook_id: IdPath, session: DbSession,
                    viewer: Viewer = Depends(reader("webhooks:read")), params: ListParams = Depends(list_params),
                    status: DeliveryStatus | None = Query(None), event: EventQuery | None = Query(None)) -> Response:
    context = _deliveries(request, session, viewer, webhook_id, params, status, event)
    return render(request, "webhooks/_deliveries.html", context)


@router.post("/webhooks/{webhook_id}")
async def update(request: Request, webhook_id: IdPath, session: DbSession,
                 viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    fields, events = await _form(request)
    try:
        body = validated(WebhookUpdate, _body(fields, events))
        service.update_webhook(session, webhook, body.model_dump(exclude_unset=True), utcnow(),
                               _destinations(request))
    except InvalidInput as exc:
        return _detail_page(request, session, viewer, webhook, list_params(25, None, None), None, None,
                            form=fields, chosen=events, errors=field_errors(exc), status_code=422)
    return RedirectResponse(f"/webhooks/{webhook_id}?done=saved", status_code=303)


@router.post("/webhooks/{webhook_id}/enabled")
async def set_enabled(request: Request, webhook_id: IdPath, session: DbSession,
                      viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    fields, _ = await _form(request)
    flag = fields.get("enabled", "")
    body = validated(WebhookUpdate, {"enabled": {"true": True, "false": False}.get(flag, flag)})
    service.update_webhook(session, webhook, body.model_dump(exclude_unset=True), utcnow(), _destinations(request))
    return RedirectResponse(f"/webhooks/{webhook_id}?done={'enabled' if body.enabled else 'disabled'}",
                            status_code=303)


@router.post("/webhooks/{webhook_id}/test")
def send_test(webhook_id: IdPath, session: DbSession, viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    service.send_test(session, webhook, utcnow())
    return RedirectResponse(f"/webhooks/{webhook_id}?done=test#deliveries", status_code=303)


@router.post("/webhooks/{webhook_id}/rotate-secret")
async def rotate_secret(request: Request, webhook_id: IdPath, session: DbSession,
                        viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    fields, _ = await _form(request)
    grace = fields.get("grace_seconds", "86400")
    body = validated(WebhookRotate, {"grace_seconds": int(grace) if grace.isdigit() and len(grace) < 12 else grace})
    service.rotate_secret(webhook, grace=timedelta(seconds=body.grace_seconds), now=utcnow())
    # The new secret, shown this once (the API's answer to a rotation is the only other place it appears).
    return _detail_page(request, session, viewer, webhook, list_params(25, None, None), None, None,
                        secret=webhook.secret, notice="rotated")


@router.post("/webhooks/{webhook_id}/delete")
def delete(webhook_id: IdPath, session: DbSession, viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    service.delete_webhook(session, service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id))
    return RedirectResponse("/webhooks", status_code=303)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
def redeliver(webhook_id: IdPath, delivery_id: DeliveryId, session: DbSession,
              viewer: Viewer = Depends(writer("webhooks:write"))) -> Response:
    webhook = service.get_webhook(session, team_id=viewer.team_id, webhook_id=webhook_id)
    delivery = service.get_delivery(session, team_id=viewer.team_id, webhook_id=webhook_id, delivery_id=delivery_id)
    service.redeliver(session, webhook, delivery, utcnow())
    return RedirectResponse(f"/webhooks/{webhook_id}?done=redelivered#deliveries", status_code=303)
