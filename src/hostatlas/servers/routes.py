"""``/api/v1/servers``: the team's servers, their detail, tags and removal."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, PageMeta, list_params, paginate
from hostatlas.http.runtime import AppRuntime
from hostatlas.http.types import IdPath, Storable
from hostatlas.servers import service
from hostatlas.servers.agent_auth import AgentAuthenticator
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.schemas import ServerDetail, ServerSummary, ServerUpdate
from hostatlas.servers.views import ServerViews

router = APIRouter(prefix="/api/v1/servers", tags=["Servers"])

Reader = Annotated[Principal, Security(authenticated, scopes=["servers:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["servers:write"])]


@router.get("", response_model=Page[ServerSummary], responses=errors(422), summary="List servers")
def list_servers(principal: Reader, session: DbSession, runtime: AppRuntime, params: ListParams = Depends(list_params),
                 status: ServerStatus | None = Query(None, description="online or offline"),
                 tag: Annotated[str, StringConstraints(max_length=64), Storable] | None = Query(
                     None, description="Servers carrying this tag"),
                 q: Annotated[str, StringConstraints(max_length=255), Storable] | None = Query(
                     None, description="Hostname or display name contains")) -> Page[ServerSummary]:
    page = paginate(session, service.listing(principal.team_id, status=status, tag=tag, q=q), id_column=Server.id,
                    params=params, default_sort="id", sortable={"hostname": Server.hostname, "status": Server.status,
                                                                "last_seen_at": Server.last_seen_at,
                                                                "created_at": Server.created_at})
    return Page(data=runtime.part(ServerViews).summaries(session, page.rows),
                meta=PageMeta(total=page.total, per_page=page.per_page, next_cursor=page.next_cursor))


@router.get("/{server_id}", response_model=ServerDetail, responses=errors(404, 422), summary="Get a server",
            description="Host facts with everything discovered on it: services, domains, containers, certificates.")
def get_server(server_id: IdPath, principal: Reader, session: DbSession, runtime: AppRuntime) -> ServerDetail:
    server = service.get_server(session, team_id=principal.team_id, server_id=server_id)
    return runtime.part(ServerViews).detail(session, server)


@router.patch("/{server_id}", response_model=ServerDetail, responses=errors(400, 404, 415, 422),
              summary="Rename or tag a server")
def update_server(server_id: IdPath, body: ServerUpdate, principal: Writer, session: DbSession,
                  runtime: AppRuntime) -> ServerDetail:
    server = service.update_server(session, team_id=principal.team_id, server_id=server_id,
                                   display_name=body.display_name, tags=body.tags)
    return runtime.part(ServerViews).detail(session, server)


@router.delete("/{server_id}", status_code=204, responses=errors(404, 422), summary="Remove a server",
               description="Deletes the server and what was discovered on it, and revokes its agent token.")
def delete_server(server_id: IdPath, principal: Writer, session: DbSession, runtime: AppRuntime) -> None:
    service.delete_server(session, team_id=principal.team_id, server_id=server_id, now=utcnow(),
                          views=runtime.part(ServerViews), token_cache=runtime.part(AgentAuthenticator),
                          checkin_buffer=runtime.part(CheckinBuffer))
