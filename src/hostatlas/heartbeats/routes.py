"""``/api/v1/heartbeats``: thin handlers over ``heartbeats.service``; the ping URLs are in ping_routes.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.heartbeats import service
from hostatlas.heartbeats.history import detail_of
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, HeartbeatStatus, PingKind
from hostatlas.heartbeats.schemas import (
    FlipOut,
    HeartbeatCreate,
    HeartbeatDetail,
    HeartbeatOut,
    HeartbeatUpdate,
    PingOut,
    PingSettingsOut,
    PingSettingsUpdate,
)
from hostatlas.http.deps import DbSession, WriteSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.runtime import AppRuntime
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.teams.models import Team

router = APIRouter(prefix="/api/v1/heartbeats", tags=["Heartbeats"])

Reader = Annotated[Principal, Security(authenticated, scopes=["heartbeats:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["heartbeats:write"])]


def _settings_out(team: Team, public_url: str) -> PingSettingsOut:
    assert team.ping_key is not None
    return PingSettingsOut(ping_key=team.ping_key, ping_create=team.ping_create,
                           slug_url_template=service.slug_url_template(public_url, team.ping_key))


@router.get("/ping-settings", response_model=PingSettingsOut, responses=errors(), summary="Get the team's ping key",
            description="The key of the team's slug ping URLs (`/heartbeat/{ping_key}/{slug}`), made on first read.")
def get_ping_settings(principal: Reader, session: WriteSession, runtime: AppRuntime) -> PingSettingsOut:
    return _settings_out(service.ping_settings(session, team_id=principal.team_id), runtime.settings.public_url)


@router.patch("/ping-settings", response_model=PingSettingsOut, responses=errors(400, 415, 422),
              summary="Allow or forbid creating heartbeats by pinging a new slug",
              description="`ping_create: true` lets `/heartbeat/{ping_key}/{slug}?create=1` create the heartbeat.")
def update_ping_settings(body: PingSettingsUpdate, principal: Writer, session: DbSession,
                         runtime: AppRuntime) -> PingSettingsOut:
    team = service.update_ping_settings(session, team_id=principal.team_id, ping_create=body.ping_create)
    return _settings_out(team, runtime.settings.public_url)


@router.get("", response_model=Page[HeartbeatOut], responses=errors(422), summary="List heartbeats")
def list_heartbeats(principal: Reader, session: DbSession, runtime: AppRuntime,
                    params: ListParams = Depends(list_params),
                    status: HeartbeatStatus | None = Query(None, description="new, up, late, down, paused, started"),
                    tag: Annotated[str, StringConstraints(max_length=64), Storable] | None = Query(
                        None, description="Heartbeats carrying this tag"),
                    server_id: IdQuery | None = Query(None, description="Heartbeats of jobs on this server"),
                    ) -> Page[HeartbeatOut]:
    stmt = service.listing(principal.team_id, status=status, tag=tag, server_id=server_id)
    page = paginate(session, stmt, id_column=Heartbeat.id, params=params, default_sort="id",
                    sortable={"name": Heartbeat.name, "slug": Heartbeat.slug, "status": Heartbeat.status,
                              "created_at": Heartbeat.created_at})
    public_url = runtime.settings.public_url
    return page_of(page, lambda heartbeat: HeartbeatOut.of(heartbeat, public_url))


@router.post("", status_code=201, response_model=HeartbeatOut, responses=errors(400, 403, 409, 413, 415, 422),
             summary="Create a heartbeat",
             description="Give exactly one of `interval` (seconds) and `schedule` (cron, read in `timezone`). "
                         "Ping `ping_url` when the job succeeds; the heartbeat is `new` until the first ping. "
                         "A free team has at most 20 heartbeats (403 `plan_limit_reached`).")
def create_heartbeat(body: HeartbeatCreate, principal: Writer, session: DbSession,
                     runtime: AppRuntime) -> HeartbeatOut:
    heartbeat = service.create_heartbeat(session, team_id=principal.team_id, fields=body.model_dump(exclude_unset=True),
                                         now=utcnow())
    return HeartbeatOut.of(heartbeat, runtime.settings.public_url)


@router.get("/{heartbeat_id}", response_model=HeartbeatDetail, responses=errors(404, 422), summary="Get a heartbeat",
            description="With the run-duration history (p50/p95 over the last 100 pings that carry a duration) "
                        "and how many of the last 100 pings came too often.")
def get_heartbeat(heartbeat_id: IdPath, principal: Reader, session: DbSession, runtime: AppRuntime) -> HeartbeatDetail:
    heartbeat = service.get_heartbeat(session, team_id=principal.team_id, heartbeat_id=heartbeat_id)
    return detail_of(session, heartbeat, runtime.settings.public_url)


@router.patch("/{heartbeat_id}", response_model=HeartbeatOut, responses=errors(400, 404, 409, 415, 422),
              summary="Update a heartbeat",
              description="Any field; `null` clears `server_id`, `min_runtime`, `max_runtime`. A `schedule` replaces "
                          "the `interval` and the other way round. A new timing reschedules the next due time "
                          "from the last ping.")
def update_heartbeat(heartbeat_id: IdPath, body: HeartbeatUpdate, principal: Writer, session: DbSession,
                     runtime: AppRuntime) -> HeartbeatOut:
    heartbeat = service.update_heartbeat(session, team_id=principal.team_id, heartbeat_id=heartbeat_id,
                                         changes=body.model_dump(exclude_unset=True), now=utcnow())
    return HeartbeatOut.of(heartbeat, runtime.settings.public_url)


@router.delete("/{heartbeat_id}", status_code=204, responses=errors(404, 422), summary="Delete a heartbeat",
               description="Its ping log and flips go with it; its ping URL answers 404 from then on.")
def delete_heartbeat(heartbeat_id: IdPath, principal: Writer, session: DbSession) -> None:
    service.delete_heartbeat(session, team_id=principal.team_id, heartbeat_id=heartbeat_id)


@router.post("/{heartbeat_id}/pause", response_model=HeartbeatOut, responses=errors(404, 422),
             summary="Pause a heartbeat", description="No alerts while paused. A ping resumes it unless "
                                                      "`manual_resume` is set.")
def pause_heartbeat(heartbeat_id: IdPath, principal: Writer, session: DbSession, runtime: AppRuntime) -> HeartbeatOut:
    public_url = runtime.settings.public_url
    heartbeat = service.pause(session, team_id=principal.team_id, heartbeat_id=heartbeat_id, public_url=public_url,
                              now=utcnow())
    return HeartbeatOut.of(heartbeat, public_url)


@router.post("/{heartbeat_id}/resume", response_model=HeartbeatOut, responses=errors(404, 422),
             summary="Resume a heartbeat", description="A paused or down heartbeat goes back to `new`: monitoring "
                                                       "starts again with the next ping. Others are left as they are.")
def resume_heartbeat(heartbeat_id: IdPath, principal: Writer, session: DbSession,
                     runtime: AppRuntime) -> HeartbeatOut:
    public_url = runtime.settings.public_url
    heartbeat = service.resume(session, team_id=principal.team_id, heartbeat_id=heartbeat_id, public_url=public_url,
                               now=utcnow())
    return HeartbeatOut.of(heartbeat, public_url)


@router.post("/{heartbeat_id}/rotate-token", response_model=HeartbeatOut, responses=errors(404, 422),
             summary="Rotate the ping token", description="A new `ping_url`; the old one answers 404 from now on.")
def rotate_token(heartbeat_id: IdPath, principal: Writer, session: DbSession, runtime: AppRuntime) -> HeartbeatOut:
    heartbeat = service.rotate_token(session, team_id=principal.team_id, heartbeat_id=heartbeat_id, now=utcnow())
    return HeartbeatOut.of(heartbeat, runtime.settings.public_url)


@router.get("/{heartbeat_id}/pings", response_model=Page[PingOut], responses=errors(404, 422),
            summary="List a heartbeat's pings", description="The ping log, newest first.")
def list_pings(heartbeat_id: IdPath, principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
               kind: PingKind | None = Query(None, description="success, start, fail or log")) -> Page[PingOut]:
    stmt = service.ping_listing(session, team_id=principal.team_id, heartbeat_id=heartbeat_id, kind=kind)
    page = paginate(session, stmt, id_column=HeartbeatPing.id, params=params, default_sort="-id",
                    sortable={"at": HeartbeatPing.at})
    return page_of(page, PingOut.of)


@router.get("/{heartbeat_id}/flips", response_model=Page[FlipOut], responses=errors(404, 422),
            summary="List a heartbeat's status changes", description="Every flip with its cause, newest first.")
def list_flips(heartbeat_id: IdPath, principal: Reader, session: DbSession,
               params: ListParams = Depends(list_params)) -> Page[FlipOut]:
    stmt = service.flip_listing(session, team_id=principal.team_id, heartbeat_id=heartbeat_id)
    page = paginate(session, stmt, id_column=HeartbeatFlip.id, params=params, default_sort="-id",
                    sortable={"at": HeartbeatFlip.at})
    return page_of(page, FlipOut.of)
