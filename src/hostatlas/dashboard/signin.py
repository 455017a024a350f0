"""Signing in and out, the first-run page, and the team switcher.

- ``/setup`` is open only while no user exists, and only with the one-time token ``serve`` printed (or
  ``HOSTATLAS_SETUP_TOKEN``): whoever reaches the port first cannot take the install over. It makes the owner of
  team ``default``; after that, people are added with ``hostatlas user create``.
- Sign-in attempts are rate limited per client address and per (address, email), failed or not, through the same
  limiter as the API (shared through Redis when configured): a 429 page with ``Retry-After``.
- A wrong email and a wrong password get the same answer, in the same time (``users.service.authenticate``).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import StringConstraints

from hostatlas.clock import utcnow
from hostatlas.dashboard.rendering import render
from hostatlas.dashboard.routing import PageRoute, secure_cookies
from hostatlas.dashboard.sessions import SESSION_COOKIE, SessionCodec, SessionData
from hostatlas.dashboard.viewer import Viewer, csrf_checked, signed_in
from hostatlas.errors import InvalidInput, NotFound
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.ratelimit import RateLimiter
from hostatlas.http.types import Storable
from hostatlas.teams.models import DEFAULT_TEAM_SLUG
from hostatlas.teams.service import get_team_by_slug
from hostatlas.users import service as users
from hostatlas.users.models import Role

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Text = Annotated[str, StringConstraints(max_length=1024), Storable]


@dataclass
class SignInLimits:
    per_client: RateLimiter  # every attempt from one address
    per_account: RateLimiter  # attempts from one address at one email: the tighter one

    async def retry_after(self, client: str, email: str) -> int | None:
        """Seconds to wait when this attempt is one too many, else None (the attempt is counted)."""
        for limiter, identity in ((self.per_account, f"signin:{client}:{email.strip().lower()}"),
                                  (self.per_client, f"signin:{client}")):
            decision = await limiter.hit(identity)
            if not decision.allowed:
                return decision.retry_after
        return None


@dataclass(frozen=True)
class SetupToken:
    value: str | None  # None: no token was made (a user existed at start, or none was configured)

    def matches(self, given: str) -> bool:
        return self.value is not None and hmac.compare_digest(self.value.encode(), given.encode())


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str | None) -> str:
    """Only a path on this site: ``next=https://evil.example`` must not turn sign-in into an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


def start_session(request: Request, response: Response, *, user_id: int, team_id: int) -> Response:
    codec = runtime.current(request).part(SessionCodec)
    cookie = codec.encode(SessionData(user_id=user_id, team_id=team_id, issued_at=time.time()))
    response.set_cookie(SESSION_COOKIE, cookie, max_age=codec.max_age, httponly=True, samesite="lax", path="/",
                        secure=secure_cookies(request))
    return response


def _signed_out(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request))
    return response


@router.get("/login")
def login_page(request: Request, session: DbSession, next: Text | None = None) -> Response:
    if not users.any_user(session):
        return RedirectResponse("/setup", status_code=303)
    return render(request, "login.html", {"next": _safe_next(next), "email": ""})


@router.post("/login", dependencies=[Depends(csrf_checked)])
async def login(request: Request, session: DbSession, email: Annotated[Text, Form()] = "",
                password: Annotated[Text, Form()] = "", next: Annotated[Text, Form()] = "/") -> Response:
    limits = runtime.current(request).part(SignInLimits)
    wait = await limits.retry_after(_client(request), email)
    context = {"next": _safe_next(next), "email": email}
    if wait is not None:
        return render(request, "login.html", {**context, "error": f"Too many sign-in attempts: try again in "
                                                                  f"{wait} seconds."},
                      status=429, headers={"Retry-After": str(wait)})
    user = users.authenticate(session, email, password)
    if user is None:
        return render(request, "login.html", {**context, "error": "Wrong email or password."}, status=401)
    teams = users.memberships(session, user.id)
    if not teams:
        return render(request, "login.html", {**context, "error": "This account belongs to no team yet."},
                      status=403)
    return start_session(request, RedirectResponse(_safe_next(next), status_code=303),
                         user_id=user.id, team_id=teams[0][1].id)


@router.post("/logout", dependencies=[Depends(csrf_checked)])
def logout(request: Request) -> Response:
    return _signed_out(request)


@router.post("/logout-everywhere", dependencies=[Depends(csrf_checked)])
def logout_everywhere(request: Request, session: DbSession, viewer: Viewer = Depends(signed_in)) -> Response:
    users.log_out_everywhere(session, viewer.user_id, utcnow())
    return _signed_out(request)


@router.post("/switch-team", dependencies=[Depends(csrf_checked)])
def switch_team(request: Request, team_id: Annotated[int, Form(ge=1, le=2**53)],
                viewer: Viewer = Depends(signed_in)) -> Response:
    if all(choice.id != team_id for choice in viewer.teams):
        raise NotFound("Team", "team_not_found")
    return start_session(request, RedirectResponse("/", status_code=303), user_id=viewer.user_id, team_id=team_id)


@router.get("/setup")
def setup_page(request: Request, session: DbSession, token: Text = "") -> Response:
    if users.any_user(session):
        return RedirectResponse("/login", status_code=303)
    configured = runtime.current(request).part(SetupToken).value is not None
    return render(request, "setup.html", {"token": token, "email": "", "configured": configured})


@router.post("/setup", dependencies=[Depends(csrf_checked)])
async def setup(request: Request, session: DbSession, token: Annotated[Text, Form()] = "",
                email: Annotated[Text, Form()] = "", password: Annotated[Text, Form()] = "") -> Response:
    if users.any_user(session):
        return RedirectResponse("/login", status_code=303)
    wait = await runtime.current(request).part(SignInLimits).retry_after(_client(request), "setup")
    context = {"token": token, "email": email, "configured": True}
    if wait is not None:
        return render(request, "setup.html", {**context, "error": f"Too many attempts: try again in {wait} seconds."},
                      status=429, headers={"Retry-After": str(wait)})
    if not runtime.current(request).part(SetupToken).matches(token):
        return render(request, "setup.html", {**context, "token": "", "error": "That setup token is not the one "
                                              "serve printed."}, status=403)
    team = get_team_by_slug(session, DEFAULT_TEAM_SLUG)
    try:
        user, _ = users.create_user(session, email=email, password=password, team=team, role=Role.OWNER,
                                    now=utcnow())
    except InvalidInput as error:
        return render(request, "setup.html", {**context, "errors": {p.field: p.message for p in error.fields}},
                      status=422)
    return start_session(request, RedirectResponse("/", status_code=303), user_id=user.id, team_id=team.id)
