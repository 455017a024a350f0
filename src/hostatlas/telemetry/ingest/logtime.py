"""Timestamps as log lines write them, turned into epoch seconds fast: the log parser's time helpers.

No datetime objects on the hot path: dates become days with integer arithmetic, and the results are
cached per whole second (streams repeat their timestamps line after line), in caches that are cleared
when full, so hostile input cannot grow memory.
"""

from __future__ import annotations

import re
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

CACHE_MAX = 4096


def remember(cache: dict[K, V], key: K, value: V) -> V:
    """Store into a bounded cache. Readers use one lookup (try/except KeyError), not `in` then `[]`, so
    another thread clearing the cache between the two cannot make a line fail."""
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
FRACTION_SCALE = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000)
_DAYS: dict[int, int | None] = {}


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm; no datetime limits)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days(year: int, month: int, day: int) -> int | None:
    key = (year * 100 + month) * 100 + day
    try:
        return _DAYS[key]
    except KeyError:
        pass
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    valid = 1 <= month <= 12 and 1 <= day <= (29 if month == 2 and leap else _MONTH_DAYS[month])
    return remember(_DAYS, key, days_from_civil(year, month, day) if valid else None)


def epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second, folded into the next minute
        return None
    days = _days(year, month, day)
    return None if days is None else float(days * 86400 + hour * 3600 + minute * 60 + second)


_ZONES: dict[str, int] = {}


def zone_offset(zone: str) -> int:
    """Seconds east of UTC of "Z", "+05", "+0530" or "-05:30"; a host logs in one zone, so it is cached."""
    try:
        return _ZONES[zone]
    except KeyError:
        pass
    digits = zone[1:].replace(":", "")
    offset = int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60 if digits else 0
    return remember(_ZONES, zone, -offset if zone[0] == "-" else offset)


# ISO-8601 as logs write it. Whole seconds (without zone) are cached: streams repeat them line after line.
ISO_BODY = r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:[.,](\d+))?([Zz]|[+-]\d\d(?::?\d\d)?)?"
ISO = re.compile(ISO_BODY, re.ASCII)
_ISO_SECONDS: dict[str, float | None] = {}


def iso_ts(stamp: str, fraction: str | None, zone: str | None) -> float | None:
    """Epoch of an ISO match's groups."""
    try:
        ts = _ISO_SECONDS[stamp]
    except KeyError:
        ts = remember(_ISO_SECONDS, stamp, epoch(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]),
                                                   int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])))
    if ts is None:
        return None
    if zone:
        ts -= zone_offset(zone)
    if fraction:
        ts += int(fraction[:9]) / FRACTION_SCALE[min(len(fraction), 9)]
    return ts
