"""The one place the platform reads the wall clock, so tests can move it (time-machine)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and whole seconds, as the API shows timestamps."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
