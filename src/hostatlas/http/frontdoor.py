"""Front doors: path prefixes answered by their own ASGI app, ahead of the whole middleware stack.

Every layer of the stack (Starlette's error middleware, FastAPI's own, ApiGuard, request metrics) costs
each request an extra call and a ``send`` wrapper. For the busiest unauthenticated URLs that is a large
share of their cost, so the composition may hand such a prefix to an app that does what those layers
would have done itself (request id, rate-limit headers, counting, a plain 500). This module knows no
feature: the composition says which prefix goes to which app. Everything else goes through the stack
exactly as before; lifespan and websocket scopes always do.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class FrontDoorApp(FastAPI):
    """A FastAPI app that first sends ``http`` requests under a front door's prefix to that door's app.

    Checked in ``__call__``, ahead of FastAPI's own per-request work (its telemetry hook reads the
    environment on every request) as well as of the middleware stack.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front_doors: list[tuple[str, ASGIApp]] = []
        self._prefixes: tuple[str, ...] = ()  # one str.startswith for the common miss

    def add_front_door(self, prefix: str, door: ASGIApp) -> None:
        """Answer ``http`` requests whose path starts with ``prefix`` by ``door``, before any middleware."""
        if self.middleware_stack is not None:
            raise RuntimeError("Cannot add a front door after the application has started")
        self.front_doors.append((prefix, door))
        self._prefixes = tuple(known for known, _ in self.front_doors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._prefixes):
            scope["app"] = self
            for prefix, door in self.front_doors:
                if scope["path"].startswith(prefix):
                    await door(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)
