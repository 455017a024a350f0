"""Who is looking at a dashboard page: the signed-in user, in one team, with that role's API scopes.

Pages authorise exactly as the API does: ``Viewer.principal`` is an ``apikeys.auth.Principal`` whose scopes come
from ``users.service.scopes_of(role)``, and every domain call is given ``principal.team_id``. ``writer(scope)``
guards every form post: the CSRF token first, then the scope (403 either way).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Depends, Request

from hostatlas.apikeys.auth import Principal
from hostatlas.dashboard.sessions import CSRF_FIELD, CSRF_HEADER, SessionCodec
from hostatlas.errors import PermissionDenied
from hostatlas.http import runtime
from hostatlas.http.deps import SAFE_METHODS, DbSession
from hostatlas.users import service as users
from hostatlas.users.models import Role


class SignInRequired(Exception):
    """No honoured session: pages answer with the sign-in page (the route class turns this into a redirect)."""


@dataclass(frozen=True)
class TeamChoice:
    id: int
    slug: str
    name: str
    role: Role


@dataclass(frozen=True)
class Viewer:
    user_id: int
    email: str
    team: TeamChoice
    teams: tuple[TeamChoice, ...]  # every team the user belongs to, for the switcher
    principal: Principal
    plan: str

    def can(self, scope: str) -> bool:
        return self.principal.can(scope)

    @property
    def team_id(self) -> int:
        return self.principal.team_id


def codec_of(request: Request) -> SessionCodec:
    return runtime.current(request).part(SessionCodec)


def signed_in(request: Request, session: DbSession) -> Viewer:
    data = codec_of(request).decode(request.cookies.get("hostatlas_session"))
    if data is None:
        raise SignInRequired
    user = users.session_user(session, data.user_id, datetime.fromtimestamp(data.issued_at, UTC))
    if user is None:
        raise SignInRequired
    choices = []
    plans = {}
    for membership, team in users.memberships(session, user.id):
        choices.append(TeamChoice(team.id, team.slug, team.name, Role(membership.role)))
        plans[team.id] = team.plan
    # The session's team, or (removed from it since) the first team left; none left: signed out.
    current = next((c for c in choices if c.id == data.team_id), choices[0] if choices else None)
    if current is None:
        raise SignInRequired
    principal = Principal(team_id=current.id, scopes=tuple(users.scopes_of(current.role)),
                          actor=f"user:{user.id}:{user.email}")
    viewer = Viewer(user.id, user.email, current, tuple(choices), principal, plans[current.id])
    request.state.viewer = viewer  # the error page shows the navigation when it can
    return viewer


async def csrf_checked(request: Request) -> None:
    """A state-changing request must carry the token of its CSRF cookie, as a form field or a header."""
    if request.method in SAFE_METHODS:
        return
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not codec_of(request).csrf_valid(request.cookies.get("hostatlas_csrf"), token):
        raise PermissionDenied("csrf_failed", "This form has expired or did not come from this site: reload the "
                                              "page and try again")


def reader(scope: str) -> Callable[[Viewer], Viewer]:
    """A page that shows ``scope``'s data."""

    def dependency(viewer: Viewer = Depends(signed_in)) -> Viewer:
        if not viewer.can(scope):
            raise PermissionDenied("missing_scope", f"Your role ({viewer.team.role}) cannot see this page")
        return viewer

    return dependency


def writer(scope: str) -> Callable[..., Awaitable[Viewer]]:
    """A form post that changes ``scope``'s data: CSRF-checked, then authorised like an API key with the role's
    scopes would be."""

    async def dependency(request: Request, viewer: Viewer = Depends(signed_in)) -> Viewer:
        await csrf_checked(request)
        if not viewer.can(scope):
            raise PermissionDenied("missing_scope", f"Your role ({viewer.team.role}) cannot change this")
        return viewer

    return dependency
