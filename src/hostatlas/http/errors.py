"""The one error envelope: every error the platform answers, whatever raised it, has this shape.

``{"error": {"code", "message", "status", "request_id", "fields"?}}``
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostatlas import errors
from hostatlas.pipelines.isolation import is_outage

log = structlog.get_logger(__name__)

# Seconds a client is asked to wait when the database is unreachable: a restart or a failover takes about that.
DATABASE_RETRY_AFTER = 5

STATUS_BY_ERROR: dict[type[errors.DomainError], int] = {
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.InvalidInput: 422,
    errors.MalformedBody: 400,
    errors.PlanLimitReached: 403,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.Unavailable: 503,
}

CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class HttpError(HTTPException):
    """An HTTP-level refusal raised below the router (body guards); FastAPI lets these through untouched."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status_code=status, detail=message)
        self.code = code


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def envelope(status: int, code: str, message: str, request_id: str,
             fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "status": status, "request_id": request_id}
    if fields is not None:
        body["fields"] = fields
    return {"error": body}


def error_response(request: Request, status: int, code: str, message: str,
                   fields: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(envelope(status, code, message, request_id_of(request), fields), status, headers)


def _field_name(location: tuple[int | str, ...]) -> str:
    # ("body", "scopes", 0) -> "scopes[0]"; ("query", "per_page") -> "per_page"
    parts = list(location[1:]) if location and location[0] in ("body", "query", "path", "header") else list(
        location
    )
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def _friendly(message: str) -> str:
    return message.removeprefix("Value error, ")


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(request, 400, "malformed_json", "The request body is not valid JSON")
    fields = [
        {"field": _field_name(tuple(problem.get("loc", ()))), "code": str(problem.get("type", "invalid")),
         "message": _friendly(str(problem.get("msg", "Invalid value")))}
        for problem in problems
    ]
    return error_response(request, 422, "validation_failed", "The request has invalid fields", fields)


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    status = next(code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind))
    fields = [{"field": p.field, "code": p.code, "message": p.message} for p in exc.fields] or None
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, errors.Unavailable) else None
    return error_response(request, status, exc.code, exc.message, fields, headers=headers)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = getattr(exc, "code", None) or CODE_BY_STATUS.get(status, "error")
    if status == 404 and not isinstance(exc, HttpError):
        message = "No such endpoint"
    elif status == 405:
        message = f"{request.method} is not allowed here"
    else:
        message = str(exc.detail)
    return error_response(request, status, code, message, headers=dict(exc.headers or {}))


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database is down, restarting or out of connections: a 503 the client may retry, not a 500.

    Nothing was committed (the request's one transaction failed), so a retry cannot apply anything twice.
    Any other database error is a bug, and goes on to the catch-all's 500."""
    if not is_outage(exc):
        raise exc
    log.warning("database_unavailable", error=type(exc).__name__, path=request.url.path,
                request_id=request_id_of(request))
    return error_response(request, 503, "unavailable", "The database is unavailable; retry shortly",
                          headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(errors.DomainError, _on_domain_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for outage in (DBAPIError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(outage, _on_database_error)


def internal_error_body(request_id: str) -> dict[str, Any]:
    return envelope(500, "internal_error", "Something went wrong on our side; quote the request id", request_id)
