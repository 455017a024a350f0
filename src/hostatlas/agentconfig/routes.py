"""Agent config on the REST API: the team's defaults and each server's overrides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Security

from hostatlas.agentconfig import service
from hostatlas.agentconfig.schemas import AgentSettings, ServerAgentConfig
from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.types import IdPath

router = APIRouter(prefix="/api/v1", tags=["Agent config"])

Reader = Annotated[Principal, Security(authenticated, scopes=["servers:read"])]
Writer = Annotated[Principal, Security(authenticated, scopes=["servers:write"])]


@router.get("/agent-config", response_model=ServerAgentConfig, responses=errors(), summary="Team agent defaults",
            description="What every agent of the team runs with, unless its server overrides it.")
def get_team_config(principal: Reader, session: DbSession) -> ServerAgentConfig:
    return service.config_of(session, principal.team_id, None)


@router.put("/agent-config", response_model=ServerAgentConfig, responses=errors(400, 415, 422),
            summary="Set team agent defaults", description="Replaces the team's defaults; unset fields use the "
                                                           "built-in values. Agents pick it up at their next pull.")
def put_team_config(body: AgentSettings, principal: Writer, session: DbSession) -> ServerAgentConfig:
    return service.replace(session, principal.team_id, None, body)


@router.get("/servers/{server_id}/agent-config", response_model=ServerAgentConfig, responses=errors(404, 422),
            summary="A server's agent config")
def get_server_config(server_id: IdPath, principal: Reader, session: DbSession) -> ServerAgentConfig:
    return service.config_of(session, principal.team_id, server_id)


@router.put("/servers/{server_id}/agent-config", response_model=ServerAgentConfig,
            responses=errors(400, 404, 415, 422), summary="Set a server's agent overrides",
            description="Replaces the server's overrides; unset fields inherit the team's defaults.")
def put_server_config(server_id: IdPath, body: AgentSettings, principal: Writer,
                      session: DbSession) -> ServerAgentConfig:
    return service.replace(session, principal.team_id, server_id, body)
