"""A server as the API shows it: in lists and event payloads (``ServerSummary``) and in its detail.

Both shapes include what the inventory discovered on the server (its service and domain counts; its
services, domains, containers and certificates). Inventory imports servers, so servers may not import
inventory: the inventory's part is handed in instead. ``inventory.service.server_views()`` builds the
one ``ServerViews`` the composition passes to whatever shows or announces a server: the REST routes (a
runtime part), the check-in buffer, the offline sweep and enrolment. Its ``listener`` hears of status flips
(the composition gives it the incidents' outage listener).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from hostatlas.servers.models import Server, ServerStatus
from hostatlas.servers.schemas import (
    CertificateBrief,
    ContainerBrief,
    DomainBrief,
    ServerDetail,
    ServerSummary,
    ServiceBrief,
)


@dataclass(frozen=True)
class ItemCounts:
    services: int
    domains: int


@dataclass(frozen=True)
class Discovered:
    """Everything discovered on one server, in the detail's order."""

    services: list[ServiceBrief]
    domains: list[DomainBrief]
    containers: list[ContainerBrief]
    certificates: list[CertificateBrief]


# The counts of a page of servers, in one query; servers without items may be left out (they count 0).
CountItems = Callable[[Session, Collection[int]], Mapping[int, ItemCounts]]
FindDiscovered = Callable[[Session, Server], Discovered]
NOTHING = ItemCounts(services=0, domains=0)


class StatusListener(Protocol):
    """Told of a server's status flips and its deletion, in the transaction that makes the change (after its
    event is recorded).
    Incidents listen (a server outage is an incident); servers cannot import them, so it is handed in."""

    def server_went_offline(self, session: Session, server: Server, at: datetime) -> None: ...

    def server_came_online(self, session: Session, server: Server, offline_since: datetime | None,
                           at: datetime) -> None: ...

    def server_deleted(self, session: Session, server: Server, at: datetime) -> None: ...


class NoListener:
    """Nobody listening: servers on their own (tests of this layer, tools that only show servers)."""

    def server_went_offline(self, session: Session, server: Server, at: datetime) -> None:
        return None

    def server_came_online(self, session: Session, server: Server, offline_since: datetime | None,
                           at: datetime) -> None:
        return None

    def server_deleted(self, session: Session, server: Server, at: datetime) -> None:
        return None


@dataclass(frozen=True)
class ServerViews:
    count_items: CountItems
    find_discovered: FindDiscovered
    listener: StatusListener = field(default_factory=NoListener)

    def summaries(self, session: Session, servers: list[Server]) -> list[ServerSummary]:
        """List shapes for a page of servers, with their counts in one query."""
        if not servers:
            return []
        counts = self.count_items(session, [server.id for server in servers])
        return [_summary(server, counts.get(server.id, NOTHING)) for server in servers]

    def payload(self, session: Session, server: Server) -> dict[str, Any]:
        """The server as event payloads carry it: the list shape, as JSON."""
        return self.summaries(session, [server])[0].model_dump(mode="json")

    def detail(self, session: Session, server: Server) -> ServerDetail:
        """The seed's server detail: host facts plus everything discovered on the server."""
        found = self.find_discovered(session, server)
        return ServerDetail(
            id=server.id, hostname=server.hostname, display_name=server.display_name, ip_address=server.ip_address,
            os=server.os, kernel=server.kernel, cpu_cores=server.cpu_cores, ram_total_mb=server.ram_total_mb,
            status=ServerStatus(server.status), agent_version=server.agent_version,
            last_seen_at=server.last_seen_at, offline_since=server.offline_since, uptime_s=server.uptime_s,
            tags=list(server.tags or []), created_at=server.created_at, services=found.services,
            domains=found.domains, containers=found.containers, certificates=found.certificates,
        )


def _summary(s: Server, counts: ItemCounts) -> ServerSummary:
    return ServerSummary(
        id=s.id, hostname=s.hostname, display_name=s.display_name, ip_address=s.ip_address, os=s.os,
        status=ServerStatus(s.status), last_seen_at=s.last_seen_at, services_count=counts.services,
        domains_count=counts.domains, tags=list(s.tags or []), agent_version=s.agent_version,
        created_at=s.created_at)
