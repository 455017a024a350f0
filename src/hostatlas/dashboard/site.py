"""The dashboard as a whole: its long-lived parts, its static files and every page's router, added to the app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from hostatlas import secretbox
from hostatlas.dashboard import alerts, apikeys, heartbeats, incidents, overview, servers, signin, team, webhooks
from hostatlas.dashboard.rendering import STATIC_DIR
from hostatlas.dashboard.sessions import SessionCodec
from hostatlas.http.ratelimit import RateLimiter
from hostatlas.http.runtime import Runtime

# Every page module's router, in navigation order (each is one resource's pages).
PAGE_ROUTERS: tuple[APIRouter, ...] = (signin.router, overview.router, servers.router, incidents.router, alerts.router,
                                       heartbeats.router, webhooks.router, apikeys.router, team.router)


def install(app: FastAPI, app_runtime: Runtime) -> None:
    settings = app_runtime.settings
    app_runtime.add(SessionCodec(secretbox.current().derived("dashboard"), max_age=settings.session_max_age))
    limit = settings.login_rate_limit
    amount, _, period = limit.partition("/")
    app_runtime.add(signin.SignInLimits(per_client=RateLimiter(f"{int(amount) * 4}/{period}", settings.redis_url),
                                        per_account=RateLimiter(limit, settings.redis_url)))
    token = settings.setup_token.get_secret_value() if settings.setup_token is not None else None
    app_runtime.add(signin.SetupToken(token))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    for router in PAGE_ROUTERS:
        app.include_router(router)
