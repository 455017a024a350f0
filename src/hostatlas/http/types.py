"""Field types shared by every request and response schema, query parameter, path parameter and cursor.

Input is validated once, here, at the edge, and strictly, because the stores behind it differ: PostgreSQL
refuses NUL in text and integers beyond 64 bits, SQLite overflows on them, and a number that JSON allows
(``1e400``, a 401-digit integer) may not be a number a float column can hold. So:

- ``Id``: 1..2^63-1, the range of a BIGINT primary key; a JSON ``true`` or ``5.0`` is not an id.
- ``Int64``/``NonNegativeInt``: integers that fit a BIGINT, never a bool. A tighter bound goes inside,
  ``Annotated[NonNegativeInt, Field(le=3600)]``: ``x: NonNegativeInt = Field(le=3600)`` keeps the type's
  own bound and silently drops 3600 (``NonNegativeInt | None = Field(None, le=3600)`` is fine).
- ``FiniteFloat``: a finite float (JSON integers accepted), never a bool, NaN or Infinity.
- ``Text``: a string without NUL and without lone surrogates (text every store can keep). With length
  limits, put the check last, ``Annotated[str, StringConstraints(max_length=64), Storable]``, so that the
  limits are checked (and worded) as a string's.
- ``Flag``: ``true`` or ``false``, never ``0``/``1`` or ``"yes"``.
- ``Sha256Hex``: a SHA-256 digest (a certificate's fingerprint) as 64 hexadecimal digits, kept lower-case.
- ``TimestampIn``: an ISO-8601 moment *string* between ``MIN_MOMENT`` and ``MAX_MOMENT``, no zone meaning
  UTC (a bare number is refused: ``1893456000`` is not obviously a moment); ``DateIn`` the same for a day.

Query and path parameters arrive as strings and cannot be strict; ``IdPath``/``IdQuery``/``CountQuery``
give them the same bounds, and ``Text``/``Storable`` work there as in bodies.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, Strict, StringConstraints
from pydantic_core import PydanticCustomError

from hostatlas.clock import isoformat_z

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
# Moments before the epoch or centuries ahead are typing mistakes, and some stores cannot hold them.
MIN_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(2200, 1, 1, tzinfo=UTC)
MIN_UNIX, MAX_UNIX = MIN_MOMENT.timestamp(), MAX_MOMENT.timestamp()


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text, or None: for code that checks without Pydantic."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 text (no lone surrogates)"
    return None


def _storable_text(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise PydanticCustomError("invalid_text", "{problem}", {"problem": problem[:1].upper() + problem[1:]})
    return value


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _sha256_hex(value: str) -> str:
    value = value.lower()
    if not _SHA256_HEX.fullmatch(value):
        raise PydanticCustomError("sha256_hex", "Must be a SHA-256 digest: 64 hexadecimal digits")
    return value


def _assume_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _out_of_range(low: object, high: object) -> PydanticCustomError:
    return PydanticCustomError("out_of_range", "Must be between {low} and {high}", {"low": low, "high": high})


def _bounded_moment(value: datetime) -> datetime:
    value = _assume_utc(value)
    if not MIN_MOMENT <= value < MAX_MOMENT:
        raise _out_of_range(isoformat_z(MIN_MOMENT), isoformat_z(MAX_MOMENT))
    return value


def _parse_iso(value: object, kind: str, example: str) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.upper())  # RFC 3339 allows a lower-case "t" and "z"
        except ValueError:
            pass
    raise PydanticCustomError(f"{kind}_format", "Must be an ISO-8601 {kind} string, e.g. {example}",
                              {"kind": kind.replace("datetime", "date and time"), "example": example})


def _iso_moment(value: object) -> object:
    # Pydantic would read a JSON number as unix seconds and a bool as 0 or 1: a moment must be written out.
    if isinstance(value, datetime):
        return value
    return _parse_iso(value, "datetime", "2026-03-21T14:32:01Z")


def _iso_day(value: object) -> object:
    # A full moment is accepted too (agents may send one): its calendar day, as written, is kept.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return _parse_iso(value, "date", "2026-08-14").date()


def _bounded_day(value: date) -> date:
    if not MIN_MOMENT.date() <= value < MAX_MOMENT.date():
        raise _out_of_range(MIN_MOMENT.date().isoformat(), MAX_MOMENT.date().isoformat())
    return value


Storable = AfterValidator(_storable_text)
Text = Annotated[str, Storable]
Sha256Hex = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), AfterValidator(_sha256_hex)]
Flag = Annotated[bool, Strict()]
Id = Annotated[int, Strict(), Field(ge=1, le=MAX_INT64)]
Int64 = Annotated[int, Strict(), Field(ge=MIN_INT64, le=MAX_INT64)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=MAX_INT64)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]

# Serialised as ISO-8601 UTC with a Z and whole seconds: "2026-03-21T14:32:01Z".
Timestamp = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str, when_used="json")]
# Accepted with or without a zone; no zone means UTC.
TimestampIn = Annotated[datetime, BeforeValidator(_iso_moment), AfterValidator(_bounded_moment)]
DateIn = Annotated[date, BeforeValidator(_iso_day), AfterValidator(_bounded_day)]

# Parameters: strings on the wire, so not strict, but bounded the same way.
IdPath = Annotated[int, Path(ge=1, le=MAX_INT64, description="The resource's id")]
# Give these their own Query(...) for the description: ``server_id: IdQuery | None = Query(None, ...)``.
IdQuery = Annotated[int, Field(ge=1, le=MAX_INT64)]
CountQuery = Annotated[int, Field(ge=0, le=MAX_INT64)]
