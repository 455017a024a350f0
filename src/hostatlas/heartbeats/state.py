"""Between the stored heartbeat and the pure status machine: read its rules and state, write a transition back.

``apply`` is the one place a transition is stored: the columns, the flip row and the alert event go into
the caller's session together, so a flip exists exactly when its change committed, and webhooks get
``heartbeat.missed`` / ``heartbeat.recovered`` through the event outbox like every other event, their data the
shape of ``GET /heartbeats/{id}`` plus the cause. A heartbeat going down also opens its incident (source
``heartbeat``), and coming back up resolves it; while the heartbeat's server is offline its incident is
attached to the server's and the heartbeat's own events are not sent (the outage incident speaks for it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from hostatlas.events import service as events
from hostatlas.heartbeats.history import detail_of
from hostatlas.heartbeats.machine import Rules, State, Transition
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatStatus
from hostatlas.heartbeats.schedule import Schedule
from hostatlas.incidents import service as incidents
from hostatlas.incidents.models import TITLE_MAX, Severity, Source

ALERT_EVENTS = {"missed": events.HEARTBEAT_MISSED, "recovered": events.HEARTBEAT_RECOVERED}


class StoredHeartbeat(Protocol):
    """What ``rules_of`` and ``state_of`` read: a ``Heartbeat``, or a row of its columns (the ping writer's)."""

    @property
    def interval(self) -> int | None: ...
    @property
    def schedule(self) -> str | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def grace(self) -> int: ...
    @property
    def min_runtime(self) -> int | None: ...
    @property
    def max_runtime(self) -> int | None: ...
    @property
    def manual_resume(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def last_ping_at(self) -> datetime | None: ...
    @property
    def last_start_at(self) -> datetime | None: ...
    @property
    def open_runs(self) -> dict[str, Any] | None: ...
    @property
    def last_duration_s(self) -> float | None: ...
    @property
    def next_due_at(self) -> datetime | None: ...
    @property
    def deadline_at(self) -> datetime | None: ...


def rules_of(heartbeat: StoredHeartbeat) -> Rules:
    return Rules(schedule=Schedule(interval=heartbeat.interval, cron=heartbeat.schedule, timezone=heartbeat.timezone),
                 grace=heartbeat.grace, min_runtime=heartbeat.min_runtime, max_runtime=heartbeat.max_runtime,
                 manual_resume=heartbeat.manual_resume)


def state_of(heartbeat: StoredHeartbeat) -> State:
    return State(status=HeartbeatStatus(heartbeat.status), last_ping_at=heartbeat.last_ping_at,
                 last_start_at=heartbeat.last_start_at, open_runs=dict(heartbeat.open_runs or {}),
                 last_duration_s=heartbeat.last_duration_s, next_due_at=heartbeat.next_due_at,
                 deadline_at=heartbeat.deadline_at)


def columns(state: State, now: datetime) -> dict[str, Any]:
    """The heartbeat's columns that hold ``state`` (as of ``now``). ``apply`` sets them on the ORM object; the
    ping writer writes them for a whole batch in one statement when no transition of the batch flipped."""
    return {"status": state.status.value, "last_ping_at": state.last_ping_at, "last_start_at": state.last_start_at,
            "open_runs": dict(state.open_runs), "last_duration_s": state.last_duration_s,
            "next_due_at": state.next_due_at, "deadline_at": state.deadline_at, "updated_at": now}


def apply(session: Session, heartbeat: Heartbeat, transition: Transition, *, public_url: str,
          now: datetime) -> None:
    """Store ``transition`` on ``heartbeat`` (already in ``session``), with its flip and its alert event."""
    for name, value in columns(transition.state, now).items():
        setattr(heartbeat, name, value)
    flip = transition.flip
    if flip is None:
        return
    session.add(HeartbeatFlip(heartbeat_id=heartbeat.id, team_id=heartbeat.team_id, at=flip.at,
                              from_status=flip.from_status.value, to_status=flip.to_status.value, cause=flip.cause))
    if transition.alert is not None:
        if track_incident(session, heartbeat, transition.alert, flip.cause, flip.at):
            return  # its server is offline: the server's incident speaks for it, the heartbeat sends nothing
        # The run history reads only the ping log, which nothing pending in the session touches: no flush
        # per alert (a thousand heartbeats missing at once would otherwise flush a thousand times).
        with session.no_autoflush:
            payload = {**detail_of(session, heartbeat, public_url).model_dump(mode="json"), "cause": flip.cause}
        events.record(session, team_id=heartbeat.team_id, type=ALERT_EVENTS[transition.alert],
                      resource_type="heartbeat", resource_id=heartbeat.id, payload=payload, at=flip.at,
                      server_id=heartbeat.server_id)


def incident_key(heartbeat_id: int) -> str:
    return f"heartbeat:{heartbeat_id}"


def track_incident(session: Session, heartbeat: Heartbeat, alert: str, cause: str, at: datetime) -> bool:
    """Open (``missed``) or resolve (``recovered``) the heartbeat's incident; True when it is attached to its
    server's offline incident, so that neither heartbeat.missed nor the matching heartbeat.recovered goes out."""
    data = {"heartbeat_id": heartbeat.id, "cause": cause}
    if alert == "recovered":
        outcome = incidents.recover(session, team_id=heartbeat.team_id, source=Source.HEARTBEAT,
                                    key=incident_key(heartbeat.id), at=at, data=data,
                                    message=f"Heartbeat {heartbeat.name} is up again")
        return outcome is not None and outcome.suppressed
    problem = incidents.Problem(team_id=heartbeat.team_id, source=Source.HEARTBEAT, key=incident_key(heartbeat.id),
                                title=f"Heartbeat {heartbeat.name} is down"[:TITLE_MAX], severity=Severity.CRITICAL,
                                server_id=heartbeat.server_id, service=None, data=data, message=f"Down: {cause}")
    return incidents.report(session, problem, at=at).suppressed
