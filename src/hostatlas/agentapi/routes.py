"""``/api/v1/agent/...``: what agents call. Thin handlers over the servers, inventory and config services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, Security
from sqlalchemy.orm import Session

from hostatlas.agentapi import crash_reports
from hostatlas.agentapi.auth import agent_identity
from hostatlas.agentapi.schemas import (
    CheckInRequest,
    CheckInResponse,
    CrashReport,
    CrashReportResult,
    DiscoveryRequest,
    DiscoveryResponse,
    KindChanges,
    RegisterRequest,
    RegisterResponse,
)
from hostatlas.agentconfig import service as agent_config
from hostatlas.agentconfig.schemas import EffectiveConfig
from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.errors import NotFound, Unauthenticated
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors, raw_json_body
from hostatlas.http.runtime import AppRuntime
from hostatlas.inventory.discovery import apply_snapshot
from hostatlas.servers import checkins
from hostatlas.servers import service as servers
from hostatlas.servers.agent_auth import AgentAuthenticator, AgentIdentity
from hostatlas.servers.models import Server
from hostatlas.servers.views import ServerViews
from hostatlas.teams.models import Team
from hostatlas.telemetry.ingest.spool import Kind
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.schemas import IngestResult, LogsBatch, MetricsBatch

router = APIRouter(prefix="/api/v1/agent", tags=["Agent API"])

Agent = Annotated[AgentIdentity, Depends(agent_identity)]
AGENT_ERRORS = errors(400, 413, 415, 422)


def _own_server(session: Session, agent: AgentIdentity) -> Server:
    try:
        return servers.get_server(session, team_id=agent.team_id, server_id=agent.server_id)
    except NotFound:
        # The server was deleted while a cached token still pointed at it.
        raise Unauthenticated("invalid_agent_token", "This server was removed; register the agent again") from None


@router.post("/register", status_code=201, response_model=RegisterResponse, responses=errors(400, 413, 415, 422),
             summary="Enrol an agent",
             description="Needs an API key with `agent:register`. The same machine_id again is the same server: "
                         "a fresh token is issued and the old one revoked. A free team enrols at most 3 servers "
                         "(403 `plan_limit_reached`).")
def register(body: RegisterRequest, request: Request, session: DbSession,
             principal: Annotated[Principal, Security(authenticated, scopes=["agent:register"])]) -> RegisterResponse:
    team = session.get_one(Team, principal.team_id)
    facts = servers.HostFacts(**body.model_dump())
    app_runtime = runtime.current(request)
    enrolment = servers.register(session, team, facts, utcnow(), views=app_runtime.part(ServerViews),
                                 token_cache=app_runtime.part(AgentAuthenticator))
    return RegisterResponse(server_id=enrolment.server.id, agent_token=enrolment.token, created=enrolment.created)


@router.post("/check-in", response_model=CheckInResponse, responses=AGENT_ERRORS, summary="Health check-in",
             description="Every 60 s. Buffered in memory and written once per flush interval, so a check-in costs "
                         "no database write of its own.")
async def check_in(body: CheckInRequest, app_runtime: AppRuntime, agent: Agent) -> CheckInResponse:
    # Most check-ins are answered by agentapi.fastpath before they get here; this route is the reference.
    received_at = checkins.check_in(app_runtime.part(checkins.CheckinBuffer), agent.server_id,
                                    agent_version=body.agent_version, uptime_s=body.uptime_s, boot_id=body.boot_id)
    return CheckInResponse(server_id=agent.server_id, received_at=received_at)


@router.post("/discovery", response_model=DiscoveryResponse, responses=AGENT_ERRORS, summary="Discovery snapshot",
             description="Services, domains, containers and certificates found on the host. Each kind present is a "
                         "full snapshot, diffed against the stored one; the answer lists what was added, changed "
                         "and removed, and the changes are kept (GET /api/v1/servers/{id}/changes).")
def discovery(body: DiscoveryRequest, agent: Agent, session: DbSession) -> DiscoveryResponse:
    server = _own_server(session, agent)
    snapshot: dict[str, Any] = {kind: [item.model_dump() for item in items] if items is not None else None
                                for kind, items in body}
    diffs = apply_snapshot(session, server, snapshot, utcnow())
    summary = {action: sum(len(getattr(diff, action)) for diff in diffs.values())
               for action in ("added", "changed", "removed")}
    return DiscoveryResponse(summary=summary, **{kind: KindChanges(**vars(diff)) for kind, diff in diffs.items()})


@router.post("/incidents", response_model=CrashReportResult, responses={201: {"model": CrashReportResult,
                                                                           "description": "An incident was opened"},
                                                                      **AGENT_ERRORS},
             summary="Crash report", description="A service on the host crashed. The first report of a `key` opens "
             "an incident (201), the same key again appends its logs, metrics and state to the incident's timeline "
             "(200), `\"resolved\": true` resolves it (200; `incident_id` null when nothing was open). At most "
             "1,000 log lines of 8 KiB and 64 KiB of metrics and of state (422 naming the field); while the server "
             "is offline the report joins the server's outage incident.")
def crash_report(body: CrashReport, response: Response, agent: Agent, session: DbSession) -> CrashReportResult:
    outcome = crash_reports.receive(session, server=_own_server(session, agent), report=body, now=utcnow())
    if outcome is None:
        return CrashReportResult(incident_id=None, status=None, opened=False)
    if outcome.opened:
        response.status_code = 201
    return CrashReportResult(incident_id=outcome.incident.id, status=outcome.incident.status, opened=outcome.opened)


@router.post("/metrics", response_model=IngestResult, responses=AGENT_ERRORS, openapi_extra=raw_json_body(MetricsBatch),
             summary="Metric ingestion", description="Every 15 s, one batch of series. Bad points are dropped one "
             "by one and listed in `problems`; the rest is stored, and durable before the answer.")
async def metrics(request: Request, agent: Agent) -> IngestResult:
    return await _accept(request, agent, Kind.METRICS)


@router.post("/logs", response_model=IngestResult, responses=AGENT_ERRORS, openapi_extra=raw_json_body(LogsBatch),
             summary="Log streaming", description="New lines from the host's log files. Each line is parsed (nginx "
             "access and error, syslog, JSON, plain) into time, level, message and fields, and indexed for search.")
async def logs(request: Request, agent: Agent) -> IngestResult:
    return await _accept(request, agent, Kind.LOGS)


async def _accept(request: Request, agent: AgentIdentity, kind: Kind) -> IngestResult:
    outcome = await runtime.current(request).part(Telemetry).accept_batch(
        kind, team_id=agent.team_id, server_id=agent.server_id, body=await request.body())
    return IngestResult(**outcome.answer())


@router.get("/config", response_model=EffectiveConfig, responses={304: {"description": "Unchanged since the ETag"},
                                                                 **errors()},
            summary="Pull the agent's config", description="Send the last ETag as If-None-Match to get a 304.")
def config(request: Request, response: Response, agent: Agent, session: DbSession) -> EffectiveConfig | Response:
    server = _own_server(session, agent)
    effective = agent_config.effective(session, server.team_id, server.id)
    etag = f'"{effective.version}"'
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return effective
