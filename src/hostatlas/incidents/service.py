"""Incidents: opened and resolved by the features that watch things (``report`` / ``recover``), and by people
through the API (create, acknowledge, resolve, reopen, notes). Domain code, no HTTP.

Every rule of an incident's life is here, and only here:

- **One incident per outage.** The same problem reported again while its incident is unresolved is a
  follow-up on that incident's timeline (its severity may rise, never fall). A partial unique index holds
  this with several workers: the loser of a race to open appends a follow-up instead.
- **Flapping does not create an incident per flap.** A problem that comes back within ``REOPEN_WINDOW`` of its
  automatic incident's resolution reopens that incident instead of opening another.
- **Dependency-aware suppression.** While a server is offline (its ``server`` incident is unresolved), a
  problem on that server from any other source is attached to the outage: opened with ``parent_id`` and
  ``suppressed``, announced by no event, and noted on the outage's timeline; the caller learns so from
  ``Outcome.suppressed`` and sends no event of its own. When the outage ends (``recover`` of the server
  incident, or a person resolving it), what is still unresolved is detached, and what was never announced is
  announced then: the problem outlived the outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hostatlas.errors import Conflict, InvalidInput, NotFound
from hostatlas.events import service as events
from hostatlas.events.models import Event
from hostatlas.incidents.models import (
    SERVICE_MAX,
    SOURCE_KEY_MAX,
    TITLE_MAX,
    UNRESOLVED,
    EntryKind,
    Incident,
    IncidentEntry,
    IncidentStatus,
    IncidentType,
    Severity,
    Source,
)
from hostatlas.incidents.views import announce
from hostatlas.servers.models import Server

# A problem back within this long of its automatic incident's resolution reopens that incident: a check that
# flaps every few minutes is one incident with a reopened entry per flap, not one incident per flap.
REOPEN_WINDOW = timedelta(minutes=30)
SYSTEM = "system"
AGENT = "agent"


@dataclass(frozen=True)
class Problem:
    """Something wrong, as a watching feature reports it."""

    team_id: int
    source: Source
    key: str  # identifies one thing within (team, source), e.g. "heartbeat:12"
    title: str
    severity: Severity
    server_id: int | None
    service: str | None
    data: dict[str, Any]  # JSON, stored in the timeline entry (opened / follow_up)
    message: str = ""  # the timeline entry's human text


@dataclass(frozen=True)
class Outcome:
    incident: Incident
    opened: bool  # this call opened or reopened it (False: a follow-up appended to the unresolved one)
    suppressed: bool  # attached to its server's offline incident: callers send NO event of their own


def report(session: Session, problem: Problem, *, at: datetime) -> Outcome:
    """Open, reopen or follow up the incident of ``problem``, in the caller's transaction."""
    if len(problem.key) > SOURCE_KEY_MAX:
        raise InvalidInput.single("key", "too_long", f"At most {SOURCE_KEY_MAX} characters")
    # One lookup: the unresolved incident of the problem if there is one, else its latest (locked either way).
    latest = _current_or_latest(session, problem.team_id, problem.source, problem.key)
    if latest is not None and latest.status in UNRESOLVED:
        # Unresolved (or reopened by another transaction while we waited for its row): a follow-up.
        return _follow_up(session, latest, problem, at)
    parent = _outage_of(session, problem)
    if latest is not None and _reopenable(latest, at):
        return _reopen_automatically(session, latest, problem, parent, at)
    incident = _insert(session, problem, parent, at)
    if incident is None:
        # Another transaction opened it between our look and our insert: ours is a follow-up on theirs.
        current = _unresolved(session, problem.team_id, problem.source, problem.key)
        if current is None:
            raise RuntimeError("an incident insert conflicted with no unresolved incident")
        return _follow_up(session, current, problem, at)
    _entry(session, incident, EntryKind.OPENED, at, actor=_actor_of(problem.source), message=problem.message,
           data=problem.data)
    if parent is not None:
        _attach_entries(session, parent, incident, at, data=problem.data)
    else:
        announce(session, incident, "created", at)
    return Outcome(incident, opened=True, suppressed=parent is not None)


def recover(session: Session, *, team_id: int, source: Source, key: str, at: datetime,
            data: dict[str, Any] | None = None, message: str = "") -> Outcome | None:
    """Resolve the unresolved incident of (team, source, key); None when there is none."""
    current = _unresolved(session, team_id, source, key)
    if current is None:
        return None
    suppressed = current.suppressed
    _resolve(session, current, at, actor=_actor_of(source), message=message, data=data or {})
    return Outcome(current, opened=False, suppressed=suppressed)


