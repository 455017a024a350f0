"""A server's log panel: ``GET /servers/{id}/logs?q=&cursor=``, the lines the search finds, newest first, and a
"load older" button that fetches the next page. The same search as ``GET /api/v1/logs?server_id=`` (one call of
``telemetry.query.service.search_logs``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from hostatlas.clock import now_unix
from hostatlas.dashboard.rendering import render
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.types import IdPath, Storable
from hostatlas.servers import service as servers
from hostatlas.telemetry.query import service as telemetry
from hostatlas.telemetry.query.params import LogParams
from hostatlas.telemetry.runtime import Telemetry

router = APIRouter(route_class=PageRoute, include_in_schema=False)
LOG_PAGE = 50
SearchText = Annotated[str, StringConstraints(max_length=500), Storable]
Cursor = Annotated[str, StringConstraints(max_length=1024), Storable]


def log_page(request: Request, session: Session, viewer: Viewer, server_id: int, q: str | None,
             cursor: str | None) -> dict[str, Any]:
    """The context of the log lines fragment: one page of the search."""
    params = LogParams(server_ids=[server_id], text=q or None, levels=None, source=None, start=None, end=None,
                       per_page=LOG_PAGE, cursor=cursor)
    found = telemetry.search_logs(session, runtime.current(request).part(Telemetry).caught_up,
                                  team_id=viewer.team_id, params=params, now=now_unix())
    return {"logs": found.items, "total": found.total, "next_cursor": found.next_cursor, "q": q or "",
            "server_id": server_id, "more": cursor is not None}


@router.get("/servers/{server_id}/logs")
def server_logs(server_id: IdPath, request: Request, session: DbSession,
                q: SearchText | None = Query(None), cursor: Cursor | None = Query(None),
                viewer: Viewer = Depends(reader("logs:read"))) -> Response:
    servers.get_server(session, team_id=viewer.team_id, server_id=server_id)  # another team's: 404
    return render(request, "servers/log_lines.html", log_page(request, session, viewer, server_id, q, cursor))
