"""The ``hostatlas`` command line."""

from __future__ import annotations

import gc
import os
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import SecretStr
from sqlalchemy import select

from hostatlas import localagent, secretbox
from hostatlas.alerts import service as alert_rules
from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys import service as api_keys
from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db import migrate as migrations
from hostatlas.db.engine import Database
from hostatlas.errors import DomainError
from hostatlas.logging import configure as configure_logging
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings, get_settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import Plan
from hostatlas.users import service as users
from hostatlas.users.models import Role

app = typer.Typer(help="HostAtlas: self-hostable, API-first server monitoring.", no_args_is_help=True)
team_app = typer.Typer(help="Manage teams.", no_args_is_help=True)
SERVING_GC_THRESHOLDS = (50_000, 20, 100)  # see _tune_gc_for_serving
# How `serve --workers N` tells its worker processes whether to run the background worker.
RUN_WORKER_ENV = "HOSTATLAS_SERVE_RUNS_WORKER"
apikey_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(team_app, name="team")
app.add_typer(apikey_app, name="apikey")
secrets_app = typer.Typer(help="The platform key that seals secrets at rest.", no_args_is_help=True)
app.add_typer(secrets_app, name="secrets")
quarantine_app = typer.Typer(help="Inspect, replay or drop the items pipelines set aside.", no_args_is_help=True)
user_app = typer.Typer(help="Manage dashboard users.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(quarantine_app, name="quarantine")


def _migrated_database() -> Database:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    secretbox.install(secretbox.load(settings))  # migrations seal secrets too
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
    local_agent: Annotated[bool | None, typer.Option(
        "--local-agent/--no-local-agent", show_default=False,
        help="Also run an agent for this host, enrolled into team `default` (default: on with SQLite unless "
             "HOSTATLAS_LOCAL_AGENT=false)")] = None,
) -> None:
    """Migrate the database if needed, then serve the API and the agent API (and the worker)."""
    db = _migrated_database()
    settings = get_settings()
    # Started before the app exists (no threads yet to fork beside) and once, by this process, whatever --workers.
    agent = localagent.start(db, settings, host=host, port=port) if localagent.wanted(local_agent, settings) else None
    settings = _with_setup_token(db, settings, host=host, port=port)
    db.dispose()
    os.environ[RUN_WORKER_ENV] = "1" if worker else "0"
    _tune_gc_for_serving()
    try:
        if workers > 1:
            # Every process runs its own worker thread: jobs claim their rows, so that is safe.
            uvicorn.run("hostatlas.cli:_app_for_workers", factory=True, host=host, port=port, workers=workers,
                        log_level=settings.log_level.lower(), access_log=access_log, **_proxy_trust(settings))
            return
        from hostatlas.app import create_app

        uvicorn.run(create_app(settings, run_worker=worker, serving=True), host=host, port=port,
                    log_level=settings.log_level.lower(), access_log=access_log, **_proxy_trust(settings))
    finally:
        if agent is not None:
            agent.stop()


def _with_setup_token(db: Database, settings: Settings, *, host: str, port: int) -> Settings:
    """While nobody can sign in, the dashboard's first-run page asks for a one-time token: made here (unless
    HOSTATLAS_SETUP_TOKEN chose one) and printed to this terminal only, as notebook servers do, never logged.
    Worker processes (--workers) read it from the environment."""
    with db.session(write=False) as session:
        if users.any_user(session):
            return settings
    token = settings.setup_token.get_secret_value() if settings.setup_token else secrets.token_urlsafe(24)
    os.environ["HOSTATLAS_SETUP_TOKEN"] = token
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(f"\n  No dashboard user yet. Create the owner account at:\n"
               f"    http://{shown_host}:{port}/setup?token={token}\n", err=True)
    return settings.model_copy(update={"setup_token": SecretStr(token)})