def server_outage(session: Session, *, team_id: int, server_id: int) -> Incident | None:
    """The unresolved offline incident of the server, if it is down."""
    return session.scalar(select(Incident).where(
        Incident.team_id == team_id, Incident.source == Source.SERVER.value,
        Incident.source_key == server_key(server_id), Incident.status.in_(UNRESOLVED)))


def server_key(server_id: int) -> str:
    return f"server:{server_id}"


def attach(session: Session, parent: Incident, child: Incident, at: datetime) -> None:
    """Attach an unresolved incident to a server outage that began after it (it keeps its status)."""
    child.parent_id = parent.id
    child.updated_at = at
    _attach_entries(session, parent, child, at, data={})


# --- by people, through the API -----------------------------------------------------------------------------

def create_incident(session: Session, *, team_id: int, actor: str, title: str, severity: Severity,
                    server_id: int | None, service: str | None, detected_at: datetime | None, message: str,
                    now: datetime) -> Incident:
    """A manual incident, announced at once (a person opened it: it is never suppressed)."""
    if server_id is not None and session.scalar(
            select(Server.id).where(Server.id == server_id, Server.team_id == team_id)) is None:
        raise InvalidInput.single("server_id", "server_not_found", "No such server in this team")
    if detected_at is not None and detected_at > now:
        raise InvalidInput.single("detected_at", "in_future", "An incident cannot be detected in the future")
    incident = Incident(team_id=team_id, title=title, severity=severity.value, status=IncidentStatus.OPEN.value,
                        type=IncidentType.MANUAL.value, source=Source.MANUAL.value, source_key=None,
                        server_id=server_id, service=service, suppressed=False, detected_at=detected_at or now,
                        created_at=now, updated_at=now)
    session.add(incident)
    session.flush()
    _entry(session, incident, EntryKind.OPENED, now, actor=actor, message=message)
    announce(session, incident, "created", now)
    return incident


def get_incident(session: Session, *, team_id: int, incident_id: int, lock: bool = False) -> Incident:
    stmt = select(Incident).where(Incident.id == incident_id, Incident.team_id == team_id)
    incident = session.scalar(stmt.with_for_update() if lock else stmt)
    if incident is None:
        raise NotFound("Incident", "incident_not_found")
    return incident


def acknowledge(session: Session, *, team_id: int, incident_id: int, actor: str, message: str,
                now: datetime) -> Incident:
    """Someone is on it. Acknowledging again changes nothing (one event, from the first)."""
    incident = get_incident(session, team_id=team_id, incident_id=incident_id, lock=True)
    if incident.status == IncidentStatus.ACKNOWLEDGED.value:
        return incident
    if incident.status == IncidentStatus.RESOLVED.value:
        raise Conflict("A resolved incident cannot be acknowledged; reopen it first", "incident_resolved")
    incident.status = IncidentStatus.ACKNOWLEDGED.value
    incident.acknowledged_at = now
    incident.acknowledged_by = actor
    incident.updated_at = now
    _entry(session, incident, EntryKind.ACKNOWLEDGED, now, actor=actor, message=message)
    if not incident.suppressed:
        announce(session, incident, "acknowledged", now)
    return incident


def resolve(session: Session, *, team_id: int, incident_id: int, actor: str, message: str,
            now: datetime) -> Incident:
    """Resolved by hand. Resolving again changes nothing. An automatic incident whose problem persists is
    followed up or reopened by its source's next report."""
    incident = get_incident(session, team_id=team_id, incident_id=incident_id, lock=True)
    if incident.status != IncidentStatus.RESOLVED.value:
        _resolve(session, incident, now, actor=actor, message=message, data={})
    return incident


def reopen(session: Session, *, team_id: int, incident_id: int, actor: str, message: str,
           now: datetime) -> Incident:
    """Back to open by hand. An unresolved incident is left as it is; an automatic one cannot be reopened while
    a newer incident of the same problem is unresolved (409)."""
    incident = get_incident(session, team_id=team_id, incident_id=incident_id, lock=True)
    if incident.status in UNRESOLVED:
        return incident
    if incident.source_key is not None and _unresolved(session, team_id, Source(incident.source),
                                                       incident.source_key) is not None:
        raise Conflict("A newer incident of the same problem is unresolved", "incident_superseded")
    announced = _announced(session, incident)
    _set_open(incident, now)
    incident.suppressed = False
    _entry(session, incident, EntryKind.REOPENED, now, actor=actor, message=message)
    announce(session, incident, "reopened" if announced else "created", now)
    return incident


