"""``PageRoute``: the route class of every dashboard page, so that no page can forget what they all need.

- Before the handler: the CSRF cookie (made on a first visit, before sign-in, so the sign-in form has a token).
- Errors become pages, never JSON or a stack trace: not signed in -> the sign-in page (``HX-Redirect`` for htmx);
  a domain error or invalid parameter -> an error page with the API's status (403, 404, 409, 422...).
- After: the CSRF cookie if new, ``Server-Timing`` (the handler's time), and the security headers (CSP without
  inline code, no framing, no caching).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostatlas import errors
from hostatlas.dashboard.rendering import PAGE_HEADERS, render
from hostatlas.dashboard.sessions import CSRF_COOKIE, new_csrf_cookie
from hostatlas.dashboard.viewer import SignInRequired
from hostatlas.http import runtime
from hostatlas.http.errors import STATUS_BY_ERROR

log = structlog.get_logger(__name__)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def secure_cookies(request: Request) -> bool:
    return runtime.current(request).settings.public_url.startswith("https://")


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/login" if target in ("/", "/login") else f"/login?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    if request.headers.get("hx-request"):
        # A fragment request (a live refresh, a form): the page shows the message where the fragment would go.
        return render(request, "partials/error.html", {"title": title, "message": message}, status=status)
    return render(request, "error.html", {"status": status, "title": title, "message": message}, status=status)


def _answer(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SignInRequired):
        return sign_in_redirect(request)
    if isinstance(exc, errors.DomainError):
        status = next(code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind))
        titles = {403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Invalid input", 503: "Unavailable"}
        detail = "; ".join(f"{p.field}: {p.message}" for p in exc.fields)
        return error_page(request, status, titles.get(status, "Error"),
                          f"{exc.message}{': ' + detail if detail else ''}")
    if isinstance(exc, RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(part) for part in p.get('loc', ())[1:])}: {p.get('msg', 'invalid')}"
                           for p in exc.errors())
        return error_page(request, 422, "Invalid input", detail or "The request has invalid fields")
    assert isinstance(exc, StarletteHTTPException)
    return error_page(request, exc.status_code, "Error", str(exc.detail))


class PageRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            existing = request.cookies.get(CSRF_COOKIE)
            fresh = None if existing and len(existing) <= 64 else new_csrf_cookie()
            request.state.csrf_cookie = existing if fresh is None else fresh
            started = time.perf_counter()
            try:
                response = await handler(request)
            except (SignInRequired, errors.DomainError, RequestValidationError, StarletteHTTPException) as exc:
                response = _answer(request, exc)
            # What the page cost the server, for the browser's devtools and bench/dashboard.py.
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            if fresh is not None:
                response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/",
                                    secure=secure_cookies(request))
            for name, value in PAGE_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return page_handler