def _proxy_trust(settings: Settings) -> dict[str, Any]:
    """X-Forwarded-For/-Proto are believed only from HOSTATLAS_TRUSTED_PROXIES. uvicorn alone would believe
    127.0.0.1 (or $FORWARDED_ALLOW_IPS), so that anything on the host could pick its client address."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


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
    return create_app(settings, run_worker=os.environ.get(RUN_WORKER_ENV, "1") == "1", serving=True)


@app.command("worker")
def run_worker() -> None:
    """Run the background worker alone (several may run at once)."""
    from hostatlas.jobs import loops, periodic
    from hostatlas.worker import Worker

    db = _migrated_database()
    settings = get_settings()
    runner = Worker(db, settings, periodic(), loops(db, settings))
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
            # A new team starts with the default alert rules (disk, memory, CPU): editable and deletable.
            alert_rules.create_default_rules(session, team.id, now=utcnow())
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


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Sign-in address (one account per address)")],
    password: Annotated[str, typer.Option(help="12 to 1,024 characters; only its argon2 hash is stored")],
    team: Annotated[str, typer.Option(help="Team slug")] = "default",
    role: Annotated[Role, typer.Option(help="owner, admin, member or read-only")] = Role.MEMBER,
) -> None:
    """Create a dashboard user with a role in a team (or give an existing user a role in another team)."""
    db = _migrated_database()
    try:
        with db.session(write=True) as session:
            owner = teams.get_team_by_slug(session, team)
            user, membership = users.create_user(session, email=email, password=password, team=owner, role=role,
                                                 now=utcnow())
            typer.echo(f"user {user.email} (id {user.id}) is {membership.role} in team {owner.slug}")
    except DomainError as error:
        raise _fail(error) from None


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
            # Whoever runs the command line on the platform's host may grant everything.
            issued = api_keys.create_key(session, team_id=owner.id, name=name, scopes=scope_list,
                                         expires_at=_parse_expiry(expires), now=utcnow(),
                                         granted_by=(scope_rules.ALL_SCOPES,))
            expiry = isoformat_z(issued.record.expires_at) if issued.record.expires_at else "never"
    except DomainError as error:
        raise _fail(error) from None
    typer.echo(f"API key {issued.record.id} for team {team}: scopes {', '.join(issued.record.scopes)}; "
               f"expires {expiry}. Store it now: it is shown only once.")
    typer.echo(issued.raw)


@secrets_app.command("new-key")
def secrets_new_key() -> None:
    """Print a fresh platform key, to put first in HOSTATLAS_SECRET_KEY (or the key file) when rotating."""
    typer.echo(secretbox.Keyring.new_key())


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Reseal every secret with the first platform key; afterwards the other keys can be dropped."""
    from hostatlas.models import metadata

    db = _migrated_database()
    count = secretbox.reseal_all(db, metadata.sorted_tables)
    typer.echo(f"{count} secrets resealed with the first key; the other keys are no longer needed")


def _printable(text: str) -> str:
    """A reason often quotes the bad input: escape control characters rather than let them reach the terminal."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


@quarantine_app.command("list")
def quarantine_list(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's items")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many items, oldest first")] = 100,
) -> None:
    """List the items pipelines set aside, oldest first, with why."""
    db = _migrated_database()
    with db.session(write=False) as session:
        items = quarantine.listing(session, pipeline=pipeline, limit=limit)
        total = sum(summary.items for summary in quarantine.counts(session)
                    if pipeline is None or summary.pipeline == pipeline)
    if not items:
        typer.echo("the quarantine is empty" if pipeline is None else f"no item of pipeline {pipeline}")
        return
    typer.echo("ID\tPIPELINE\tTEAM\tFAILURES\tSET ASIDE\tLAST FAILED\tBYTES\tREASON")
    for item in items:
        typer.echo(f"{item.id}\t{item.pipeline}\t{item.team_id or '-'}\t{item.failures}\t"
                   f"{isoformat_z(item.created_at)}\t{isoformat_z(item.last_failed_at)}\t{len(item.payload)}\t"
                   f"{_printable(item.reason)}")
    if total > len(items):
        typer.echo(f"({total - len(items)} more: raise --limit or filter with --pipeline)")


@quarantine_app.command("replay")
def quarantine_replay(
    item_id: Annotated[int | None, typer.Argument(help="The item to try again")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every item (of --pipeline, if given), oldest first")] = False,
    pipeline: Annotated[str | None, typer.Option(help="With --all: only this pipeline's items")] = None,
) -> None:
    """Try items again through their pipeline, once the cause is fixed: removed if it works, kept if not."""
    from hostatlas.jobs import replayers

    if (item_id is None) == (not every) or (pipeline is not None and not every):
        raise typer.BadParameter("give an item ID, or --all (and maybe --pipeline)")
    db = _migrated_database()
    ids = [item_id] if item_id is not None else _quarantined_ids(db, pipeline)
    known = replayers(db, get_settings())
    failed = 0
    for one in ids:
        try:
            replayed = quarantine.replay(db, one, known, now=utcnow())
        except DomainError as error:
            raise _fail(error) from None
        failed += not replayed
        typer.echo(f"item {one} replayed" if replayed else f"item {one} failed again: {_reason(db, one)}")
    if every:
        typer.echo(f"{len(ids) - failed} replayed, {failed} still failing")
    if failed:
        raise typer.Exit(code=1)


def _reason(db: Database, item_id: int) -> str:
    with db.session(write=False) as session:
        return _printable(quarantine.get_item(session, item_id).reason)


def _quarantined_ids(db: Database, pipeline: str | None) -> list[int]:
    query = select(QuarantinedItem.id).order_by(QuarantinedItem.id)
    if pipeline is not None:
        query = query.where(QuarantinedItem.pipeline == pipeline)
    with db.session(write=False) as session:
        return list(session.scalars(query))


@quarantine_app.command("drop")
def quarantine_drop(item_id: Annotated[int, typer.Argument(help="The item to delete for good")]) -> None:
    """Delete an item without replaying it: what it carried is lost."""
    db = _migrated_database()
    try:
        quarantine.drop(db, item_id)
    except DomainError as error:
        raise _fail(error) from None
    typer.echo(f"item {item_id} dropped")
