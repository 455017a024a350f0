"""Heartbeats made directly in the database, and pings driven through the status machine and ``state.apply`` (the
way the ping endpoints store them), for the worker's tests and the webhook contract test."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import func, select

from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.heartbeats import machine, state
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, PingKind
from hostatlas.tokens import hash_token

PUBLIC_URL = "https://hostatlas.test"


def make_heartbeat(db: Database, team_id: int, *, now: datetime, name: str = "nightly-backup",
                   interval: int | None = None, schedule: str | None = None, timezone: str = "UTC", grace: int = 60,
                   min_runtime: int | None = None, max_runtime: int | None = None,
                   manual_resume: bool = False) -> int:
    if interval is None and schedule is None:
        interval = 3600
    token = secrets.token_urlsafe(16)
    with db.session(write=True) as session:
        heartbeat = Heartbeat(team_id=team_id, name=name, slug=name, ping_token_hash=hash_token(token),
                              ping_token=token, interval=interval, schedule=schedule, timezone=timezone, grace=grace,
                              tags=[], min_runtime=min_runtime, max_runtime=max_runtime, manual_resume=manual_resume,
                              status="new", open_runs={}, created_at=now, updated_at=now)
        session.add(heartbeat)
        session.flush()
        return heartbeat.id


def ping(db: Database, heartbeat_id: int, at: datetime, kind: PingKind = PingKind.SUCCESS, *,
         rid: str | None = None, exit_status: int | None = None, public_url: str = PUBLIC_URL) -> None:
    """Record a ping and apply it, in one transaction."""
    with db.session(write=True) as session:
        heartbeat = session.scalars(select(Heartbeat).where(Heartbeat.id == heartbeat_id).with_for_update()).one()
        transition = machine.on_ping(state.rules_of(heartbeat), state.state_of(heartbeat), kind, at, rid=rid,
                                     exit_status=exit_status)
        session.add(HeartbeatPing(heartbeat_id=heartbeat.id, team_id=heartbeat.team_id, kind=kind.value,
                                  exit_status=exit_status, at=at, rid=rid, duration_s=transition.duration_s,
                                  method="GET", body=b"", too_often=transition.too_often))
        state.apply(session, heartbeat, transition, public_url=public_url, now=at)


def pause(db: Database, heartbeat_id: int, at: datetime, *, public_url: str = PUBLIC_URL) -> None:
    with db.session(write=True) as session:
        heartbeat = session.get_one(Heartbeat, heartbeat_id)
        state.apply(session, heartbeat, machine.pause(state.state_of(heartbeat), at), public_url=public_url, now=at)


def resume(db: Database, heartbeat_id: int, at: datetime, *, public_url: str = PUBLIC_URL) -> None:
    with db.session(write=True) as session:
        heartbeat = session.get_one(Heartbeat, heartbeat_id)
        state.apply(session, heartbeat, machine.resume(state.state_of(heartbeat), at), public_url=public_url, now=at)


def status_of(db: Database, heartbeat_id: int) -> str:
    with db.session(write=False) as session:
        return session.get_one(Heartbeat, heartbeat_id).status


def heartbeat_events(db: Database, heartbeat_id: int) -> list[Event]:
    with db.session(write=False) as session:
        return list(session.scalars(select(Event).where(Event.resource_type == "heartbeat",
                                                        Event.resource_id == heartbeat_id).order_by(Event.id)))


def flips_of(db: Database, heartbeat_id: int) -> list[tuple[str, str, str]]:
    with db.session(write=False) as session:
        return [(flip.from_status, flip.to_status, flip.cause) for flip in session.scalars(
            select(HeartbeatFlip).where(HeartbeatFlip.heartbeat_id == heartbeat_id).order_by(HeartbeatFlip.id))]


def ping_count(db: Database, heartbeat_id: int) -> int:
    with db.session(write=False) as session:
        return session.scalar(select(func.count()).select_from(HeartbeatPing)
                              .where(HeartbeatPing.heartbeat_id == heartbeat_id)) or 0
