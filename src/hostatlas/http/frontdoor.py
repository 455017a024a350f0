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


class FrontDoors:
    """Send ``http`` requests under one of ``doors``' prefixes to that prefix's app, the rest to ``app``."""

    def __init__(self, app: ASGIApp, doors: tuple[tuple[str, ASGIApp], ...]) -> None:
        self.app = app
        self.doors = doors
        self.prefixes = tuple(prefix for prefix, _ in doors)  # one str.startswith for the common miss

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(self.prefixes):
                for prefix, door in self.doors:
                    if path.startswith(prefix):
                        await door(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class FrontDoorApp(FastAPI):
    """A FastAPI app whose built stack is wrapped in its front doors (none: the stack as FastAPI builds it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front_doors: list[tuple[str, ASGIApp]] = []

    def add_front_door(self, prefix: str, door: ASGIApp) -> None:
        """Answer ``http`` requests whose path starts with ``prefix`` by ``door``, before any middleware."""
        if self.middleware_stack is not None:
            raise RuntimeError("Cannot add a front door after the application has started")
        self.front_doors.append((prefix, door))

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return FrontDoors(stack, tuple(self.front_doors)) if self.front_doors else stack
