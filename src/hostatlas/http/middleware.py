"""One pure-ASGI middleware for what every API response needs, errors included.

It assigns the request id, applies the rate limit, refuses bodies that are too large or not JSON,
catches anything unhandled as an enveloped 500, and stamps the headers on every response. A body
guard's ``HttpError`` (the size cap counted as bytes arrive) that escapes the app before it answered
is answered as that error: middleware that reads the body itself (the agent fast path) need not
catch it.
"""

from __future__ import annotations

import random
import re

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostatlas import tokens
from hostatlas.http.asgi import header, send_json
from hostatlas.http.errors import HttpError, envelope, internal_error_body
from hostatlas.http.ratelimit import BEARER_PREFIXES, KnownCheck, RateLimiter, identity_for

log = structlog.get_logger(__name__)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Heartbeat pings never get here: they are answered ahead of the stack (heartbeats/ping_routes.py), with
# the same request id rule, their own limits, and a body cap of their own (a huge job output still counts).
LIMITED_PREFIX = "/api/"


def new_request_id() -> str:
    """A fresh request id. Not a secret (it only ties a client's report to the logs), so it comes from the
    random module, which costs no system call; the module reseeds itself in forked workers."""
    return f"req_{random.getrandbits(80):020x}"


def request_id_for(scope: Scope) -> str:
    """The client's X-Request-Id when it is well formed, else a fresh one: the one rule for every answer."""
    incoming = header(scope, b"x-request-id")
    return incoming if incoming and REQUEST_ID_PATTERN.match(incoming) else new_request_id()


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and
                                                media_type.endswith("+json"))


class ApiGuard:
    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, known: KnownCheck, max_body_bytes: int,
                 json_only_prefix: str = "/api/") -> None:
        self.app = app
        self.limiter = limiter
        self.known = known
        self.max_body_bytes = max_body_bytes
        self.json_only_prefix = json_only_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        extra_headers = [(b"x-request-id", request_id.encode())]

        path: str = scope["path"]
        if path.startswith(LIMITED_PREFIX):
            client = scope.get("client")
            # Hashed once here; the check-in fast path reads it from the scope instead of hashing again.
            bearer = tokens.recognise_bearer(header(scope, b"authorization"), BEARER_PREFIXES)
            scope["state"]["bearer"] = bearer
            decision = await self.limiter.hit(identity_for(bearer, client[0] if client else None, self.known))
            extra_headers += decision.headers()
            if not decision.allowed:
                await self._refuse(send, extra_headers, 429, "rate_limited",
                                   f"Rate limit of {decision.limit} requests exceeded; retry after "
                                   f"{decision.retry_after} s", request_id)
                return
        refusal = self._check_body(scope, path)
        if refusal is not None:
            await self._refuse(send, extra_headers, *refusal, request_id)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", [])) + extra_headers
            await send(message)

        try:
            await self.app(scope, self._counting_receive(receive), send_with_headers)
        except HttpError as error:
            if started:
                raise
            await self._refuse(send, extra_headers, error.status_code, error.code, str(error.detail), request_id)
        except ClientDisconnect:
            # The client left before its body arrived (asgi.read_body, or a route's request.body()): nobody is left to
            # answer and nothing was stored, so this is not an error to trace. Agents retry the batch elsewhere.
            log.info("client_disconnected", request_id=request_id, path=path, method=scope["method"])
        except Exception:
            log.exception("unhandled_error", request_id=request_id, path=path, method=scope["method"])
            if started:
                raise
            await send_json(send, 500, internal_error_body(request_id), extra_headers)

    def _check_body(self, scope: Scope, path: str) -> tuple[int, str, str] | None:
        if scope["method"] not in BODY_METHODS:
            return None
        length_header = header(scope, b"content-length")
        has_body = header(scope, b"transfer-encoding") is not None or (length_header not in (None, "0"))
        if not has_body:
            return None
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                return 400, "bad_request", "Content-Length is not a number"
            if length > self.max_body_bytes:
                return 413, "payload_too_large", f"The body exceeds {self.max_body_bytes} bytes"
        if path.startswith(self.json_only_prefix) and not _is_json(header(scope, b"content-type") or ""):
            return 415, "unsupported_media_type", "Send the body as application/json"
        return None

    def _counting_receive(self, receive: Receive) -> Receive:
        """Enforce the size cap on the bytes actually received, whatever Content-Length claimed."""
        received = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HttpError(413, "payload_too_large", f"The body exceeds {limit} bytes")
            return message

        return wrapped

    async def _refuse(self, send: Send, headers: list[tuple[bytes, bytes]], status: int, code: str,
                      message: str, request_id: str) -> None:
        await send_json(send, status, envelope(status, code, message, request_id), headers)

