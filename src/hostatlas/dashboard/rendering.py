"""Templates to HTML responses: one Jinja2 environment, the context every page gets, and the page's headers.

Every page extends ``base.html`` (navigation, team switcher, sign-out). ``render`` passes the viewer, the CSRF token
for forms (``{{ csrf_field() }}``) and the refresh interval of live parts. Times are rendered as
``<time datetime=...>`` in UTC and shown in the viewer's time zone by ``static/app.js``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pydantic import BaseModel, ValidationError

from hostatlas.dashboard.sessions import CSRF_FIELD, SessionCodec
from hostatlas.errors import FieldProblem, InvalidInput
from hostatlas.http import runtime

Model = TypeVar("Model", bound=BaseModel)
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

# No inline script or style anywhere: the dashboard's own files and the vendored libraries only.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


@cache
def _asset_version(name: str) -> str:
    """A content hash in each asset's URL: browsers may cache them for good, and see a change at once."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/static/{name}?v={_asset_version(name)}"


def when(moment: datetime | None, style: str = "datetime") -> Markup:
    """A time the viewer's browser shows in their zone; ``style``: datetime, date or relative ("3 min ago")."""
    if moment is None:
        return Markup('<span class="muted">never</span>')
    iso = moment.isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{0}" data-style="{1}" title="{0}">{2}</time>').format(
        iso, style, moment.strftime("%Y-%m-%d %H:%M UTC"))


def duration(seconds: float | None) -> str:
    """A span in its two largest units: ``86400`` -> ``1 d``, ``5400`` -> ``1 h 30 min``, ``42`` -> ``42 s``,
    ``1.5`` -> ``1.5 s``; ``None`` -> ``–``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    return " ".join([f"{value} {unit}" for value, unit in parts if value][:2])


def query_with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (None removes one): filters and pagers keep the rest."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    params += [(k, str(v)) for k, v in changes.items() if v is not None]
    return f"{request.url.path}?{urlencode(params)}" if params else request.url.path


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(static_url=static_url, when=when, duration=duration)
    return env


ENVIRONMENT = _environment()


def csrf_token(request: Request) -> str:
    return runtime.current(request).part(SessionCodec).csrf_token(request.state.csrf_cookie)


def render(request: Request, template: str, context: Mapping[str, Any] | None = None, *,
           status: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    token = csrf_token(request)
    settings = runtime.current(request).settings
    full = {
        "request": request,
        "viewer": getattr(request.state, "viewer", None),
        "csrf_token": token,
        "csrf_field": lambda: Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token),
        "query_with": lambda **changes: query_with(request, **changes),
        "refresh_seconds": settings.dashboard_refresh,
        "public_url": settings.public_url.rstrip("/"),
        **(context or {}),
    }
    html = ENVIRONMENT.get_template(template).render(full)
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def validated(model: type[Model], data: Mapping[str, Any]) -> Model:
    """The API's request model over a form's fields, its problems raised as the ``InvalidInput`` the services
    raise: a form shows both kinds the same way (``field_errors``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput([FieldProblem(".".join(str(part) for part in error["loc"]), error["type"],
                                         error["msg"].removeprefix("Value error, "))
                            for error in exc.errors()]) from None


def field_errors(error: InvalidInput) -> dict[str, str]:
    """A validation error as {form field: message} (the first problem of each field; ``scopes.0`` is
    ``scopes``), for a form shown again with its problems."""
    errors: dict[str, str] = {}
    for problem in error.fields:
        errors.setdefault(problem.field.split(".")[0], problem.message)
    return errors or {"": error.message}
