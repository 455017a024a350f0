"""The process's long-lived parts: built once by ``create_app``, handed to handlers through one dependency.

Core parts (settings, database, pipeline health, known API keys) are typed attributes. Features add
their own parts (the check-in buffer, the telemetry runtime...) by type, and read them back by type:
``runtime.part(CheckinBuffer)`` is a ``CheckinBuffer`` to mypy. That way this core module never imports
a feature, yet no handler reads an untyped ``app.state`` attribute: ``of`` is the one place that does.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.types import Scope

from hostatlas.db.engine import Database
from hostatlas.http.ratelimit import KnownKeys
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.settings import Settings

Part = TypeVar("Part")


class Runtime:
    def __init__(self, settings: Settings, db: Database, *, owns_db: bool) -> None:
        self.settings = settings
        self.db = db
        self.owns_db = owns_db  # whether stopping the app disposes of the database's engines
        self.health = PipelineHealth()  # every pipeline reports its passes here; /readyz and /metrics read it
        self.known_keys = KnownKeys()  # API keys that authenticated here: they get rate-limit budgets of their own
        self._parts: dict[type, object] = {}

    def add(self, part: object) -> None:
        """Hold ``part`` for the app's life, found again by its type (one part per type)."""
        self._parts[type(part)] = part

    def part(self, kind: type[Part]) -> Part:
        found = self._parts.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"this runtime holds no {kind.__name__} (is the app started?)")
        return found


def of(app: Any) -> Runtime:
    """The runtime ``create_app`` attached to ``app`` (a FastAPI or Starlette application)."""
    runtime: Runtime = app.state.runtime
    return runtime


def of_scope(scope: Scope) -> Runtime:
    """The runtime, from inside a pure-ASGI middleware."""
    return of(scope["app"])


def current(request: Request) -> Runtime:
    return of(request.app)


# Handlers that need a long-lived part take ``runtime: AppRuntime`` and ask it for the part.
AppRuntime = Annotated[Runtime, Depends(current)]
