"""``/api-keys``: the team's API keys, as ``/api/v1/api-keys`` lists them; create, revoke and rotate with grace.

Every action is the API's: the same schema (``ApiKeyCreate``, ``ApiKeyRotate``) and the same ``apikeys.service``
function, with the signed-in person's role scopes as ``granted_by`` (a key grants only scopes its maker holds).
A new key's raw secret is in the POST's answer, rendered once (never a redirect: it is not stored, so no page
could show it again); the list only ever shows the masked key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import StringConstraints

from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys import service
from hostatlas.apikeys.models import ApiKey, KeyStatus
from hostatlas.apikeys.schemas import ApiKeyCreate, ApiKeyOut, ApiKeyRotate
from hostatlas.apikeys.scopes import AGENT_REGISTER
from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import field_errors, render, validated
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader, writer
from hostatlas.errors import InvalidInput
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.pagination import ListParams, list_params, page_of, paginate
from hostatlas.http.types import IdPath, Storable

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# Scopes in the order the form shows them: everything, enrolling agents, then each resource's read and write.
SCOPE_CHOICES: tuple[tuple[str, str], ...] = (
    (scope_rules.ALL_SCOPES, "everything"),
    (scope_rules.AGENT_REGISTER, "Enrol agents"),
    *((f"{resource}:{action}", f"{resource.replace('_', ' ')} {action}")
      for resource in scope_rules.RESOURCES for action in ("read", "write")),
)
GRACE_CHOICES: tuple[tuple[int, str], ...] = (
    (0, "none: the old key stops now"), (3600, "1 hour"), (86_400, "24 hours"), (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
)


def _grace_choices(default: int) -> list[tuple[int, str]]:
    choices = list(GRACE_CHOICES)
    if all(seconds != default for seconds, _ in choices):
        choices.append((default, f"{default} seconds"))
        choices.sort()
    return choices


def _default_grace(request: Request) -> int:
    return runtime.current(request).settings.default_rotation_grace


def _list_context(request: Request, session: DbSession, viewer: Viewer, params: ListParams,
                  status: KeyStatus | None, q: str | None) -> dict[str, Any]:
    now = utcnow()
    page = paginate(session, service.listing(viewer.team_id, status=status, q=q, now=now), id_column=ApiKey.id,
                    params=params, default_sort="-id", sortable={"created_at": ApiKey.created_at, "name": ApiKey.name})
    listed = page_of(page, lambda key: ApiKeyOut.of(key, now))
    default = _default_grace(request)
    return {"keys": listed.data, "meta": listed.meta, "status": status.value if status else "", "q": q or "",
            "statuses": [s.value for s in KeyStatus], "scope_choices": SCOPE_CHOICES,
            "grace_choices": _grace_choices(default), "default_grace": default, "now": now}


def _form_context(name: str = "", scopes: list[str] | None = None, expires_on: str = "",
                  errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"form": {"name": name, "scopes": scopes or [], "expires_on": expires_on}, "errors": errors or {}}


@router.get("/api-keys")
def api_keys(request: Request, session: DbSession, viewer: Viewer = Depends(reader("api_keys:read")),
             params: ListParams = Depends(list_params),
             status: KeyStatus | None = Query(None),
             q: Annotated[str, StringConstraints(max_length=200), Storable] | None = Query(None),
             preset: Literal["agent"] | None = Query(None)) -> Response:
    # ?preset=agent (the "no servers yet" pages link here): the form filled in for an agent enrolment key.
    form = _form_context("Agent enrolment", [AGENT_REGISTER]) if preset == "agent" else _form_context()
    return render(request, "apikeys/list.html", {**_list_context(request, session, viewer, params, status, q), **form})


@router.post("/api-keys")
def create_api_key(request: Request, session: DbSession, viewer: Viewer = Depends(writer("api_keys:write")),
                   name: Annotated[str, Form(max_length=10_000)] = "",
                   scopes: Annotated[list[str] | None, Form()] = None,
                   expires_on: Annotated[str, Form(max_length=100)] = "") -> Response:
    day = expires_on.strip()
    scopes = scopes or []
    body = {"name": name, "scopes": scopes, "expires_at": f"{day}T00:00:00Z" if day else None}
    try:
        checked = validated(ApiKeyCreate, body)
        now = utcnow()
        issued = service.create_key(session, team_id=viewer.team_id, name=checked.name, scopes=checked.scopes,
                                    expires_at=checked.expires_at, now=now, granted_by=viewer.principal.scopes)
    except InvalidInput as exc:
        errors = field_errors(exc)
        if "expires_at" in errors:
            errors["expires_on"] = errors.pop("expires_at")
        if errors.get("expires_on", "").startswith("Input should be"):
            errors["expires_on"] = "Give a day like 2026-06-21"
        context = _list_context(request, session, viewer, ListParams(25, None, None), None, None)
        return render(request, "apikeys/list.html",
                      {**context, **_form_context(name, scopes, expires_on, errors)}, status=422)
    return render(request, "apikeys/created.html",
                  {"key": ApiKeyOut.of(issued.record, now), "raw": issued.raw, "previous": None,
                   "enrols": scope_rules.grants(issued.record.scopes, AGENT_REGISTER)}, status=201)


@router.post("/api-keys/{key_id}/revoke")
def revoke_api_key(key_id: IdPath, session: DbSession,
                   viewer: Viewer = Depends(writer("api_keys:write"))) -> Response:
    service.revoke_key(session, team_id=viewer.team_id, key_id=key_id, now=utcnow())
    return RedirectResponse("/api-keys", status_code=303)


@router.post("/api-keys/{key_id}/rotate")
def rotate_api_key(request: Request, key_id: IdPath, session: DbSession,
                   viewer: Viewer = Depends(writer("api_keys:write")),
                   grace_seconds: Annotated[int | None, Form(ge=0, le=30 * 86_400)] = None) -> Response:
    body = ApiKeyRotate(grace_seconds=grace_seconds)
    now = utcnow()
    grace = timedelta(seconds=body.grace_seconds) if body.grace_seconds is not None else None
    rotation = service.rotate_key(session, team_id=viewer.team_id, key_id=key_id, grace=grace,
                                  default_grace=timedelta(seconds=_default_grace(request)), now=now,
                                  granted_by=viewer.principal.scopes)
    return render(request, "apikeys/created.html",
                  {"key": ApiKeyOut.of(rotation.successor.record, now), "raw": rotation.successor.raw,
                   "previous": ApiKeyOut.of(rotation.previous, now)}, status=201)
