"""The unauthenticated ping URLs (``/heartbeat/...``), served as a pure-ASGI endpoint: the token is the secret.

    GET|POST|HEAD /heartbeat/{token}[/start|/fail|/log|/{exit_status}]            (?rid=...)
    GET|POST|HEAD /heartbeat/{ping_key}/{slug}[/start|/fail|/log|/{exit_status}]  (?rid=...&create=1)

Pings are most of a cron monitor's traffic and each answer waits for its commit, so they skip FastAPI's
routing and dependencies: this middleware runs inside ApiGuard (request id, the per-IP limit) and answers
every ``/heartbeat/`` path itself, in plain text: ``200 OK``, ``404 not found`` (unknown token or slug, a
malformed token, an exit status outside 0-255), ``400`` (a bad ``rid``), ``403`` (``?create=1`` beyond the
plan's heartbeat limit), ``405`` (another method), ``429`` (HOSTATLAS_PING_RATE_LIMIT per heartbeat, with
Retry-After), ``503`` (the database is down: nothing was stored; retry). A ping that the database refuses
alone is set aside in the quarantine and answered 200 (it is kept durably and replayable).
Bodies: the first HOSTATLAS_PING_BODY_BYTES are kept as bytes, the rest is read and dropped (ApiGuard's
body cap does not apply here), so a huge job output still counts as a ping.

Two segments are a token and a suffix when the second is ``start``, ``fail``, ``log`` or a number, and
a ping key and a slug otherwise (no slug is one of those words: the REST service refuses them). An exit
status outside 0-255 (or not a number where one is expected) is 404: no such ping URL.

The client address is ``scope["client"]``: ``hostatlas serve`` lets uvicorn rewrite it from the proxy
headers of HOSTATLAS_TRUSTED_PROXIES only, as for every other route.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from hostatlas import tokens
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import PlanLimitReached
from hostatlas.heartbeats import pings
from hostatlas.heartbeats.models import PingKind
from hostatlas.heartbeats.pings import Ping, PingOutcome, PingWriter, Target, TargetCache
from hostatlas.http import runtime
from hostatlas.http.asgi import header, send_body
from hostatlas.http.ratelimit import RateLimiter
from hostatlas.settings import Settings

log = structlog.get_logger(__name__)

PREFIX = "/heartbeat/"
METHODS = frozenset({"GET", "POST", "HEAD"})
SUFFIXES = {"start": PingKind.START, "fail": PingKind.FAIL, "log": PingKind.LOG}
MAX_RID = 64
MAX_USER_AGENT = 255
MAX_REMOTE_ADDR = 45
# A body beyond the kept bytes is read and thrown away (the ping still counts) up to this much; past it
# the rest is left unread and the connection is not reused.
DRAIN_LIMIT = 64 << 20


class Pings:
    """The ping URLs' long-lived parts: the target cache, the group-commit writer, the per-heartbeat limit."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.cache = TargetCache()
        self.writer = PingWriter(db, public_url=settings.public_url, cache=self.cache)
        # In-process always, even with Redis: a runaway job is stopped where it lands, without a round trip.
        self.limiter = RateLimiter(settings.ping_rate_limit)


@dataclass(frozen=True)
class Address:
    """What a ping path names: a token or (ping key, slug), and what kind of ping it is."""

    token: str | None
    ping_key: str | None
    slug: str | None
    kind: PingKind
    exit_status: int | None = None


def parse_path(path: str) -> Address | None:
    parts = path[len(PREFIX):].split("/")
    if len(parts) == 1:
        return Address(parts[0], None, None, PingKind.SUCCESS)
    if len(parts) == 2 and (parts[1] in SUFFIXES or parts[1].isdigit()):
        kind = _suffix(parts[1])
        return None if kind is None else Address(parts[0], None, None, *kind)
    if len(parts) in (2, 3):
        kind = _suffix(parts[2]) if len(parts) == 3 else (PingKind.SUCCESS, None)
        return None if kind is None else Address(None, parts[0], parts[1], *kind)
    return None


def _suffix(text: str) -> tuple[PingKind, int | None] | None:
    if text in SUFFIXES:
        return SUFFIXES[text], None
    if text.isascii() and text.isdigit() and len(text) <= 3 and int(text) <= 255:
        status = int(text)
        return (PingKind.SUCCESS if status == 0 else PingKind.FAIL), status
    return None


