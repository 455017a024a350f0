"""Server enrolment, lookup, editing and removal. Domain code: no HTTP here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from hostatlas import tokens
from hostatlas.clock import isoformat_z
from hostatlas.errors import NotFound, PlanLimitReached
from hostatlas.events import service as events
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryRow, Service
from hostatlas.servers.models import AgentToken, Server, ServerStatus, ServerTag
from hostatlas.servers.schemas import (
    CertificateBrief,
    ContainerBrief,
    DomainBrief,
    ServerDetail,
    ServerSummary,
    ServiceBrief,
)
from hostatlas.teams.models import Team


@dataclass(frozen=True)
class HostFacts:
    machine_id: str
    hostname: str
    ip_address: str | None
    os: str | None
    kernel: str | None
    cpu_cores: int | None
    ram_total_mb: int | None
    agent_version: str | None


@dataclass(frozen=True)
class Enrolment:
    server: Server
    token: str
    created: bool


def register(session: Session, team: Team, facts: HostFacts, now: datetime) -> Enrolment:
    """Enrol a host. The same machine_id again is the same server: fresh token, old ones revoked."""
    server = session.scalar(select(Server).where(Server.team_id == team.id, Server.machine_id == facts.machine_id))
    created = server is None
    was_offline = server is not None and server.status == ServerStatus.OFFLINE.value
    offline_since = server.offline_since if server is not None else None
    if server is None:
        limit = team.server_limit
        if limit is not None:
            # Serialise enrolments of one team (PostgreSQL), or two at once could both pass the count.
            session.execute(select(Team.id).where(Team.id == team.id).with_for_update())
            count = session.scalar(select(func.count()).select_from(Server).where(Server.team_id == team.id)) or 0
            if count >= limit:
                raise PlanLimitReached(f"The {team.plan} plan allows {limit} servers; remove one or upgrade")
        server = Server(team_id=team.id, machine_id=facts.machine_id, tags=[], created_at=now)
        session.add(server)
    for field, value in vars(facts).items():
        setattr(server, field, value)
    server.status = ServerStatus.ONLINE.value
    server.last_seen_at = now
    server.offline_since = None
    session.flush()
    _revoke_tokens(session, server.id, now)
    raw = tokens.generate(tokens.AGENT_TOKEN_PREFIX)
    session.add(AgentToken(server_id=server.id, team_id=team.id, token_hash=tokens.hash_token(raw), created_at=now))
    if created:
        events.record(session, team_id=team.id, type=events.SERVER_REGISTERED, resource_type="server",
                      resource_id=server.id, server_id=server.id, at=now,
                      payload={"server": payload_of(session, server)})
    elif was_offline:
        record_back_online(session, server, offline_since)
    return Enrolment(server, raw, created)


def record_back_online(session: Session, server: Server, offline_since: datetime | None) -> None:
    """The server.online event of a server that was offline, in the caller's transaction."""
    events.record(session, team_id=server.team_id, type=events.SERVER_ONLINE, resource_type="server",
                  resource_id=server.id, server_id=server.id, at=server.last_seen_at,
                  payload={"server": payload_of(session, server), "previous_status": ServerStatus.OFFLINE.value,
                           "offline_since": isoformat_z(offline_since) if offline_since else None})


def get_server(session: Session, *, team_id: int, server_id: int) -> Server:
    server = session.scalar(select(Server).where(Server.id == server_id, Server.team_id == team_id))
    if server is None:
        raise NotFound("Server", "server_not_found")
    return server


def _count(model: type[Service] | type[Domain]) -> Any:
    return (select(func.count()).select_from(model).where(model.server_id == Server.id)
            .correlate(Server).scalar_subquery())


