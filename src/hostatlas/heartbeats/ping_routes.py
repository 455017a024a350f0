"""The unauthenticated ping URLs (``/heartbeat/...``), served as a pure-ASGI front door: the token is the secret.

    GET|POST|HEAD /heartbeat/{token}[/start|/fail|/log|/{exit_status}]            (?rid=...)
    GET|POST|HEAD /heartbeat/{ping_key}/{slug}[/start|/fail|/log|/{exit_status}]  (?rid=...&create=1)

Pings are most of a cron monitor's traffic and each answer waits for its commit, so they skip FastAPI's
routing, dependencies and whole middleware stack: the composition hands the ``/heartbeat/`` prefix to
``PingEndpoints`` as a front door (``hostatlas.http.frontdoor``), and it answers every such path itself,
in plain text: ``200 OK``, ``404 not found`` (unknown token or slug, a malformed token, an exit status
outside 0-255), ``400`` (a bad ``rid``), ``403`` (``?create=1`` beyond the plan's heartbeat limit),
``405`` (another method), ``429`` (a rate limit, with Retry-After), ``503`` (the database is down:
nothing was stored; retry), and a plain ``500 internal error`` if anything unexpected raises (logged
with the request id; no internals in the answer). A ping that the database refuses alone is set aside
in the quarantine and answered 200 (it is kept durably and replayable).

What ApiGuard and RequestMetrics do for other routes it does itself, cheaply: every answer carries
X-Request-Id (the client's when well formed) and X-RateLimit-*; each request is counted in /metrics
under its OpenAPI template (``ROUTES``), method and status class.

Rate limits. A ping whose token or slug is in the in-memory target cache is charged only to its
heartbeat's budget (HOSTATLAS_PING_RATE_LIMIT, in-process), whose figures its headers show: many cron
jobs behind one NAT address must not share the API's per-address budget. Every other request (an
unknown or malformed token, the first ping of a heartbeat since start, ``?create=1`` of a new slug, a
wrong method) may cost a database lookup, so it is first charged to the client address's API budget
(HOSTATLAS_RATE_LIMIT, the limiter ApiGuard uses, shared through Redis when set) and refused with 429
beyond it: a flood of made-up tokens costs the database at most that many lookups per address.
Bodies: the first HOSTATLAS_PING_BODY_BYTES are kept as bytes, the rest is read and dropped (ApiGuard's
body cap does not apply here), so a huge job output still counts as a ping.

Two segments are a token and a suffix when the second is ``start``, ``fail``, ``log`` or a number, and
a ping key and a slug otherwise (no slug is one of those words: the REST service refuses them). An exit
status outside 0-255 (or not a number where one is expected) is 404: no such ping URL.

The client address is ``scope["client"]``: ``hostatlas serve`` lets uvicorn rewrite it from the proxy
headers of HOSTATLAS_TRUSTED_PROXIES only, as for every other route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from hostatlas import tokens
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import PlanLimitReached
from hostatlas.heartbeats import pings
from hostatlas.heartbeats.models import PingKind
from hostatlas.heartbeats.pings import Ping, PingOutcome, PingWriter, Target, TargetCache
from hostatlas.http.asgi import header, send_body
from hostatlas.http.middleware import request_id_for
from hostatlas.http.ratelimit import Decision, RateLimiter, identity_for
from hostatlas.observability.requests import METHODS as LABELLED_METHODS
from hostatlas.observability.requests import STATUS_CLASSES, UNMATCHED, RequestStats
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
# The ping paths' templates in the OpenAPI document (ping_docs), by segment count: their /metrics labels.
ROUTES = ("/heartbeat/{token}", "/heartbeat/{token}/{suffix}", "/heartbeat/{token}/{suffix}/{action}")

Answer = tuple[int, str, list[tuple[bytes, bytes]]]


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


def route_of(path: str) -> str:
    """The template a ping path is counted under, as RequestMetrics would match it (no regex: by segments)."""
    segments = path[len(PREFIX):].split("/")
    return UNMATCHED if len(segments) > len(ROUTES) or "" in segments else ROUTES[len(segments) - 1]


def _check_of(address: Address) -> tuple[str, str] | None:
    """What identifies the heartbeat (a token hash or "<ping key>/<slug>"); None when it cannot name one."""
    if address.token is not None:
        return ("token", tokens.hash_token(address.token)) if pings.is_token(address.token) else None
    assert address.ping_key is not None and address.slug is not None
    if not pings.PING_KEY_PATTERN.match(address.ping_key) or not pings.SLUG.match(address.slug):
        return None
    return "slug", f"{address.ping_key}/{address.slug}"


def _anonymous(_bearer: tokens.Bearer) -> bool:
    return False  # a ping's credential is its URL: the client is charged by its address, as ApiGuard would


class PingEndpoints:
    """The ping front door: the whole answer to a ``/heartbeat/`` request, ahead of every middleware."""

    def __init__(self, part: Pings, *, api_limiter: RateLimiter, stats: RequestStats | None) -> None:
        self.part = part
        self.api_limiter = api_limiter  # ApiGuard's: pings that cost a lookup share the address's API budget
        self.stats = stats  # RequestMetrics' series; None when metrics are off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = request_id_for(scope)
        charged: list[Decision] = []  # the rate-limit decisions taken so far; the last one's figures are sent
        try:
            status, text, headers = await self._serve(scope, receive, charged)
        except Exception:
            log.exception("unhandled_error", request_id=request_id, path=scope["path"], method=scope["method"])
            status, text, headers = 500, "internal error", []
            if not charged:
                charged.append(await self._charge_client(scope))
        headers += charged[-1].headers()
        headers.append((b"x-request-id", request_id.encode()))
        try:
            await _answer(send, status, text, headers)
        finally:
            if self.stats is not None:
                method = scope["method"]
                self.stats.observe((method if method in LABELLED_METHODS else "OTHER", route_of(scope["path"]),
                                    STATUS_CLASSES.get(status // 100, "other")), time.perf_counter() - started)

    async def _serve(self, scope: Scope, receive: Receive, charged: list[Decision]) -> Answer:
        part = self.part
        method = scope["method"]
        address = parse_path(scope["path"])
        check = _check_of(address) if address is not None else None
        target = part.cache.get(pings.cache_key(check)) if check is not None and method in METHODS else None
        if target is None:  # this request may cost a lookup: the client address pays for it
            charged.append(await self._charge_client(scope))
            if not charged[-1].allowed:
                return 429, "too many requests", []
        if method not in METHODS:
            return 405, "method not allowed", [(b"allow", b"GET, POST, HEAD")]
        if address is None or check is None:
            return 404, "not found", []
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if target is None:
            try:
                found = await _resolve(part, address, check, create=query.get("create", [""])[0] in ("1", "true"))
            except Exception:  # the lookup's database is down: a client retries (curl --retry) on a 503
                log.exception("ping_lookup_failed")
                return 503, "unavailable, try again", [(b"retry-after", b"5")]
            if isinstance(found, str):
                return (403, found, []) if found != "not found" else (404, found, [])
            target = found
        charged.append(await part.limiter.hit(f"hb:{target.heartbeat_id}"))
        if not charged[-1].allowed:
            return 429, "too many pings", []
        rid = query.get("rid", [None])[0] or None
        if rid is not None and (len(rid) > MAX_RID or not rid.isprintable()):
            return 400, f"rid must be at most {MAX_RID} printable characters", []
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

    async def _charge_client(self, scope: Scope) -> Decision:
        client = scope.get("client")
        return await self.api_limiter.hit(identity_for(None, client[0] if client else None, _anonymous))


async def _resolve(part: Pings, address: Address, check: tuple[str, str], *, create: bool) -> Target | str:
    """The heartbeat a ping address names, not in the cache: one query (none if recently missing); a text
    when there is none."""
    key = pings.cache_key(check)
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
    return target if target is not None else "not found"


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
