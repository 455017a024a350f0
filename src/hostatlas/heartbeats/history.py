"""A heartbeat's detail: its API shape plus the run-duration history and the too-often count.

Both ``GET /heartbeats/{id}`` and the ``heartbeat.missed`` / ``heartbeat.recovered`` payloads are built by
``detail_of``, so the seed's promise (event data has the GET endpoint's shape) holds by construction.
"""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostatlas.heartbeats.models import Heartbeat, HeartbeatPing
from hostatlas.heartbeats.schemas import HeartbeatDetail, HeartbeatOut, RunHistory

# The run-duration history and the too-often count read this many of the latest pings.
HISTORY_PINGS = 100


def detail_of(session: Session, heartbeat: Heartbeat, public_url: str) -> HeartbeatDetail:
    """p50/p95 of the durations among the last ``HISTORY_PINGS`` pings that have one, and how many of the
    last ``HISTORY_PINGS`` pings came too often."""
    durations = sorted(value for value in session.scalars(
        select(HeartbeatPing.duration_s).where(HeartbeatPing.heartbeat_id == heartbeat.id,
                                               HeartbeatPing.duration_s.is_not(None))
        .order_by(HeartbeatPing.id.desc()).limit(HISTORY_PINGS)) if value is not None)
    latest = select(HeartbeatPing.too_often).where(HeartbeatPing.heartbeat_id == heartbeat.id) \
        .order_by(HeartbeatPing.id.desc()).limit(HISTORY_PINGS).subquery()
    too_often = session.scalar(select(func.count()).select_from(latest).where(latest.c.too_often.is_(True))) or 0
    runs = RunHistory(count=len(durations), p50_s=_percentile(durations, 50), p95_s=_percentile(durations, 95))
    return HeartbeatDetail(**HeartbeatOut.of(heartbeat, public_url).model_dump(), runs=runs,
                           too_often_recent=too_often)


def _percentile(ordered: list[float], percent: int) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]
