"""``/team``: the team as a whole: plan and limits with what is used, the heartbeat ping key (with the
``ping_create`` switch of ``PATCH /api/v1/heartbeats/ping-settings``), the members and their roles, the agent
enrolment command, and the viewer's own account ("Log out everywhere", handled by signin.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from hostatlas.dashboard.rendering import render
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, signed_in, writer
from hostatlas.heartbeats import service as heartbeats
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession, WriteSession
from hostatlas.servers import service as server_service
from hostatlas.teams.models import Team
from hostatlas.users import service as users

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@dataclass(frozen=True)
class Usage:
    """What the team holds against its plan's limits (``Team.server_limit``, ``Team.heartbeat_limit``)."""

    servers: int
    heartbeats: int


def usage(session: Session, team_id: int) -> Usage:
    # The very counts the plan's limits are enforced on (servers.service.register, heartbeats.create_heartbeat).
    return Usage(server_service.count(session, team_id), heartbeats.count(session, team_id))


@router.get("/team")
def team_page(request: Request, session: WriteSession, viewer: Viewer = Depends(signed_in)) -> Response:
    # A write session, as GET /api/v1/heartbeats/ping-settings has: the ping key is made on first read.
    public_url = runtime.current(request).settings.public_url
    team = session.get(Team, viewer.team_id)
    assert team is not None  # the viewer is a member of it
    context: dict[str, Any] = {
        "team": team, "usage": usage(session, viewer.team_id), "ping": None,
        "members": users.team_members(session, viewer.team_id),
    }
    if viewer.can("heartbeats:read"):
        settings = heartbeats.ping_settings(session, team_id=viewer.team_id)
        assert settings.ping_key is not None
        context["ping"] = {"key": settings.ping_key, "create": settings.ping_create,
                           "template": heartbeats.slug_url_template(public_url, settings.ping_key)}
    return render(request, "team/team.html", context)


@router.post("/team/ping-settings")
def update_ping_settings(session: DbSession, viewer: Viewer = Depends(writer("heartbeats:write")),
                         ping_create: Annotated[bool, Form()] = False) -> Response:
    heartbeats.update_ping_settings(session, team_id=viewer.team_id, ping_create=ping_create)
    return RedirectResponse("/team#ping", status_code=303)
