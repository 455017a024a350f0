"""Heartbeats: creation, lookup, editing, pausing, token rotation, their logs and the team's ping settings.

Domain code, no HTTP: the REST routes and the dashboard call the same functions. Every rule about what a
heartbeat may be configured with lives here (the request models only check types and bounds at the edge),
so a caller that is not the API cannot store a heartbeat the status machine cannot read.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from hostatlas import tokens
from hostatlas.errors import Conflict, FieldProblem, InvalidInput, NotFound, PlanLimitReached
from hostatlas.heartbeats import machine, state
from hostatlas.heartbeats.models import (
    Heartbeat,
    HeartbeatFlip,
    HeartbeatPing,
    HeartbeatStatus,
    HeartbeatTag,
    PingKind,
)
from hostatlas.heartbeats.schedule import cron_problem, timezone_problem
from hostatlas.heartbeats.schemas import DEFAULT_GRACE, MAX_SECONDS, MAX_TAGS, MIN_INTERVAL, SLUG_PATTERN
from hostatlas.http.types import text_problem
from hostatlas.servers.models import Server
from hostatlas.teams.models import Team

# Suffixes of slug ping URLs (/heartbeat/{key}/{slug}/start, .../{exit_status}): a slug that is one of them
# could be read as a token's suffix, so none is one.
RESERVED_SLUGS = frozenset({"start", "fail", "log"})
SLUG_MAX = 100
FIELDS = ("name", "slug", "interval", "schedule", "timezone", "grace", "tags", "server_id", "min_runtime",
          "max_runtime", "manual_resume")
NULLABLE = frozenset({"interval", "schedule", "server_id", "min_runtime", "max_runtime"})
# What changes when the heartbeat is next due or must next be looked at.
TIMING = frozenset({"interval", "schedule", "timezone", "grace", "max_runtime"})
_BOUNDS = {"interval": (MIN_INTERVAL, MAX_SECONDS), "grace": (0, MAX_SECONDS), "min_runtime": (0, MAX_SECONDS),
           "max_runtime": (0, MAX_SECONDS)}
_SLUG = re.compile(SLUG_PATTERN)


def new_ping_token() -> tuple[str, str]:
    """A fresh ping token (the URL's secret) and the SHA-256 hex that finds its heartbeat."""
    token = secrets.token_urlsafe(16)
    return token, tokens.hash_token(token)


def create_heartbeat(session: Session, *, team_id: int, fields: Mapping[str, Any], now: datetime) -> Heartbeat:
    """A new heartbeat (status ``new``: nothing is due before its first ping). ``fields`` as in the API."""
    values = {"slug": None, "interval": None, "schedule": None, "timezone": "UTC", "grace": DEFAULT_GRACE,
              "tags": [], "server_id": None, "min_runtime": None, "max_runtime": None, "manual_resume": False,
              **_known(fields)}
    _check(session, team_id, values, given=set(fields))
    team = session.scalar(select(Team).where(Team.id == team_id).with_for_update())
    if team is None:
        raise NotFound("Team", "team_not_found")
    limit = team.heartbeat_limit
    # The team row is locked (PostgreSQL; SQLite writes one at a time), so two creations cannot both pass.
    if limit is not None and count(session, team_id) >= limit:
        raise PlanLimitReached(f"The {team.plan} plan allows {limit} heartbeats; delete one or upgrade")
    slug = values["slug"]
    if slug is None:
        slug = _free_slug(session, team_id, _slugify(values["name"]))
    elif _slug_taken(session, team_id, slug):
        raise Conflict(f"A heartbeat with slug {slug!r} already exists", "slug_taken")
    token, token_hash = new_ping_token()
    heartbeat = Heartbeat(team_id=team_id, name=values["name"], slug=slug, ping_token=token,
                          ping_token_hash=token_hash, interval=values["interval"], schedule=values["schedule"],
                          timezone=values["timezone"], grace=values["grace"], tags=sorted(set(values["tags"])),
                          server_id=values["server_id"], min_runtime=values["min_runtime"],
                          max_runtime=values["max_runtime"], manual_resume=values["manual_resume"],
                          status=HeartbeatStatus.NEW.value, open_runs={}, created_at=now, updated_at=now)
    session.add(heartbeat)
    session.flush()
    _store_tags(session, heartbeat)
    return heartbeat


def get_heartbeat(session: Session, *, team_id: int, heartbeat_id: int) -> Heartbeat:
    heartbeat = session.scalar(select(Heartbeat).where(Heartbeat.id == heartbeat_id, Heartbeat.team_id == team_id))
    if heartbeat is None:
        raise NotFound("Heartbeat", "heartbeat_not_found")
    return heartbeat


def listing(team_id: int, *, status: HeartbeatStatus | None = None, tag: str | None = None,
            server_id: int | None = None) -> Select[Heartbeat]:
    """The team's heartbeats matching the filters (the list's query; the dashboard's too)."""
    stmt = select(Heartbeat).where(Heartbeat.team_id == team_id)
    if status is not None:
        stmt = stmt.where(Heartbeat.status == status.value)
    if tag:
        stmt = stmt.where(Heartbeat.id.in_(select(HeartbeatTag.heartbeat_id).where(HeartbeatTag.team_id == team_id,
                                                                                   HeartbeatTag.tag == tag)))
    if server_id is not None:
        stmt = stmt.where(Heartbeat.server_id == server_id)
    return stmt


def update_heartbeat(session: Session, *, team_id: int, heartbeat_id: int, changes: Mapping[str, Any],
                     now: datetime) -> Heartbeat:
    """Apply the fields given (``None`` clears a nullable one). A schedule given replaces the interval and
    an interval the schedule. A new timing reschedules a running heartbeat from its last ping."""
    heartbeat = get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    changes = _known(changes)
    problems = [FieldProblem(name, "null_not_allowed", "Must not be null")
                for name, value in changes.items() if value is None and name not in NULLABLE]
    if problems:
        raise InvalidInput(problems)
    values = {name: getattr(heartbeat, name) for name in FIELDS} | changes
    if changes.get("schedule") is not None and "interval" not in changes:
        values["interval"] = None
    if changes.get("interval") is not None and "schedule" not in changes:
        values["schedule"] = None
    _check(session, team_id, values, given=set(changes))
    slug = changes.get("slug")
    if slug is not None and slug != heartbeat.slug:
        # Serialised with creations (which hold the team row too), so a check that passed stays true.
        session.execute(select(Team.id).where(Team.id == team_id).with_for_update())
        if _slug_taken(session, team_id, slug):
            raise Conflict(f"A heartbeat with slug {slug!r} already exists", "slug_taken")
    for name in FIELDS:
        if name != "tags":
            setattr(heartbeat, name, values[name])
    if "tags" in changes:
        heartbeat.tags = sorted(set(values["tags"]))
        session.execute(delete(HeartbeatTag).where(HeartbeatTag.heartbeat_id == heartbeat.id))
        _store_tags(session, heartbeat)
    if TIMING & set(changes):
        rescheduled = machine.reschedule(state.rules_of(heartbeat), state.state_of(heartbeat))
        heartbeat.next_due_at = rescheduled.next_due_at
        heartbeat.deadline_at = rescheduled.deadline_at
    heartbeat.updated_at = now
    session.flush()
    return heartbeat


def delete_heartbeat(session: Session, *, team_id: int, heartbeat_id: int) -> None:
    """Remove the heartbeat with its tags, ping log and flips (foreign keys cascade). Its token stops
    working: a process that caches tokens by hash must drop it (pings.py looks the hash up again on a miss)."""
    heartbeat = get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    session.execute(delete(Heartbeat).where(Heartbeat.id == heartbeat.id))


def pause(session: Session, *, team_id: int, heartbeat_id: int, public_url: str, now: datetime) -> Heartbeat:
    """Stop monitoring: no alert until resumed (or, without manual_resume, until the next ping)."""
    heartbeat = get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    state.apply(session, heartbeat, machine.pause(state.state_of(heartbeat), now), public_url=public_url, now=now)
    session.flush()
    return heartbeat


def resume(session: Session, *, team_id: int, heartbeat_id: int, public_url: str, now: datetime) -> Heartbeat:
    """Back to ``new`` from ``paused`` or ``down`` (the way out of a manual_resume outage); monitoring
    starts again with the next ping. A heartbeat being monitored already is left as it is."""
    heartbeat = get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    if heartbeat.status in (HeartbeatStatus.PAUSED.value, HeartbeatStatus.DOWN.value):
        state.apply(session, heartbeat, machine.resume(state.state_of(heartbeat), now), public_url=public_url,
                    now=now)
        session.flush()
    return heartbeat


def rotate_token(session: Session, *, team_id: int, heartbeat_id: int, now: datetime) -> Heartbeat:
    """A new ping token; the old one stops working at once here (a process caching tokens by hash must
    drop the old hash)."""
    heartbeat = get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    token, token_hash = new_ping_token()
    heartbeat.ping_token = token
    heartbeat.ping_token_hash = token_hash
    heartbeat.updated_at = now
    session.flush()
    return heartbeat


def ping_listing(session: Session, *, team_id: int, heartbeat_id: int,
                 kind: PingKind | None = None) -> Select[HeartbeatPing]:
    """The heartbeat's ping log (404 for another team's heartbeat)."""
    get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    stmt = select(HeartbeatPing).where(HeartbeatPing.heartbeat_id == heartbeat_id, HeartbeatPing.team_id == team_id)
    if kind is not None:
        stmt = stmt.where(HeartbeatPing.kind == kind.value)
    return stmt


def flip_listing(session: Session, *, team_id: int, heartbeat_id: int) -> Select[HeartbeatFlip]:
    """The heartbeat's status changes (404 for another team's heartbeat)."""
    get_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    return select(HeartbeatFlip).where(HeartbeatFlip.heartbeat_id == heartbeat_id, HeartbeatFlip.team_id == team_id)


def ping_settings(session: Session, *, team_id: int) -> Team:
    """The team with its ping key, made on first use (the key is the team's part of slug ping URLs)."""
    team = session.scalar(select(Team).where(Team.id == team_id))
    if team is None:
        raise NotFound("Team", "team_not_found")
    if team.ping_key is None:
        # Locked and read again: two first reads at once must hand out one key, not two.
        team = session.scalar(select(Team).where(Team.id == team_id).with_for_update().execution_options(
            populate_existing=True))
        assert team is not None
        if team.ping_key is None:
            team.ping_key = secrets.token_urlsafe(12)
            session.flush()
    return team


def update_ping_settings(session: Session, *, team_id: int, ping_create: bool) -> Team:
    team = ping_settings(session, team_id=team_id)
    team.ping_create = ping_create
    session.flush()
    return team


def slug_url_template(public_url: str, ping_key: str) -> str:
    return f"{public_url.rstrip('/')}/heartbeat/{ping_key}/<slug>"


def _known(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidInput([FieldProblem(name, "unknown_field", "Not a heartbeat field") for name in unknown])
    return dict(fields)


def _check(session: Session, team_id: int, values: Mapping[str, Any], *, given: set[str]) -> None:
    """Every rule a heartbeat's configuration must meet; one problem per offending field."""
    problems: list[FieldProblem] = []
    name = values.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or text_problem(name):
        problems.append(FieldProblem("name", "invalid_name", "A name of 1-100 characters of text is required"))
    slug = values.get("slug")
    if slug is not None and (not _SLUG.match(slug) or slug in RESERVED_SLUGS or slug.isdigit()):
        problems.append(FieldProblem("slug", "invalid_slug", "Use lowercase letters, digits and inner hyphens; "
                                     "not start, fail, log or a number (ping URL suffixes)"))
    problems += _timing_problems(values, given)
    for field_name, (low, high) in _BOUNDS.items():
        value = values.get(field_name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
            problems.append(FieldProblem(field_name, "out_of_range", f"Must be between {low} and {high} seconds"))
    shortest, longest = values.get("min_runtime"), values.get("max_runtime")
    if isinstance(shortest, int) and isinstance(longest, int) and shortest > longest:
        field_name = "min_runtime" if "min_runtime" in given else "max_runtime"
        problems.append(FieldProblem(field_name, "runtime_range", "min_runtime must not exceed max_runtime"))
    if len(values.get("tags") or []) > MAX_TAGS:
        problems.append(FieldProblem("tags", "too_many_tags", f"At most {MAX_TAGS} tags"))
    server_id = values.get("server_id")
    if server_id is not None and "server_id" in given and session.scalar(
            select(Server.id).where(Server.id == server_id, Server.team_id == team_id)) is None:
        problems.append(FieldProblem("server_id", "server_not_found", "No such server in this team"))
    if problems:
        raise InvalidInput(problems)


def _timing_problems(values: Mapping[str, Any], given: set[str]) -> list[FieldProblem]:
    interval, cron = values.get("interval"), values.get("schedule")
    if interval is not None and cron is not None:
        return [FieldProblem(name, "schedule_conflict", "Give either interval or schedule, not both")
                for name in ("interval", "schedule") if name in given] or [
            FieldProblem("schedule", "schedule_conflict", "Give either interval or schedule, not both")]
    if interval is None and cron is None:
        return [FieldProblem("interval", "schedule_required", "Give interval (seconds) or schedule (cron)")]
    problems = []
    if cron is not None and (problem := cron_problem(cron)):
        problems.append(FieldProblem("schedule", "invalid_cron", problem))
    timezone = values.get("timezone")
    if not isinstance(timezone, str) or (problem := timezone_problem(timezone)):
        problems.append(FieldProblem("timezone", "invalid_timezone", problem or "An IANA timezone name is required"))
    return problems


def count(session: Session, team_id: int) -> int:
    """The team's heartbeats, as the plan's heartbeat limit counts them."""
    return session.scalar(select(func.count()).select_from(Heartbeat).where(Heartbeat.team_id == team_id)) or 0


def _store_tags(session: Session, heartbeat: Heartbeat) -> None:
    session.add_all(HeartbeatTag(heartbeat_id=heartbeat.id, team_id=heartbeat.team_id, tag=tag)
                    for tag in heartbeat.tags)


def _slugify(name: str) -> str:
    """``Nightly Backup (db)`` -> ``nightly-backup-db``; room is left for a ``-N`` suffix."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()  # Über -> Uber
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[: SLUG_MAX - 8].strip("-")
    return slug or "heartbeat"


def _slug_taken(session: Session, team_id: int, slug: str) -> bool:
    return session.scalar(select(Heartbeat.id).where(Heartbeat.team_id == team_id, Heartbeat.slug == slug)) is not None


def _free_slug(session: Session, team_id: int, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is the first not taken (nor reserved)."""
    taken = set(session.scalars(select(Heartbeat.slug).where(
        Heartbeat.team_id == team_id, (Heartbeat.slug == base) | Heartbeat.slug.startswith(f"{base}-"))))
    if base not in taken and base not in RESERVED_SLUGS and not base.isdigit():
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
