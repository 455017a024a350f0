"""``/api/v1/events``: the team's event feed, for dashboards and for consumers catching up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Security
from pydantic import StringConstraints

from hostatlas.apikeys.auth import Principal, authenticated
from hostatlas.events import service
from hostatlas.events.models import Event
from hostatlas.events.schemas import EventOut
from hostatlas.http.deps import DbSession
from hostatlas.http.docs import errors
from hostatlas.http.pagination import ListParams, Page, list_params, page_of, paginate
from hostatlas.http.types import CountQuery, IdQuery, Storable, TimestampIn

router = APIRouter(prefix="/api/v1/events", tags=["Events"])

Reader = Annotated[Principal, Security(authenticated, scopes=["servers:read"])]
EventType = Annotated[str, StringConstraints(max_length=64), Storable]


@router.get("", response_model=Page[EventOut], responses=errors(422), summary="List events",
            description="Newest first by default. To catch up after downtime, page with `sort=id` from the "
                        "last id you processed (`after_id`), following `next_cursor`.")
def list_events(principal: Reader, session: DbSession, params: ListParams = Depends(list_params),
                type: list[EventType] | None = Query(None, max_length=50,
                                                     description="Event type(s), e.g. server.offline"),
                server_id: IdQuery | None = Query(None),
                after_id: CountQuery | None = Query(None, description="Only events with a larger id"),
                since: TimestampIn | None = Query(None, description="Created at or after (ISO-8601)"),
                until: TimestampIn | None = Query(None, description="Created before (ISO-8601)")) -> Page[EventOut]:
    stmt = service.listing(principal.team_id, types=type, server_id=server_id, after_id=after_id, since=since,
                           until=until)
    page = paginate(session, stmt, id_column=Event.id, params=params, sortable={"created_at": Event.created_at})
    return page_of(page, EventOut.of)
