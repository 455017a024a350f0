"""The ``hostatlas`` command line."""

from __future__ import annotations

import gc
import os
from datetime import UTC, datetime
from typing import Annotated

import typer
import uvicorn

from hostatlas.apikeys import service as api_keys
from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db import migrate as migrations
from hostatlas.db.engine import Database
from hostatlas.errors import DomainError
from hostatlas.logging import configure as configure_logging
from hostatlas.settings import get_settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import Plan

app = typer.Typer(help="HostAtlas: self-hostable, API-first server monitoring.", no_args_is_help=True)
team_app = typer.Typer(help="Manage teams.", no_args_is_help=True)
SERVING_GC_THRESHOLDS = (50_000, 20, 100)  # see _tune_gc_for_serving
# How `serve --workers N` tells its worker processes whether to run the background worker.
RUN_WORKER_ENV = "HOSTATLAS_SERVE_RUNS_WORKER"
apikey_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(team_app, name="team")
app.add_typer(apikey_app, name="apikey")


def _migrated_database() -> Database:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    db = Database(settings.resolved_database_url)
    migrations.upgrade(db)
    return db


def _fail(error: DomainError) -> typer.Exit:
    typer.echo(f"error: {error.message}", err=True)
    for problem in error.fields:
        typer.echo(f"  {problem.field}: {problem.message}", err=True)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run the background worker here")] = True,
    workers: Annotated[int, typer.Option(help="HTTP worker processes (PostgreSQL only)")] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request")] = True,
) -> None:
    """Migrate the database if needed, then serve the API, agent API, pings and dashboard."""
    db = _migrated_database()
    db.dispose()
    settings = get_settings()
    os.environ[RUN_WORKER_ENV] = "1" if worker else "0"
    _tune_gc_for_serving()
    if workers > 1:
        # Every process runs its own worker thread: jobs claim their rows, so that is safe.
        uvicorn.run("hostatlas.cli:_app_for_workers", factory=True, host=host, port=port, workers=workers,
                    log_level=settings.log_level.lower(), proxy_headers=True, access_log=access_log)
        return
    from hostatlas.app import create_app

    uvicorn.run(create_app(settings, run_worker=worker), host=host, port=port,
                log_level=settings.log_level.lower(), proxy_headers=True, access_log=access_log)


def _tune_gc_for_serving() -> None:
    """Most request garbage is freed by reference counting; the cyclic collector mostly rescans live
    objects. At the default thresholds a full collection ran every ~12 s under agent load and paused the
    event loop for 7-36 ms, which made bench/ingest.py's p99 100 ms instead of 20-35 ms; these make full
    collections rare. Only for serving processes (not the test process, not library users)."""
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def _app_for_workers() -> object:
    from hostatlas.app import create_app

    _tune_gc_for_serving()
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_app(settings, run_worker=os.environ.get(RUN_WORKER_ENV, "1") == "1")


@app.command("worker")
def run_worker() -> None:
    """Run the background worker alone (several may run at once)."""
    from hostatlas.jobs import ALL, loops
    from hostatlas.worker import Worker

    db = _migrated_database()
    settings = get_settings()
    runner = Worker(db, settings, ALL, loops(db, settings))
    runner.stop_on_signals()
    runner.run_forever()


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    db = _migrated_database()
    typer.echo(f"database at head ({db.dialect})")


@team_app.command("create")
def team_create(
    slug: Annotated[str, typer.Argument(help="Short name, e.g. acme")],
    plan: Annotated[Plan, typer.Option(help="free (at most 3 servers) or pro")] = Plan.FREE,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
) -> None:
    """Create a team."""
    db = _migrated_database()
    try:
        with db.session(write=True) as session:
            team = teams.create_team(session, slug, name=name, plan=plan)
            typer.echo(f"team {team.slug} created (id {team.id}, plan {team.plan})")
    except DomainError as error:
        raise _fail(error) from None


def _parse_expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter("use ISO-8601, e.g. 2026-06-21 or 2026-06-21T00:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="What the key is for")],
    scopes: Annotated[str, typer.Option(help="Comma-separated, e.g. servers:read,metrics:read or *")],
    team: Annotated[str, typer.Option(help="Team slug")] = "default",
    expires: Annotated[str | None, typer.Option(help="ISO-8601 expiry; none: never")] = None,
) -> None:
    """Create an API key; the raw key is the last line printed."""
    db = _migrated_database()
    scope_list = [scope.strip() for scope in scopes.split(",") if scope.strip()]
    try:
        with db.session(write=True) as session:
            owner = teams.get_team_by_slug(session, team)
            issued = api_keys.create_key(session, team_id=owner.id, name=name, scopes=scope_list,
                                         expires_at=_parse_expiry(expires), now=utcnow())
            expiry = isoformat_z(issued.record.expires_at) if issued.record.expires_at else "never"
    except DomainError as error:
        raise _fail(error) from None
    typer.echo(f"API key {issued.record.id} for team {team}: scopes {', '.join(issued.record.scopes)}; "
               f"expires {expiry}. Store it now: it is shown only once.")
    typer.echo(issued.raw)
