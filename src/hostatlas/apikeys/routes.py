"""``/api/v1/api-keys``: thin handlers over ``apikeys.service``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints

from hostatlas.apikeys import service
from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.apikeys.models import ApiKey, KeyStatus
from hostatlas.apikeys.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyRotate,
    ApiKeyRotated,
    ApiKeyUpdate,
)
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.runtime import AppRuntime
from hostatlas.http.types import IdPath, Storable

router = APIRouter(prefix="/api/v1/api-keys", tags=["API keys"])

Reader = Annotated[Principal, Security(authenticated, scopes=["api_keys:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["api_keys:write"])]


@router.get("", response_model=Page[ApiKeyOut], responses=errors(422),
            summary="List API keys", description="The team's keys, newest first, with status and last use.")
def list_keys(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
              status: KeyStatus | None = Query(None, description="active, expired or revoked"),
              q: Annotated[str, StringConstraints(max_length=200), Storable] | None = Query(
                  None, description="Name contains")) -> Page[ApiKeyOut]:
    now = utcnow()
    page = paginate(session, service.listing(principal.team_id, status=status, q=q, now=now), id_column=ApiKey.id,
                    params=params, default_sort="-id", sortable={"created_at": ApiKey.created_at, "name": ApiKey.name})
    return page_of(page, lambda key: ApiKeyOut.of(key, now))


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=errors(400, 413, 415, 422),
             summary="Create an API key",
             description="Returns the raw key once. A key can only grant scopes its creator holds.")
def create_key(body: ApiKeyCreate, principal: Writer, session: DbSession) -> ApiKeyCreated:
    now = utcnow()
    issued = service.create_key(session, team_id=principal.team_id, name=body.name, scopes=body.scopes,
                                expires_at=body.expires_at, now=now, granted_by=principal.scopes)
    return ApiKeyCreated(**ApiKeyOut.of(issued.record, now).model_dump(), key=issued.raw)


@router.get("/{key_id}", response_model=ApiKeyOut, responses=errors(404, 422), summary="Get an API key")
def get_key(key_id: IdPath, principal: Reader, session: DbSession) -> ApiKeyOut:
    return ApiKeyOut.of(service.get_key(session, team_id=principal.team_id, key_id=key_id), utcnow())


@router.patch("/{key_id}", response_model=ApiKeyOut, responses=errors(400, 404, 415, 422),
              summary="Rename an API key")
def update_key(key_id: IdPath, body: ApiKeyUpdate, principal: Writer, session: DbSession) -> ApiKeyOut:
    return ApiKeyOut.of(service.rename_key(session, team_id=principal.team_id, key_id=key_id, name=body.name),
                        utcnow())


@router.delete("/{key_id}", response_model=ApiKeyOut, responses=errors(404, 422), summary="Revoke an API key",
               description="The key stops working at once; its record stays, with revoked_at.")
def revoke_key(key_id: IdPath, principal: Writer, session: DbSession) -> ApiKeyOut:
    now = utcnow()
    return ApiKeyOut.of(service.revoke_key(session, team_id=principal.team_id, key_id=key_id, now=now), now)


@router.post("/{key_id}/rotate", status_code=201, response_model=ApiKeyRotated,
             responses=errors(400, 404, 409, 415, 422), summary="Rotate an API key",
             description="Issues a successor with the same name, scopes and expiry. The old key keeps "
                         "working for grace_seconds (default 24 h), then stops: zero-downtime rotation. "
                         "Like creating, rotating needs every scope of the rotated key.")
def rotate_key(key_id: IdPath, principal: Writer, session: DbSession, runtime: AppRuntime,
               body: ApiKeyRotate | None = None) -> ApiKeyRotated:
    now = utcnow()
    grace = timedelta(seconds=body.grace_seconds) if body and body.grace_seconds is not None else None
    rotation = service.rotate_key(session, team_id=principal.team_id, key_id=key_id, grace=grace,
                                  default_grace=timedelta(seconds=runtime.settings.default_rotation_grace), now=now,
                                  granted_by=principal.scopes)
    return ApiKeyRotated(**ApiKeyOut.of(rotation.successor.record, now).model_dump(), key=rotation.successor.raw,
                         previous=ApiKeyOut.of(rotation.previous, now))