class PingEndpoints:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        status, text, headers = await self._serve(scope, receive)
        await _answer(send, status, text, headers)

    async def _serve(self, scope: Scope, receive: Receive) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        method = scope["method"]
        if method not in METHODS:
            return 405, "method not allowed", [(b"allow", b"GET, POST, HEAD")]
        address = parse_path(scope["path"])
        if address is None:
            return 404, "not found", []
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        rid = query.get("rid", [None])[0] or None
        if rid is not None and (len(rid) > MAX_RID or not rid.isprintable()):
            return 400, f"rid must be at most {MAX_RID} printable characters", []
        part = runtime.of_scope(scope).part(Pings)
        try:
            found = await _resolve(part, address, create=query.get("create", [""])[0] in ("1", "true"))
        except Exception:  # the lookup's database is down: a client retries (curl --retry) on a 503
            log.exception("ping_lookup_failed")
            return 503, "unavailable, try again", [(b"retry-after", b"5")]
        if isinstance(found, str):
            return (403, found, []) if found != "not found" else (404, found, [])
        target, check = found
        decision = await part.limiter.hit(f"hb:{target.heartbeat_id}")
        if not decision.allowed:
            return 429, "too many pings", [(b"retry-after", str(decision.retry_after).encode())]
        body = await _read_capped(receive, part.settings.ping_body_bytes) if method == "POST" else (b"", False)
        if body is None:
            return 400, "client went away", []  # nobody reads this answer
        client = scope.get("client")
        ping = Ping(target=target, check=check, kind=address.kind, at=utcnow(), method=method,
                    exit_status=address.exit_status, rid=rid,
                    remote_addr=client[0][:MAX_REMOTE_ADDR] if client else None,
                    user_agent=_clean(header(scope, b"user-agent")), body=body[0], body_truncated=body[1])
        outcome = await part.writer.submit(ping)
        if outcome is PingOutcome.NOT_FOUND:
            return 404, "not found", []
        if outcome is PingOutcome.UNAVAILABLE:
            return 503, "unavailable, try again", [(b"retry-after", b"5")]
        return 200, "OK", []


async def _resolve(part: Pings, address: Address, *, create: bool) -> tuple[Target, tuple[str, str]] | str:
    """The heartbeat a ping address names, from the cache or with one query; a text when there is none."""
    if address.token is not None:
        if not pings.is_token(address.token):
            return "not found"  # not a token at all: no query
        check = ("token", tokens.hash_token(address.token))
    else:
        assert address.ping_key is not None and address.slug is not None
        if not pings.PING_KEY_PATTERN.match(address.ping_key) or not pings.SLUG.match(address.slug):
            return "not found"
        check = ("slug", f"{address.ping_key}/{address.slug}")
    key = pings.cache_key(check)
    target = part.cache.get(key)
    if target is not None:
        return target, check
    if part.cache.recently_missing(key) and not create:
        return "not found"
    if check[0] == "token":
        target = await run_in_threadpool(pings.find_by_token, part.db, check[1])
    else:
        by_slug = await _by_slug(part, address, create=create)
        if isinstance(by_slug, str):
            return by_slug
        target = by_slug
    part.cache.remember(key, target)
    return (target, check) if target is not None else "not found"


async def _by_slug(part: Pings, address: Address, *, create: bool) -> Target | None | str:
    assert address.ping_key is not None and address.slug is not None
    found = await run_in_threadpool(pings.find_by_slug, part.db, address.ping_key, address.slug)
    if found.target is not None or found.team_id is None or not (create and found.ping_create):
        return found.target
    try:
        return await run_in_threadpool(lambda: pings.create_on_ping(part.db, found.team_id or 0, address.slug or "",
                                                                    now=utcnow()))
    except PlanLimitReached:
        return "heartbeat limit of the plan reached"


async def _read_capped(receive: Receive, keep: int) -> tuple[bytes, bool] | None:
    """The first ``keep`` bytes of the body and whether there was more; the rest is read and dropped."""
    chunks: list[bytes] = []
    kept = seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if kept < keep:
            chunks.append(chunk[:keep - kept])
            kept += len(chunks[-1])
        if not message.get("more_body", False) or seen > DRAIN_LIMIT:
            return b"".join(chunks), seen > keep


def _clean(value: str | None) -> str | None:
    # PostgreSQL refuses NUL in text; a user agent is only ever shown.
    return value.replace("\x00", "")[:MAX_USER_AGENT] if value else None


async def _answer(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    await send_body(send, status, text.encode(), b"text/plain; charset=utf-8", [(b"cache-control", b"no-store"),
                                                                                *headers])
