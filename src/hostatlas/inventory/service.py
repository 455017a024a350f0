"""What was discovered, as it is looked up: each kind's listing across the team's servers, a server's change
history, and the inventory's part in a server's own views (``server_views``). Domain code: no HTTP here.

Applying a discovery snapshot is ``inventory.discovery``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, InventoryRow, Service
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import CertificateBrief, ContainerBrief, DomainBrief, ServerRef, ServiceBrief
from hostatlas.servers.service import get_server
from hostatlas.servers.views import Discovered, ItemCounts, ServerViews

Row = TypeVar("Row", bound=InventoryRow)
ChangeKind = Literal["service", "domain", "container", "certificate"]
ChangeAction = Literal["added", "changed", "removed"]


def server_views() -> ServerViews:
    """The views of servers with the inventory's part in them; the composition hands this one around."""
    return ServerViews(count_items=count_items, find_discovered=find_discovered)


def _count(model: type[Service] | type[Domain]) -> Any:
    return (select(func.count()).select_from(model).where(model.server_id == Server.id)
            .correlate(Server).scalar_subquery())


def count_items(session: Session, server_ids: Collection[int]) -> dict[int, ItemCounts]:
    """Service and domain counts of each server, in one query."""
    rows = session.execute(select(Server.id, _count(Service).label("services"), _count(Domain).label("domains"))
                           .where(Server.id.in_(list(server_ids))))
    return {row.id: ItemCounts(services=row.services, domains=row.domains) for row in rows}


def _on(session: Session, model: type[Row], server: Server, order: InstrumentedAttribute[Any]) -> list[Row]:
    return list(session.scalars(select(model).where(model.server_id == server.id).order_by(order)))


def find_discovered(session: Session, server: Server) -> Discovered:
    return Discovered(
        services=[ServiceBrief(name=s.name, version=s.version, status=s.status, unit=s.unit, pid=s.pid,
                               ports=list(s.ports or [])) for s in _on(session, Service, server, Service.name)],
        domains=[DomainBrief(name=d.name, ssl_expiry=d.ssl_expiry, source=d.source, reload_needed=d.reload_needed)
                 for d in _on(session, Domain, server, Domain.name)],
        containers=[ContainerBrief(id=c.container_id, name=c.name, image=c.image, status=c.status)
                    for c in _on(session, Container, server, Container.name)],
        certificates=[CertificateBrief(path=c.path, subject=c.subject, issuer=c.issuer,
                                       domains=list(c.domains or []), not_after=c.not_after)
                      for c in _on(session, Certificate, server, Certificate.path)],
    )


def server_refs(session: Session, rows: Iterable[InventoryRow]) -> dict[int, ServerRef]:
    """The servers a page of items names, in one query."""
    ids = {row.server_id for row in rows}
    return {row.id: ServerRef(id=row.id, hostname=row.hostname)
            for row in session.execute(select(Server.id, Server.hostname).where(Server.id.in_(ids)))}


def _scoped(model: type[Row], team_id: int, server_id: int | None) -> Select[Row]:
    stmt = select(model).where(model.team_id == team_id)
    return stmt if server_id is None else stmt.where(model.server_id == server_id)


# One listing per kind: the team's items (or one server's), filtered; the caller pages and sorts.

def service_listing(team_id: int, *, server_id: int | None, name: str | None, status: str | None) -> Select[Service]:
    stmt = _scoped(Service, team_id, server_id)
    if name:
        stmt = stmt.where(Service.name == name)
    if status:
        stmt = stmt.where(Service.status == status)
    return stmt


def domain_listing(team_id: int, *, server_id: int | None, name: str | None, expiring_within_days: int | None,
                   today: date, reload_needed: bool | None = None) -> Select[Domain]:
    """``expiring_within_days``: by ``today``; expired ones included. ``reload_needed``: the stored flag
    (``inventory.reload``)."""
    stmt = _scoped(Domain, team_id, server_id)
    if name:
        stmt = stmt.where(Domain.name == name)
    if reload_needed is not None:
        stmt = stmt.where(Domain.reload_needed == reload_needed)  # "=" so that the index serves it
    if expiring_within_days is not None:
        stmt = stmt.where(Domain.ssl_expiry <= today + timedelta(days=expiring_within_days))
    return stmt


def container_listing(team_id: int, *, server_id: int | None, status: str | None,
                      image: str | None) -> Select[Container]:
    stmt = _scoped(Container, team_id, server_id)
    if status:
        stmt = stmt.where(Container.status == status)
    if image:
        stmt = stmt.where(Container.image == image)
    return stmt


def certificate_listing(team_id: int, *, server_id: int | None, q: str | None, expiring_within_days: int | None,
                        now: datetime) -> Select[Certificate]:
    """``q``: the path or subject contains it; ``expiring_within_days``: from ``now``, expired ones included."""
    stmt = _scoped(Certificate, team_id, server_id)
    if expiring_within_days is not None:
        stmt = stmt.where(Certificate.not_after <= now + timedelta(days=expiring_within_days))
    if q:
        stmt = stmt.where(Certificate.path.contains(q, autoescape=True)
                          | Certificate.subject.contains(q, autoescape=True))
    return stmt


def change_listing(session: Session, team_id: int, *, server_id: int, kind: ChangeKind | None,
                   action: ChangeAction | None) -> Select[InventoryChange]:
    """One server's discovery history; another team's server is not found (raises ``NotFound``)."""
    get_server(session, team_id=team_id, server_id=server_id)
    stmt = select(InventoryChange).where(InventoryChange.server_id == server_id, InventoryChange.team_id == team_id)
    if kind:
        stmt = stmt.where(InventoryChange.kind == kind)
    if action:
        stmt = stmt.where(InventoryChange.action == action)
    return stmt
