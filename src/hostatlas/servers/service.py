"""Server enrolment, lookup, editing and removal. Domain code: no HTTP here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from hostatlas import tokens
from hostatlas.errors import NotFound, PlanLimitReached
from hostatlas.events import service as events
from hostatlas.servers.agent_auth import AgentAuthenticator, AgentIdentity
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.servers.models import AgentToken, Server, ServerStatus, ServerTag
from hostatlas.servers.status import record_back_online
from hostatlas.servers.views import ServerViews
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


def register(session: Session, team: Team, facts: HostFacts, now: datetime, *, views: ServerViews,
             token_cache: AgentAuthenticator) -> Enrolment:
    """Enrol a host. The same machine_id again is the same server: fresh token, old ones revoked, and this
    process's token cache told so at once (other processes learn of the revocation at their next sync)."""
    server = session.scalar(select(Server).where(Server.team_id == team.id, Server.machine_id == facts.machine_id))
    created = server is None
    was_offline = server is not None and server.status == ServerStatus.OFFLINE.value
    offline_since = server.offline_since if server is not None else None
    if server is None:
        limit = team.server_limit
        if limit is not None:
            # Serialise enrolments of one team (PostgreSQL), or two at once could both pass the count.
            session.execute(select(Team.id).where(Team.id == team.id).with_for_update())
            if count(session, team.id) >= limit:
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
                      payload={"server": views.payload(session, server)})
    elif was_offline:
        record_back_online(session, server, offline_since, views)
    token_cache.forget_server(server.id)
    token_cache.remember(tokens.hash_token(raw), AgentIdentity(server.id, team.id))
    return Enrolment(server, raw, created)


def count(session: Session, team_id: int) -> int:
    """The team's servers, as the plan's server limit counts them."""
    return session.scalar(select(func.count()).select_from(Server).where(Server.team_id == team_id)) or 0


@dataclass(frozen=True)
class ServerChoice:
    id: int
    hostname: str


def choices(session: Session, team_id: int, *, limit: int) -> list[ServerChoice]:
    """The team's servers as a form offers them (by hostname): ids and names only, cheap with 10,000 servers."""
    rows = session.execute(select(Server.id, Server.hostname).where(Server.team_id == team_id)
                           .order_by(Server.hostname, Server.id).limit(limit))
    return [ServerChoice(server_id, hostname) for server_id, hostname in rows]


def get_server(session: Session, *, team_id: int, server_id: int) -> Server:
    server = session.scalar(select(Server).where(Server.id == server_id, Server.team_id == team_id))
    if server is None:
        raise NotFound("Server", "server_not_found")
    return server


def listing(team_id: int, *, status: ServerStatus | None, tag: str | None, q: str | None) -> Select[Server]:
    """The team's servers matching the filters: the list's query, and telemetry's server selection."""
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


def update_server(session: Session, *, team_id: int, server_id: int, display_name: str | None,
                  tags: list[str] | None) -> Server:
    """Rename (an empty name clears it) or retag; ``None`` leaves a field as it is."""
    server = get_server(session, team_id=team_id, server_id=server_id)
    if display_name is not None:
        server.display_name = display_name or None
    if tags is not None:
        unique = sorted(set(tags))
        server.tags = unique
        session.execute(delete(ServerTag).where(ServerTag.server_id == server.id))
        session.add_all(ServerTag(server_id=server.id, team_id=server.team_id, tag=tag) for tag in unique)
    session.flush()
    return server


def delete_server(session: Session, *, team_id: int, server_id: int, now: datetime, views: ServerViews,
                  token_cache: AgentAuthenticator, checkin_buffer: CheckinBuffer) -> None:
    """Remove the server; what was discovered on it goes with it (foreign keys cascade), its agent tokens are
    revoked, and this process forgets it at once: its cached tokens and its buffered check-in. The caches are
    required arguments so that no path (API, dashboard, CLI) can delete a server and leave them behind; other
    processes learn of the revocation at their next sync (``AgentAuthenticator.sync_revocations``)."""
    server = get_server(session, team_id=team_id, server_id=server_id)
    events.record(session, team_id=server.team_id, type=events.SERVER_DELETED, resource_type="server",
                  resource_id=server.id, server_id=server.id, at=now,
                  payload={"server": views.payload(session, server)})
    views.listener.server_deleted(session, server, now)
    _revoke_tokens(session, server.id, now)
    session.execute(delete(Server).where(Server.id == server.id))
    token_cache.forget_server(server_id)
    checkin_buffer.forget(server_id)


def _revoke_tokens(session: Session, server_id: int, now: datetime) -> None:
    session.execute(update(AgentToken).where(AgentToken.server_id == server_id, AgentToken.revoked_at.is_(None))
                    .values(revoked_at=now))
