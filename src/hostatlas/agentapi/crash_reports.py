"""Crash reports: what an agent saw when a service on its host crashed, as incidents. Domain code: no HTTP here.

The agent's ``key`` names the problem on its server (keys are the server's own: two hosts' ``nginx`` crashes
are two incidents), so the incident key is ``<server id>:<key>``. The first report opens the incident, the
same key again while it is open appends a follow-up with what the agent captured then (logs, a metric
snapshot, system state), and ``"resolved": true`` resolves it. Opening, following up, reopening and attaching
to the server's offline incident are the incidents service's rules, as for every other source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hostatlas.agentapi.schemas import CrashReport
from hostatlas.clock import isoformat_z
from hostatlas.incidents import service as incidents
from hostatlas.incidents.models import TITLE_MAX, Source
from hostatlas.servers.models import Server


def incident_key(server_id: int, key: str) -> str:
    return f"{server_id}:{key}"


def _captured(report: CrashReport, detected_at: datetime) -> dict[str, Any]:
    return {"logs": report.logs, "metrics": report.metrics, "state": report.state,
            "detected_at": isoformat_z(detected_at)}


def _title(report: CrashReport) -> str:
    if report.title:
        return report.title
    return f"{report.service or report.key} crashed"[:TITLE_MAX]


def receive(session: Session, *, server: Server, report: CrashReport, now: datetime) -> incidents.Outcome | None:
    """Apply one crash report of ``server``'s agent; None for a resolution of a key with no open incident."""
    # An agent's clock may run ahead: an incident is never detected in the future.
    detected_at = min(report.detected_at or now, now)
    key = incident_key(server.id, report.key)
    if report.resolved:
        return incidents.recover(session, team_id=server.team_id, source=Source.CRASH, key=key, at=now,
                                 data=_captured(report, detected_at), message=report.title or "")
    problem = incidents.Problem(team_id=server.team_id, source=Source.CRASH, key=key, title=_title(report),
                                severity=report.severity, server_id=server.id, service=report.service,
                                data=_captured(report, detected_at), message=report.title or "")
    return incidents.report(session, problem, at=detected_at)
