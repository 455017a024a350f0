"""Request counts and latencies by method, route template and status class, for ``/metrics``.

A pure-ASGI middleware, outermost, so it sees every answer (429s, ApiGuard's 500s, the agent fast
path's check-ins). It has to cost the fast path next to nothing: no lock and no prometheus-client
object per request, only a few list increments in ``RequestStats``. That is safe because requests
are counted on the event loop's one thread; a scrape (another thread) copies each list whole, which
the GIL makes atomic.

Labels stay bounded whatever clients send: an unknown method is ``OTHER`` and a path no route
matches is ``unmatched``; the route label is the template (``/api/v1/servers/{server_id}``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Collection

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds; the check-in fast path answers in well under a millisecond, a large query in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
STATUS_CLASSES = {number: f"{number}xx" for number in range(1, 6)}

Key = tuple[str, str, str]  # method, route, status class


class RequestStats:
    def __init__(self) -> None:
        # key -> one count per bucket (non-cumulative, +Inf last), then the sum of seconds
        self._series: dict[Key, list[float]] = {}

    def observe(self, key: Key, seconds: float) -> None:
        counts = self._series.get(key)
        if counts is None:
            counts = self._series[key] = [0.0] * (len(BUCKETS) + 2)
        counts[bisect_left(BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def snapshot(self) -> list[tuple[Key, list[float]]]:
        return [(key, list(counts)) for key, counts in list(self._series.items())]


class RequestMetrics:
    def __init__(self, app: ASGIApp, *, stats: RequestStats) -> None:
        self.app = app
        self.stats = stats
        self._templates: _Templates | None = None  # built when first needed, once every route exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            method = scope["method"]
            route = scope.get("route")
            self.stats.observe((method if method in METHODS else "OTHER",
                                self._template(scope) if route is None else getattr(route, "path", UNMATCHED),
                                STATUS_CLASSES.get(status // 100, "other")), time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        """The router leaves the matched route in the scope, except for requests answered before routing
        (the agent fast path, refusals) or routed with a copy of the scope (a decompressed body): those
        are matched here against the templates of the OpenAPI document."""
        if self._templates is None:
            self._templates = _Templates(scope["app"].openapi()["paths"])
        return self._templates.match(scope["path"])


class _Templates:
    def __init__(self, templates: Collection[str]) -> None:
        self.static = {template: template for template in templates if "{" not in template}
        self.patterns = [(compile_path(template)[0], template) for template in templates if "{" in template]

    def match(self, path: str) -> str:
        static = self.static.get(path)
        if static is not None:
            return static
        return next((template for pattern, template in self.patterns if pattern.match(path)), UNMATCHED)