def add_note(session: Session, *, team_id: int, incident_id: int, actor: str, message: str,
             now: datetime) -> IncidentEntry:
    incident = get_incident(session, team_id=team_id, incident_id=incident_id)
    incident.updated_at = now
    return _entry(session, incident, EntryKind.NOTE, now, actor=actor, message=message)


def listing(team_id: int, *, statuses: Sequence[IncidentStatus] = (), severities: Sequence[Severity] = (),
            server_id: int | None = None, service: str | None = None, type: IncidentType | None = None,
            source: Source | None = None, since: datetime | None = None, until: datetime | None = None,
            include_attached: bool = False) -> Select[Incident]:
    """The team's incidents matching the filters (the list's query). Attached incidents show in their outage's
    detail, and in the list only with ``include_attached``."""
    stmt = select(Incident).where(Incident.team_id == team_id)
    if statuses:
        stmt = stmt.where(Incident.status.in_([status.value for status in statuses]))
    if severities:
        stmt = stmt.where(Incident.severity.in_([severity.value for severity in severities]))
    if server_id is not None:
        stmt = stmt.where(Incident.server_id == server_id)
    if service is not None:
        stmt = stmt.where(Incident.service == service)
    if type is not None:
        stmt = stmt.where(Incident.type == type.value)
    if source is not None:
        stmt = stmt.where(Incident.source == source.value)
    if since is not None:
        stmt = stmt.where(Incident.detected_at >= since)
    if until is not None:
        stmt = stmt.where(Incident.detected_at < until)
    if not include_attached:
        stmt = stmt.where(Incident.parent_id.is_(None))
    return stmt


# --- the rules' moving parts ---------------------------------------------------------------------------------

def _actor_of(source: Source) -> str:
    return AGENT if source == Source.CRASH else SYSTEM


def _unresolved(session: Session, team_id: int, source: Source, key: str) -> Incident | None:
    # Locked (PostgreSQL): two reports of one problem append their follow-ups one after the other.
    return session.scalar(select(Incident).where(
        Incident.team_id == team_id, Incident.source == source.value, Incident.source_key == key,
        Incident.status.in_(UNRESOLVED)).with_for_update().execution_options(populate_existing=True))


def _current_or_latest(session: Session, team_id: int, source: Source, key: str) -> Incident | None:
    """The unresolved incident of (team, source, key) if any (the unique index allows one), else the newest.

    Locked and read afresh: a transaction that reopened it meanwhile is seen once it commits. One statement
    instead of two: a burst of new problems (an alert rule firing on a hundred servers) pays for each."""
    unresolved_first = case((Incident.status.in_(UNRESOLVED), 0), else_=1)
    return session.scalar(select(Incident).where(
        Incident.team_id == team_id, Incident.source == source.value, Incident.source_key == key)
        .order_by(unresolved_first, Incident.id.desc()).limit(1).with_for_update()
        .execution_options(populate_existing=True))


def _outage_of(session: Session, problem: Problem) -> Incident | None:
    if problem.server_id is None or problem.source == Source.SERVER:
        return None
    return server_outage(session, team_id=problem.team_id, server_id=problem.server_id)


def _reopenable(incident: Incident, at: datetime) -> bool:
    return (incident.type == IncidentType.AUTOMATIC.value and incident.resolved_at is not None
            and at - incident.resolved_at < REOPEN_WINDOW)


def _insert(session: Session, problem: Problem, parent: Incident | None, at: datetime) -> Incident | None:
    incident = Incident(team_id=problem.team_id, title=_fit(problem.title, TITLE_MAX), severity=problem.severity.value,
                        status=IncidentStatus.OPEN.value, type=IncidentType.AUTOMATIC.value,
                        source=problem.source.value, source_key=problem.key, server_id=problem.server_id,
                        service=_fit(problem.service, SERVICE_MAX) if problem.service else None,
                        parent_id=parent.id if parent else None,
                        suppressed=parent is not None, detected_at=at, created_at=at, updated_at=at)
    try:
        # A savepoint: losing the race to the unique index must not abort the caller's transaction.
        with session.begin_nested():
            session.add(incident)
            session.flush()
    except IntegrityError:
        return None
    return incident


def _follow_up(session: Session, incident: Incident, problem: Problem, at: datetime) -> Outcome:
    if problem.severity.rank > Severity(incident.severity).rank:
        incident.severity = problem.severity.value
    incident.updated_at = at
    _entry(session, incident, EntryKind.FOLLOW_UP, at, actor=_actor_of(problem.source), message=problem.message,
           data=problem.data)
    return Outcome(incident, opened=False, suppressed=_outage_of(session, problem) is not None)


