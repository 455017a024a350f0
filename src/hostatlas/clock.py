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


class Throttle:
    """Lets a periodic job do its work at most once every ``every`` seconds of the ``now`` it is given (the
    worker's clock, moved by tests). A ``now`` earlier than the last run (the clock was set back) is due at
    once rather than waiting for the clock to catch up. The state lives as long as the job object."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last_run: float | None = None

    def due(self, now: datetime) -> bool:
        moment = now.timestamp()
        return self._last_run is None or not 0 <= moment - self._last_run < self.every

    def ran(self, now: datetime) -> None:
        self._last_run = now.timestamp()
