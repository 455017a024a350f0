"""The application factory: settings in, a FastAPI app with every feature's routes out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline.core import _STATIC_PATH as SWAGGER_ASSETS
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hostatlas import __version__, jobs, secretbox, tokens
from hostatlas.agentapi.fastpath import AgentFastPath
from hostatlas.agentapi.routes import router as agent_router
from hostatlas.agentconfig.routes import router as agent_config_router
from hostatlas.alerts.routes import router as alert_rules_router
from hostatlas.apikeys.routes import router as api_keys_router
from hostatlas.apikeys.usage import KeyUsageTracker
from hostatlas.dashboard import site as dashboard
from hostatlas.db.engine import Database
from hostatlas.events.routes import router as events_router
from hostatlas.heartbeats import ping_docs
from hostatlas.heartbeats.ping_routes import PREFIX as PING_PREFIX
from hostatlas.heartbeats.ping_routes import PingEndpoints, Pings
from hostatlas.heartbeats.routes import router as heartbeats_router
from hostatlas.http.compression import RequestDecompression
from hostatlas.http.docs import with_raw_body_schemas
from hostatlas.http.errors import install_error_handlers
from hostatlas.http.frontdoor import FrontDoorApp
from hostatlas.http.middleware import ApiGuard
from hostatlas.http.ratelimit import KnownCheck, RateLimiter
from hostatlas.http.runtime import Runtime
from hostatlas.incidents.routes import router as incidents_router
from hostatlas.inventory.routes import router as inventory_router
from hostatlas.logging import configure as configure_logging
from hostatlas.observability import endpoints as observability
from hostatlas.observability.readiness import Backlog, Sources
from hostatlas.outbound import Resolver, system_resolver
from hostatlas.pipelines.quarantine import describe
from hostatlas.servers.agent_auth import AgentAuthenticator
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.servers.routes import router as servers_router
from hostatlas.settings import Settings, get_settings
from hostatlas.telemetry.routes import router as telemetry_router
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.webhooks import payloads as webhook_payloads
from hostatlas.webhooks.models import WebhookDelivery
from hostatlas.webhooks.routes import router as webhooks_router
from hostatlas.webhooks.service import Destinations
from hostatlas.worker import Worker

log = structlog.get_logger(__name__)
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

API_DESCRIPTION = """
Every feature of the HostAtlas dashboard is backed by this API.

**Authentication**: `Authorization: Bearer sk_live_...`. Each operation lists the scopes it needs;
`<resource>:write` implies `<resource>:read` and `*` grants everything.

**Errors** always come as `{"error": {"code", "message", "status", "request_id", "fields"?}}`.

**Lists** answer `{"data": [...], "meta": {"total", "per_page", "next_cursor"}}`; pass `?cursor=` to page,
`?sort=field` or `?sort=-field` to order, and field names to filter.

