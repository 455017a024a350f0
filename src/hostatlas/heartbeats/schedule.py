"""When a heartbeat's next ping is due: a fixed interval, or a cron expression read in a named timezone.

Cron is evaluated by cronsim (the evaluator Healthchecks itself uses), in the heartbeat's timezone, so a
job at ``30 2 * * *`` in Europe/Berlin is expected at 03:00 on the night the clocks skip 02:xx and once,
not twice, on the night they repeat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

MAX_CRON_LENGTH = 100
CRON_FIELDS = 5


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a cron expression we can evaluate, or None."""
    if len(expression) > MAX_CRON_LENGTH:
        return f"At most {MAX_CRON_LENGTH} characters"
    # cronsim also reads a sixth (seconds) field: a job expected every second is not a cron job.
    if len(expression.split()) != CRON_FIELDS:
        return "Use the five standard fields: minute hour day-of-month month day-of-week"
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return str(exc) or "Not a cron expression"
    return None


def timezone_problem(name: str) -> str | None:
    if name not in _known_timezones():
        return f"Unknown timezone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
    return None


@lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    return frozenset(available_timezones() | {"UTC"})


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:  # validated on save; a removed zone falls back to UTC
        raise ValueError(name) from exc


@dataclass(frozen=True)
class Schedule:
    """Exactly one of ``interval`` (seconds) and ``cron`` is set."""

    interval: int | None = None
    cron: str | None = None
    timezone: str = "UTC"

    def next_due(self, after: datetime) -> datetime:
        """The first moment a ping is expected strictly after ``after`` (an aware datetime), in UTC."""
        if self.interval is not None:
            return after + timedelta(seconds=self.interval)
        assert self.cron is not None
        try:
            zone = _zone(self.timezone)
        except ValueError:
            zone = ZoneInfo("UTC")
        local = after.astimezone(zone).replace(microsecond=0)
        return next(iter(CronSim(self.cron, local))).astimezone(UTC)

    def typical_period(self, around: datetime) -> float:
        """Seconds between two expected pings near ``around`` (how often is "far too often")."""
        if self.interval is not None:
            return float(self.interval)
        first = self.next_due(around)
        return (self.next_due(first) - first).total_seconds()
