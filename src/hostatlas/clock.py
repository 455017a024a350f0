"""The one place the platform reads the wall clock, so tests can move it (time-machine)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def now_unix() -> float:
    """The same clock as ``utcnow``, as unix seconds (telemetry's timestamps are floats)."""
    return time.time()


def isoformat_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and whole seconds, as the API shows timestamps."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
