"""What was discovered, across the team's servers: ``/api/v1/services``, ``/domains``, ``/containers``,
``/certificates``, and one server's change history, ``/api/v1/servers/{id}/changes``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.clock import utcnow
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.types import IdPath, IdQuery, Storable
from hostatlas.inventory import service
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, InventoryRow, Service
from hostatlas.inventory.schemas import CertificateOut, ChangeOut, ContainerOut, DomainOut, ServiceOut
from hostatlas.inventory.service import ChangeAction, ChangeKind
from hostatlas.servers.schemas import ServerRef

router = APIRouter(prefix="/api/v1", tags=["Inventory"])

Reader = Annotated[Principal, Security(authenticated, scopes=["servers:read"])]
Row = TypeVar("Row", bound=InventoryRow)
Out = TypeVar("Out")
ServerFilter = Annotated[IdQuery | None, Query(description="Only this server's")]
# Compared with stored text, so bounded by the column (a longer one could never match) and storable.
Filter = Annotated[str, StringConstraints(max_length=255), Storable]
ImageFilter = Annotated[str, StringConstraints(max_length=512), Storable]
EXPIRING = Query(None, ge=0, le=3650, description="Expiring within this many days (expired ones included)")


def _page(session: Session, stmt: Select[Row], id_column: InstrumentedAttribute[int], params: ListParams,
          sortable: dict[str, Any], render: Callable[[Row, ServerRef], Out]) -> Page[Out]:
    """A page of one kind, each item naming its server."""
    page = paginate(session, stmt, id_column=id_column, params=params, default_sort="id", sortable=sortable)
    servers = service.server_refs(session, page.rows)
    return page_of(page, lambda row: render(row, servers[row.server_id]))


@router.get("/services", response_model=Page[ServiceOut], responses=errors(422), summary="List services")
def list_services(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                  server_id: ServerFilter = None, name: Filter | None = Query(None),
                  status: Filter | None = Query(None, description="e.g. running, stopped")) -> Page[ServiceOut]:
    stmt = service.service_listing(principal.team_id, server_id=server_id, name=name, status=status)
    return _page(session, stmt, Service.id, params, {"name": Service.name, "updated_at": Service.updated_at},
                 ServiceOut.of)


@router.get("/domains", response_model=Page[DomainOut], responses=errors(422), summary="List domains")
def list_domains(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                 server_id: ServerFilter = None, name: Filter | None = Query(None),
                 expiring_within_days: int | None = EXPIRING,
                 reload_needed: bool | None = Query(None, description="Only those whose web server serves another "
                                                                      "certificate than the one on disk (or only "
                                                                      "those that do not)")) -> Page[DomainOut]:
    today = utcnow().date()
    stmt = service.domain_listing(principal.team_id, server_id=server_id, name=name,
                                  expiring_within_days=expiring_within_days, reload_needed=reload_needed, today=today)
    return _page(session, stmt, Domain.id, params, {"name": Domain.name, "updated_at": Domain.updated_at},
                 lambda domain, server: DomainOut.of(domain, server, today))


@router.get("/containers", response_model=Page[ContainerOut], responses=errors(422), summary="List containers")
def list_containers(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                    server_id: ServerFilter = None, status: Filter | None = Query(None),
                    image: ImageFilter | None = Query(None)) -> Page[ContainerOut]:
    stmt = service.container_listing(principal.team_id, server_id=server_id, status=status, image=image)
    return _page(session, stmt, Container.id, params, {"name": Container.name, "updated_at": Container.updated_at},
                 ContainerOut.of)


@router.get("/certificates", response_model=Page[CertificateOut], responses=errors(422), summary="List certificates")
def list_certificates(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                      server_id: ServerFilter = None,
                      q: Filter | None = Query(None, description="Path or subject contains"),
                      expiring_within_days: int | None = EXPIRING) -> Page[CertificateOut]:
    now = utcnow()
    stmt = service.certificate_listing(principal.team_id, server_id=server_id, q=q,
                                       expiring_within_days=expiring_within_days, now=now)
    return _page(session, stmt, Certificate.id, params,
                 {"path": Certificate.path, "updated_at": Certificate.updated_at},
                 lambda certificate, server: CertificateOut.of(certificate, server, now.date()))


@router.get("/servers/{server_id}/changes", response_model=Page[ChangeOut], responses=errors(404, 422),
            summary="A server's discovery history", description="Newest first: what each snapshot added, changed "
                                                                "and removed, with the values before and after.")
def list_changes(server_id: IdPath, principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                 kind: ChangeKind | None = Query(None), action: ChangeAction | None = Query(None)) -> Page[ChangeOut]:
    stmt = service.change_listing(session, principal.team_id, server_id=server_id, kind=kind, action=action)
    page = paginate(session, stmt, id_column=InventoryChange.id, params=params, default_sort="-id",
                    sortable={"created_at": InventoryChange.created_at})
    return page_of(page, ChangeOut.of)
