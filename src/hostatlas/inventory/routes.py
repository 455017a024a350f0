"""What was discovered, across the team's servers: ``/api/v1/services``, ``/domains``, ``/containers``,
``/certificates``, and one server's change history, ``/api/v1/servers/{id}/changes``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, InventoryRow, Service
from hostatlas.inventory.schemas import (
    CertificateOut,
    ChangeOut,
    ContainerOut,
    DomainOut,
    ServiceOut,
)
from hostatlas.servers.models import Server
from hostatlas.servers.schemas import ServerRef
from hostatlas.servers.service import get_server

router = APIRouter(prefix="/api/v1", tags=["Inventory"])

Reader = Annotated[Principal, Security(authenticated, scopes=["servers:read"])]
Row = TypeVar("Row", bound=InventoryRow)
Out = TypeVar("Out")
ServerFilter = Annotated[IdQuery | None, Query(description="Only this server's")]
# Compared with stored text, so bounded by the column (a longer one could never match) and storable.
Filter = Annotated[str, StringConstraints(max_length=255), Storable]
ImageFilter = Annotated[str, StringConstraints(max_length=512), Storable]
EXPIRING = Query(None, ge=0, le=3650, description="Expiring within this many days (expired ones included)")


def _page(session: Session, principal: Principal, stmt: Select[Row], model: type[Row], params: ListParams,
          sortable: dict[str, Any], render: Callable[[Row, ServerRef], Out], server_id: int | None) -> Page[Out]:
    stmt = stmt.where(model.team_id == principal.team_id)
    if server_id is not None:
        stmt = stmt.where(model.server_id == server_id)
    page = paginate(session, stmt, id_column=model.id, params=params,  # type: ignore[attr-defined]
                    sortable={**sortable, "updated_at": model.updated_at}, default_sort="id")
    hostnames = dict(session.execute(select(Server.id, Server.hostname)
                                     .where(Server.id.in_({row.server_id for row in page.rows}))).all())
    return page_of(page, lambda row: render(row, ServerRef(id=row.server_id, hostname=hostnames[row.server_id])))


def _base(row: InventoryRow, server: ServerRef) -> dict[str, Any]:
    return {"id": row.id, "server": server, "first_seen_at": row.first_seen_at,  # type: ignore[attr-defined]
            "updated_at": row.updated_at}


def _days_until(moment: date | datetime | None, today: date) -> int | None:
    if moment is None:
        return None
    return ((moment.date() if isinstance(moment, datetime) else moment) - today).days


@router.get("/services", response_model=Page[ServiceOut], responses=errors(422), summary="List services")
def list_services(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                  server_id: ServerFilter = None, name: Filter | None = Query(None),
                  status: Filter | None = Query(None, description="e.g. running, stopped")) -> Page[ServiceOut]:
    stmt = select(Service)
    if name:
        stmt = stmt.where(Service.name == name)
    if status:
        stmt = stmt.where(Service.status == status)
    return _page(session, principal, stmt, Service, params, {"name": Service.name}, lambda s, ref: ServiceOut(
        **_base(s, ref), name=s.name, version=s.version, status=s.status, unit=s.unit, pid=s.pid,
        ports=list(s.ports or []), log_paths=list(s.log_paths or [])), server_id)


@router.get("/domains", response_model=Page[DomainOut], responses=errors(422), summary="List domains")
def list_domains(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                 server_id: ServerFilter = None, name: Filter | None = Query(None),
                 expiring_within_days: int | None = EXPIRING) -> Page[DomainOut]:
    today = utcnow().date()
    stmt = select(Domain)
    if name:
        stmt = stmt.where(Domain.name == name)
    if expiring_within_days is not None:
        stmt = stmt.where(Domain.ssl_expiry <= today + timedelta(days=expiring_within_days))
    return _page(session, principal, stmt, Domain, params, {"name": Domain.name}, lambda d, ref: DomainOut(
        **_base(d, ref), name=d.name, source=d.source, ssl_expiry=d.ssl_expiry,
        days_until_expiry=_days_until(d.ssl_expiry, today)), server_id)


@router.get("/containers", response_model=Page[ContainerOut], responses=errors(422), summary="List containers")
def list_containers(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                    server_id: ServerFilter = None, status: Filter | None = Query(None),
                    image: ImageFilter | None = Query(None)) -> Page[ContainerOut]:
    stmt = select(Container)
    if status:
        stmt = stmt.where(Container.status == status)
    if image:
        stmt = stmt.where(Container.image == image)
    return _page(session, principal, stmt, Container, params, {"name": Container.name}, lambda c, ref: ContainerOut(
        **_base(c, ref), container_id=c.container_id, name=c.name, image=c.image, status=c.status), server_id)


@router.get("/certificates", response_model=Page[CertificateOut], responses=errors(422), summary="List certificates")
def list_certificates(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                      server_id: ServerFilter = None,
                      q: Filter | None = Query(None, description="Path or subject contains"),
                      expiring_within_days: int | None = EXPIRING) -> Page[CertificateOut]:
    now = utcnow()
    stmt = select(Certificate)
    if expiring_within_days is not None:
        stmt = stmt.where(Certificate.not_after <= now + timedelta(days=expiring_within_days))
    if q:
        stmt = stmt.where(Certificate.path.contains(q, autoescape=True)
                          | Certificate.subject.contains(q, autoescape=True))
    return _page(session, principal, stmt, Certificate, params, {"path": Certificate.path},
                 lambda c, ref: CertificateOut(
                     **_base(c, ref), path=c.path, subject=c.subject, issuer=c.issuer, domains=list(c.domains or []),
                     not_after=c.not_after, days_until_expiry=_days_until(c.not_after, now.date())), server_id)


@router.get("/servers/{server_id}/changes", response_model=Page[ChangeOut], responses=errors(404, 422),
            summary="A server's discovery history", description="Newest first: what each snapshot added, changed "
                                                                "and removed, with the values before and after.")
def list_changes(server_id: IdPath, principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                 kind: Literal["service", "domain", "container", "certificate"] | None = Query(None),
                 action: Literal["added", "changed", "removed"] | None = Query(None)) -> Page[ChangeOut]:
    get_server(session, team_id=principal.team_id, server_id=server_id)
    stmt = select(InventoryChange).where(InventoryChange.server_id == server_id,
                                         InventoryChange.team_id == principal.team_id)
    if kind:
        stmt = stmt.where(InventoryChange.kind == kind)
    if action:
        stmt = stmt.where(InventoryChange.action == action)
    page = paginate(session, stmt, id_column=InventoryChange.id, params=params, default_sort="-id",
                    sortable={"created_at": InventoryChange.created_at})
    return page_of(page, lambda c: ChangeOut(id=c.id, kind=c.kind, action=c.action, key=c.key, before=c.before,
                                             after=c.after, created_at=c.created_at))