def summaries(session: Session, servers: list[Server]) -> list[ServerSummary]:
    """List shapes for a page of servers, with their service and domain counts in one query."""
    if not servers:
        return []
    counts = {row.id: (row.services, row.domains) for row in session.execute(
        select(Server.id, _count(Service).label("services"), _count(Domain).label("domains"))
        .where(Server.id.in_([server.id for server in servers])))}
    return [ServerSummary(
        id=s.id, hostname=s.hostname, display_name=s.display_name, ip_address=s.ip_address, os=s.os,
        status=ServerStatus(s.status), last_seen_at=s.last_seen_at, services_count=counts[s.id][0],
        domains_count=counts[s.id][1], tags=list(s.tags or []), agent_version=s.agent_version,
        created_at=s.created_at) for s in servers]


def _discovered(session: Session, model: type[InventoryRow], server: Server, order: str) -> list[Any]:
    return list(session.scalars(select(model).where(model.server_id == server.id).order_by(order)))


def detail(session: Session, server: Server) -> ServerDetail:
    """The seed's server detail: host facts plus everything discovered on the server."""
    return ServerDetail(
        id=server.id, hostname=server.hostname, display_name=server.display_name, ip_address=server.ip_address,
        os=server.os, kernel=server.kernel, cpu_cores=server.cpu_cores, ram_total_mb=server.ram_total_mb,
        status=ServerStatus(server.status), agent_version=server.agent_version, last_seen_at=server.last_seen_at,
        offline_since=server.offline_since, uptime_s=server.uptime_s, tags=list(server.tags or []),
        created_at=server.created_at,
        services=[ServiceBrief(name=s.name, version=s.version, status=s.status, unit=s.unit, pid=s.pid,
                               ports=list(s.ports or [])) for s in _discovered(session, Service, server, "name")],
        domains=[DomainBrief(name=d.name, ssl_expiry=d.ssl_expiry, source=d.source)
                 for d in _discovered(session, Domain, server, "name")],
        containers=[ContainerBrief(id=c.container_id, name=c.name, image=c.image, status=c.status)
                    for c in _discovered(session, Container, server, "name")],
        certificates=[CertificateBrief(path=c.path, subject=c.subject, issuer=c.issuer,
                                       domains=list(c.domains or []), not_after=c.not_after)
                      for c in _discovered(session, Certificate, server, "path")],
    )


def payload_of(session: Session, server: Server) -> dict[str, Any]:
    """The server as event payloads carry it: the list shape, as JSON."""
    return summaries(session, [server])[0].model_dump(mode="json")


def listing(team_id: int, *, status: ServerStatus | None, tag: str | None, q: str | None) -> Select[Server]:
    stmt = select(Server).where(Server.team_id == team_id)
    if status is not None:
        stmt = stmt.where(Server.status == status.value)
    if tag:
        stmt = stmt.where(Server.id.in_(select(ServerTag.server_id).where(ServerTag.team_id == team_id,
                                                                          ServerTag.tag == tag)))
    if q:
        stmt = stmt.where(Server.hostname.icontains(q, autoescape=True)
                          | Server.display_name.icontains(q, autoescape=True))
    return stmt


def update_server(session: Session, server: Server, *, display_name: str | None, tags: list[str] | None) -> None:
    if display_name is not None:
        server.display_name = display_name or None
    if tags is not None:
        unique = sorted(set(tags))
        server.tags = unique
        session.execute(delete(ServerTag).where(ServerTag.server_id == server.id))
        session.add_all(ServerTag(server_id=server.id, team_id=server.team_id, tag=tag) for tag in unique)
    session.flush()


def delete_server(session: Session, server: Server, now: datetime) -> None:
    """Remove the server with everything discovered on it; its agent tokens go with it."""
    events.record(session, team_id=server.team_id, type=events.SERVER_DELETED, resource_type="server",
                  resource_id=server.id, server_id=server.id, at=now, payload={"server": payload_of(session, server)})
    _revoke_tokens(session, server.id, now)
    session.execute(delete(Server).where(Server.id == server.id))


def _revoke_tokens(session: Session, server_id: int, now: datetime) -> None:
    session.execute(update(AgentToken).where(AgentToken.server_id == server_id, AgentToken.revoked_at.is_(None))
                    .values(revoked_at=now))
