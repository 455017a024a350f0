"""Turning a metrics or logs query's parameters into a store query: times, step, tier, labels, the point cap.

Every parameter is checked before a store is asked, and a request with several bad ones hears of all of
them (``Problems``): times must be finite and between 1970 and 2200, steps at most ``MAX_STEP``, label
filters label names with text any store can compare.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from hostatlas.errors import FieldProblem, InvalidInput
from hostatlas.http.types import MAX_UNIX, MIN_UNIX, text_problem
from hostatlas.telemetry.storage.contract import LEVELS, TIER_SECONDS, Agg, Tier
from hostatlas.telemetry.storage.series import LABEL_NAME, MAX_LABEL_VALUE

T = TypeVar("T")

MAX_POINTS = 1500
# Digits are bounded so that no parameter makes a number Python would refuse (or take long) to convert.
RELATIVE = re.compile(r"^-([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhdw])\Z")
DURATION = re.compile(r"^([0-9]{1,12})([smhdw]?)\Z")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
NICE_STEPS = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800,
              604_800)
DEFAULT_RANGE = 3600
MAX_STEP = 366 * 86_400


@dataclass(frozen=True)
class SeriesParams:
    """A metric read's parameters as the request gave them: ``series_window`` checks them."""

    metric: str
    start: str | None
    end: str | None
    step: str | None
    agg: Agg
    labels: Mapping[str, str]  # the request's other parameters: label filters
    # Points per series at most: the API keeps answers small; the dashboard's 7-day chart asks for a week at 1 min.
    max_points: int = MAX_POINTS


@dataclass(frozen=True)
class LogParams:
    """A log search's parameters as the request gave them: ``log_query`` (query/service.py) checks them."""

    server_ids: list[int] | None  # None: all the team's servers
    text: str | None
    levels: list[str] | None
    source: str | None
    start: str | None
    end: str | None
    per_page: int
    cursor: str | None


@dataclass
class Problems:
    """The problems of several parameters, gathered so that one answer names every invalid one."""

    found: list[FieldProblem] = field(default_factory=list)

    def check(self, parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except InvalidInput as exc:
            self.found += exc.fields
            return None

    def raise_any(self) -> None:
        if self.found:
            raise InvalidInput(self.found)


def parse_time(value: str | None, field_name: str, now: float) -> float | None:
    """ISO-8601, unix seconds, ``now`` or relative (``-1h``, ``-30m``, ``-7d``), between 1970 and 2200."""
    if value is None or value == "":
        return None
    try:
        moment = _moment(value.strip(), now)
    except (ValueError, OverflowError):
        raise InvalidInput.single(field_name, "invalid_time",
                                  "Use ISO-8601, unix seconds, 'now' or a relative time like -1h") from None
    if not (math.isfinite(moment) and MIN_UNIX <= moment <= MAX_UNIX):
        raise InvalidInput.single(field_name, "out_of_range", "The time must be between 1970 and 2200")
    return moment


def _moment(text: str, now: float) -> float:
    if text == "now":
        return now
    relative = RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)  # NaN and inf included: the caller's bounds refuse them
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_step(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    matched = DURATION.match(value.strip())
    if not matched or int(matched.group(1)) == 0:
        raise InvalidInput.single("step", "invalid_step", "A step is seconds or a duration like 60, 5m, 1h")
    step = int(matched.group(1)) * UNIT_SECONDS[matched.group(2)]
    if step > MAX_STEP:
        raise InvalidInput.single("step", "out_of_range", f"A step is at most {MAX_STEP // 86_400} days")
    return step


def check_levels(levels: Sequence[str] | None) -> None:
    if set(levels or ()) - set(LEVELS):
        raise InvalidInput.single("level", "invalid_level", f"Levels are {', '.join(LEVELS)}")


def label_filters(params: Mapping[str, str]) -> dict[str, str]:
    """Query parameters naming labels (``mount=/``): label names, with values a store can compare."""
    problems = [FieldProblem(name[:64], "invalid_label", message) for name, value in params.items()
                if (message := _label_filter_problem(name, value))]
    if problems:
        raise InvalidInput(problems)
    return dict(params)


def _label_filter_problem(name: str, value: str) -> str | None:
    if not LABEL_NAME.match(name):
        return "Not a parameter of this endpoint, nor a label name ([a-z_][a-z0-9_]*)"
    if len(value) > MAX_LABEL_VALUE:
        return f"A label value is at most {MAX_LABEL_VALUE} characters"
    problem = text_problem(value)
    return f"The label value {problem}" if problem else None


def series_window(*, start: str | None, end: str | None, step: str | None, labels: Mapping[str, str], now: float,
                  raw_retention: int, minute_retention: int,
                  max_points: int = MAX_POINTS) -> tuple[Window, dict[str, str]]:
    """A metric query's window and label filters from its parameters, every bad one named at once."""
    problems = Problems()
    begin = problems.check(lambda: parse_time(start, "from", now))
    finish = problems.check(lambda: parse_time(end, "to", now))
    step_s = problems.check(lambda: parse_step(step))
    filters = problems.check(lambda: label_filters(labels))
    problems.raise_any()
    window = plan(start=begin, end=finish, step=step_s, now=now, raw_retention=raw_retention,
                  minute_retention=minute_retention, max_points=max_points)
    return window, filters or {}


@dataclass(frozen=True)
class Window:
    start: int
    end: int
    step: int
    tier: Tier


def plan(*, start: float | None, end: float | None, step: int | None, now: float,
         raw_retention: int, minute_retention: int, max_points: int = MAX_POINTS) -> Window:
    """Pick the step and tier: at most ``max_points`` per series, from a tier that still holds the range."""
    end_s = end if end is not None else now
    start_s = start if start is not None else end_s - DEFAULT_RANGE
    if start_s >= end_s:
        raise InvalidInput([FieldProblem("from", "empty_range", "'from' must be before 'to'")])
    span = end_s - start_s
    wanted = step or next((nice for nice in NICE_STEPS if span / nice <= 300), NICE_STEPS[-1])
    wanted = max(wanted, math.ceil(span / max_points))
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
