"""Turning a metrics query's parameters into a store query: times, step, tier and the point cap."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from hostatlas.errors import FieldProblem, InvalidInput
from hostatlas.telemetry.model import TIER_SECONDS, Tier

MAX_POINTS = 1500
RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
DURATION = re.compile(r"^(\d+)([smhdw]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
NICE_STEPS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
              604_800)
DEFAULT_RANGE = 3600


def parse_time(value: str | None, field_name: str, now: float) -> float | None:
    """ISO-8601, unix seconds, ``now`` or relative (``-1h``, ``-30m``, ``-7d``)."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text == "now":
        return now
    relative = RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput.single(field_name, "invalid_time",
                                  "Use ISO-8601, unix seconds, 'now' or a relative time like -1h") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_step(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    matched = DURATION.match(value.strip())
    if not matched or int(matched.group(1)) == 0:
        raise InvalidInput.single("step", "invalid_step", "A step is seconds or a duration like 60, 5m, 1h")
    return int(matched.group(1)) * UNIT_SECONDS[matched.group(2)]


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    step: int
    tier: Tier


def plan(*, start: float | None, end: float | None, step: int | None, now: float,
         raw_retention: int, minute_retention: int) -> Window:
    """Pick the step and tier: at most MAX_POINTS per series, from a tier that still holds the range."""
    end_s = end if end is not None else now
    start_s = start if start is not None else end_s - DEFAULT_RANGE
    if start_s >= end_s:
        raise InvalidInput([FieldProblem("from", "empty_range", "'from' must be before 'to'")])
    span = end_s - start_s
    wanted = step or next((nice for nice in NICE_STEPS if span / nice <= 300), NICE_STEPS[-1])
    wanted = max(wanted, math.ceil(span / MAX_POINTS))
    tier = _tier_for(wanted, start_s, now, raw_retention, minute_retention)
    bucket = TIER_SECONDS[tier]
    final_step = math.ceil(wanted / bucket) * bucket
    aligned_start = int(start_s // final_step * final_step)
    aligned_end = int(math.ceil(end_s / final_step) * final_step)
    return Window(aligned_start, aligned_end, final_step, tier)


def _tier_for(step: int, start: float, now: float, raw_retention: int, minute_retention: int) -> Tier:
    # The coarsest tier fine enough for the step answers fastest; an older range forces a coarser one.
    if step >= TIER_SECONDS[Tier.HOUR] or start < now - minute_retention:
        return Tier.HOUR
    if step >= TIER_SECONDS[Tier.MINUTE] or start < now - raw_retention:
        return Tier.MINUTE
    return Tier.RAW