**Rate limits** are on every response: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`;
a 429 adds `Retry-After`.
"""


def flush_buffers(app_runtime: Runtime) -> None:
    """Write what requests buffered in memory (check-ins, API key last use); learn of revoked agent tokens."""
    steps = (("servers.checkins", app_runtime.part(CheckinBuffer).flush),
             ("apikeys.usage", app_runtime.part(KeyUsageTracker).flush),
             ("agentapi.tokens", app_runtime.part(AgentAuthenticator).refresh))
    for name, step in steps:
        # One failing step must not starve the others (revocations above all). A step raises only when
        # it could not do its work at all (the database is down); items it had to set aside are not that.
        try:
            step(app_runtime.db)
        except Exception as exc:
            app_runtime.health.failed(name, describe(exc))
            log.exception("flush_step_failed", step=name)
        else:
            app_runtime.health.succeeded(name)


async def _flush_periodically(app_runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(app_runtime.settings.flush_interval)
        try:
            await run_in_threadpool(flush_buffers, app_runtime)
        except Exception:
            log.exception("flush_failed")


def _lifespan(app_runtime: Runtime, worker: Worker, run_worker: bool, freeze_heap: bool) -> Lifespan:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(app_runtime.part(AgentAuthenticator).load_all, app_runtime.db)
        except Exception:
            # Serve anyway (readyz reports the database); the flusher's next refresh retries the load.
            log.exception("agent_tokens_not_loaded")
        telemetry = await run_in_threadpool(Telemetry.start, app_runtime.settings, app_runtime.db)
        app_runtime.add(telemetry)
        # The OpenAPI document is built now, not by the first request that needs it: request metrics match
        # fast-path requests against its paths, so the first agent batch used to build it on the event loop
        # (a 150-250 ms stall of every request at the start of load).
        app.openapi()
        # Everything built so far lives as long as the process: keep the collector from rescanning it, which
        # otherwise shows up as latency spikes under load. Only in a serving process: anywhere else (tests,
        # library users building several apps) it would make every app's garbage immortal.
        if freeze_heap:
            gc.collect()
            gc.freeze()
        flusher = asyncio.create_task(_flush_periodically(app_runtime))
        worker_thread = None
        if run_worker:
            worker_thread = threading.Thread(target=worker.run_forever, name="hostatlas-worker", daemon=True)
            worker_thread.start()
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            telemetry.stop()
            worker.stopping.set()
            if worker_thread is not None:
                worker_thread.join(timeout=10)
            try:
                flush_buffers(app_runtime)
            except Exception:
                log.exception("final_flush_failed")
            if app_runtime.owns_db:
                app_runtime.db.dispose()

    return lifespan


def create_app(settings: Settings | None = None, *, db: Database | None = None, run_worker: bool = False,
               resolver: Resolver = system_resolver, serving: bool = False) -> FastAPI:
    """``resolver``: DNS for outbound requests (webhook destinations); tests pass one that answers for them.
    ``serving``: this process serves this one app for its whole life (``hostatlas serve``): its start-up heap is
    frozen out of the garbage collector's sight."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    secretbox.install(secretbox.load(settings))
    app_runtime = Runtime(settings, db or Database(settings.resolved_database_url), owns_db=db is None)
    app_runtime.add(KeyUsageTracker(timedelta(seconds=settings.key_usage_resolution)))
    views = jobs.composed_server_views()  # how servers are shown and announced (inventory, outage incidents)
    app_runtime.add(views)
    app_runtime.add(CheckinBuffer(views))
    app_runtime.add(AgentAuthenticator(settings.agent_auth_cache_seconds))
    app_runtime.add(Destinations(settings.webhook_allow_private, resolver))
    ping_part = Pings(settings, app_runtime.db)
    app_runtime.add(ping_part)
    worker = Worker(app_runtime.db, settings, jobs.periodic(),
                    jobs.loops(app_runtime.db, settings, resolver=resolver, health=app_runtime.health),
                    health=app_runtime.health)
    # FrontDoorApp: the ping URLs are answered ahead of the whole middleware stack (see below).
    app = FrontDoorApp(
        title="HostAtlas API", version=__version__, description=API_DESCRIPTION,
        openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None,
        lifespan=_lifespan(app_runtime, worker, run_worker, serving),
    )
    app.state.runtime = app_runtime  # read back through hostatlas.http.runtime.of, the one typed accessor

    install_error_handlers(app)
    # The last added runs first: ApiGuard (ids, limits, size caps), then decompression, then the agent
    # fast path, which so sees requests exactly as the routes would.
    if settings.agent_fast_path:
        app.add_middleware(AgentFastPath)
    app.add_middleware(RequestDecompression, max_decompressed_bytes=settings.max_decompressed_bytes)
    api_limiter = RateLimiter(settings.rate_limit, settings.redis_url)
    app.add_middleware(ApiGuard, limiter=api_limiter,
                       known=_known_credentials(app_runtime), max_body_bytes=settings.max_body_bytes)
    for router in (servers_router, inventory_router, telemetry_router, agent_config_router, events_router,
                   agent_router, api_keys_router, webhooks_router, heartbeats_router, incidents_router,
                   alert_rules_router):
        app.include_router(router)
    _add_operational_routes(app)
    dashboard.install(app, app_runtime)  # the web dashboard at /: pages over the same domain services
    request_stats = observability.install(app, _observed(app_runtime), settings)
    # Pings skip every middleware (their share of a ping's cost was about 40%): the endpoint sets the request
    # id and rate-limit headers and counts itself in RequestMetrics' series; see ping_routes.py.
    app.add_front_door(PING_PREFIX, PingEndpoints(ping_part, api_limiter=api_limiter, stats=request_stats))
    _document_raw_bodies(app)
    return app


def _observed(app_runtime: Runtime) -> Sources:
    """What /readyz and /metrics read; the telemetry runtime exists once the lifespan has started it."""

    def telemetry_backlog() -> Backlog:
        return app_runtime.part(Telemetry).backlog_status()

    return Sources(db=app_runtime.db, health=app_runtime.health, telemetry_backlog=telemetry_backlog,
                   queue_depths={"webhook_deliveries": _pending_deliveries})


def _pending_deliveries(session: Session) -> int:
    # Pending is exactly "not completed", which ix_webhook_deliveries_completed answers without a table scan.
    return session.scalar(select(func.count()).where(WebhookDelivery.completed_at.is_(None))) or 0


def _known_credentials(app_runtime: Runtime) -> KnownCheck:
    """Whether a bearer secret is known good here, so that its requests are charged to its own budget."""
    agent_auth = app_runtime.part(AgentAuthenticator)
    known_keys = app_runtime.known_keys

    def known(bearer: tokens.Bearer) -> bool:
        if bearer.prefix == tokens.AGENT_TOKEN_PREFIX:
            return agent_auth.cached(bearer.hash) is not None
        return bearer.hash in known_keys

    return known


# The document depends on the routes alone (no setting reaches it), and building it takes about a second: every
# app this process builds with the same routes (the test suite builds hundreds) shares one.
_DOCUMENTS: dict[tuple[tuple[str, tuple[str, ...], str], ...], dict[str, Any]] = {}


def _route_table(app: FastAPI) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    return tuple((getattr(route, "path", ""), tuple(sorted(getattr(route, "methods", None) or ())),
                  getattr(getattr(route, "endpoint", None), "__qualname__", "")) for route in app.routes)


def _document_raw_bodies(app: FastAPI) -> None:
    """Add the schemas of the bodies that routes decode themselves to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            table = _route_table(app)
            if table not in _DOCUMENTS:
                # webhook_payloads: the top-level webhooks section, every event's delivery body and headers.
                # ping_docs: the /heartbeat/ ping URLs, answered by a pure-ASGI endpoint outside FastAPI's routing.
                _DOCUMENTS[table] = ping_docs.document(webhook_payloads.document(with_raw_body_schemas(build())))
            app.openapi_schema = _DOCUMENTS[table]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_operational_routes(app: FastAPI) -> None:
    app.mount("/api/v1/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="explorer-assets")

    @app.get("/api/v1/docs", include_in_schema=False)
    def explorer() -> HTMLResponse:
        """The interactive API explorer, served from local assets: it works with no internet access."""
        return get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json", title="HostAtlas API explorer",
            swagger_js_url="/api/v1/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/api/v1/docs/assets/swagger-ui.css",
            swagger_favicon_url="/api/v1/docs/assets/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    @app.get("/healthz", tags=["Operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}