def _reopen_automatically(session: Session, incident: Incident, problem: Problem, parent: Incident | None,
                          at: datetime) -> Outcome:
    announced = _announced(session, incident)
    _set_open(incident, at)
    incident.title = _fit(problem.title, TITLE_MAX)
    incident.severity = problem.severity.value
    incident.parent_id = parent.id if parent else None
    incident.suppressed = parent is not None
    _entry(session, incident, EntryKind.REOPENED, at, actor=_actor_of(problem.source), message=problem.message,
           data=problem.data)
    if parent is not None:
        _attach_entries(session, parent, incident, at, data=problem.data)
    else:
        announce(session, incident, "reopened" if announced else "created", at)
    return Outcome(incident, opened=True, suppressed=parent is not None)


def _set_open(incident: Incident, at: datetime) -> None:
    incident.status = IncidentStatus.OPEN.value
    incident.acknowledged_at = incident.acknowledged_by = None
    incident.resolved_at = incident.resolved_by = None
    incident.updated_at = at


def _resolve(session: Session, incident: Incident, at: datetime, *, actor: str, message: str,
             data: dict[str, Any]) -> None:
    """Resolve, announce unless never announced, tell its outage, and end the outage of what it holds."""
    incident.status = IncidentStatus.RESOLVED.value
    incident.resolved_at = at
    incident.resolved_by = actor
    incident.updated_at = at
    _entry(session, incident, EntryKind.RESOLVED, at, actor=actor, message=message, data=data)
    if not incident.suppressed:
        announce(session, incident, "resolved", at)
    parent = session.get(Incident, incident.parent_id) if incident.parent_id is not None else None
    if parent is not None and parent.status in UNRESOLVED:
        # It stays attached (the outage's detail shows what happened during it), but is over.
        _entry(session, parent, EntryKind.DETACHED, at, actor=actor, message=f"Resolved: {incident.title}",
               data={**_ref(incident), "reason": "resolved"})
    _release_children(session, incident, at)


def _release_children(session: Session, parent: Incident, at: datetime) -> None:
    """The outage is over: what is attached and unresolved stands on its own again, and what was never
    announced is announced now."""
    children = session.scalars(select(Incident).where(
        Incident.parent_id == parent.id, Incident.team_id == parent.team_id, Incident.status.in_(UNRESOLVED))
        .order_by(Incident.id).with_for_update())
    for child in children:
        child.parent_id = None
        child.updated_at = at
        message = f"Still unresolved after the outage of incident {parent.id} ended"
        _entry(session, child, EntryKind.DETACHED, at, actor=SYSTEM, message=message, data={"parent_id": parent.id})
        _entry(session, parent, EntryKind.DETACHED, at, actor=SYSTEM, message=f"Still unresolved: {child.title}",
               data={**_ref(child), "reason": "outage_ended"})
        if child.suppressed:
            child.suppressed = False
            announce(session, child, "reopened" if _announced(session, child) else "created", at)


def _attach_entries(session: Session, parent: Incident, child: Incident, at: datetime, *,
                    data: dict[str, Any]) -> None:
    _entry(session, parent, EntryKind.ATTACHED, at, actor=SYSTEM, message=child.title,
           data={**_ref(child), "data": data})
    _entry(session, child, EntryKind.ATTACHED, at, actor=SYSTEM,
           message=f"Attached to incident {parent.id}: {parent.title}",
           data={"parent_id": parent.id, "reason": "server_offline"})


def _fit(text: str, limit: int) -> str:
    """Titles are made of stored names (a 255-character hostname): cut, rather than fail the transaction."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ref(incident: Incident) -> dict[str, Any]:
    return {"incident_id": incident.id, "source": incident.source, "key": incident.source_key,
            "title": incident.title}


def _announced(session: Session, incident: Incident) -> bool:
    """Whether incident.created ever went out for it (one opened while attached and resolved during the
    outage never was)."""
    return bool(session.scalar(select(exists().where(
        Event.team_id == incident.team_id, Event.type == events.INCIDENT_CREATED,
        Event.resource_type == "incident", Event.resource_id == incident.id))))


def _entry(session: Session, incident: Incident, kind: EntryKind, at: datetime, *, actor: str,
           message: str = "", data: dict[str, Any] | None = None) -> IncidentEntry:
    entry = IncidentEntry(incident_id=incident.id, team_id=incident.team_id, at=at, kind=kind.value, actor=actor,
                          message=message, data=data or {})
    session.add(entry)
    return entry
