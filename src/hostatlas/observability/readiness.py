"""What ``/readyz`` judges: the database answers, no pipeline is stuck, telemetry storage keeps up, and
nothing waits in the quarantine.

Each check says ``ok`` or what is wrong in one word, and adds a sentence to ``reasons`` when it is not
fine; any reason makes the answer 503. Reasons name the pipeline and how long, never an error's text:
the endpoint is unauthenticated, and the logs (``item_quarantined``, ``*_failed``) hold the details.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session

from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.health import PipelineHealth

log = structlog.get_logger(__name__)


class Backlog(Protocol):
    """The telemetry spool's state (``Telemetry.backlog_status()``): what is acknowledged but not stored."""

    @property
    def bytes(self) -> int: ...

    @property
    def segments(self) -> int: ...

    @property
    def oldest_age_seconds(self) -> float: ...

    @property
    def storer_lag_seconds(self) -> float: ...


@dataclass(frozen=True)
class Sources:
    """What the composition layer hands to ``/readyz`` and ``/metrics``; each is read when asked."""

    db: Database
    health: PipelineHealth
    telemetry_backlog: Callable[[], Backlog]
    # queue name -> how many items wait in it (a cheap COUNT), e.g. "webhook_deliveries"
    queue_depths: Mapping[str, Callable[[Session], int]] = field(default_factory=dict)


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def body(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "degraded", **self.checks, "reasons": self.reasons}

    def fine(self, check: str) -> None:
        self.checks[check] = "ok"

    def problem(self, check: str, state: str, reason: str) -> None:
        self.checks[check] = state
        self.reasons.append(reason)


def judge(sources: Sources, *, stuck_after: float) -> Readiness:
    readiness = Readiness()
    _database_and_quarantine(sources.db, readiness)
    _pipelines(sources.health, stuck_after, readiness)
    _telemetry(sources.telemetry_backlog, stuck_after, readiness)
    if not readiness.ok:
        log.warning("not_ready", reasons=readiness.reasons)
    return readiness


def _database_and_quarantine(db: Database, readiness: Readiness) -> None:
    try:
        with db.session(write=False) as session:
            session.execute(text("SELECT 1"))
            waiting = quarantine.counts(session)
    except Exception as exc:
        readiness.problem("database", "unreachable", f"the database does not answer ({type(exc).__name__})")
        readiness.checks["quarantine"] = "unknown"
        return
    readiness.fine("database")
    if not waiting:
        readiness.fine("quarantine")
        return
    for summary in waiting:
        readiness.problem("quarantine", "items", f"{summary.items} item(s) of pipeline {summary.pipeline} wait "
                          "in the quarantine: `hostatlas quarantine list` shows them")


def _pipelines(health: PipelineHealth, stuck_after: float, readiness: Readiness) -> None:
    stuck = health.stuck(stuck_after)
    if not stuck:
        readiness.fine("pipelines")
    for state in stuck:
        readiness.problem("pipelines", "stuck", f"pipeline {state.name} has been failing for "
                          f"{state.failing_for(time.monotonic()):.0f} s")


def _telemetry(backlog: Callable[[], Backlog], stuck_after: float, readiness: Readiness) -> None:
    try:
        status = backlog()
    except Exception as exc:
        readiness.problem("telemetry", "unknown", f"the telemetry spool cannot be read ({type(exc).__name__})")
        return
    if status.oldest_age_seconds <= stuck_after:
        readiness.fine("telemetry")
        return
    readiness.problem("telemetry", "stuck", f"telemetry storage is stuck: the oldest batch has waited "
                      f"{status.oldest_age_seconds:.0f} s ({status.segments} segment(s), {status.bytes} bytes)")
