"""Field types shared by every request and response schema, query parameter, path parameter and cursor.

Input is validated once, here, at the edge, and strictly, because the stores behind it differ: PostgreSQL
refuses NUL in text and integers beyond 64 bits, SQLite overflows on them, and a number that JSON allows
(``1e400``, a 401-digit integer) may not be a number a float column can hold. So:

- ``Id``: 1..2^63-1, the range of a BIGINT primary key; a JSON ``true`` or ``5.0`` is not an id.
- ``Int64``/``NonNegativeInt``: integers that fit a BIGINT, never a bool.
- ``FiniteFloat``: a finite float (JSON integers accepted), never a bool, NaN or Infinity.
- ``Text``: a string without NUL and without lone surrogates (text every store can keep).
- ``TimestampIn``: an ISO-8601 moment between ``MIN_MOMENT`` and ``MAX_MOMENT``, no zone meaning UTC.

Query and path parameters arrive as strings and cannot be strict; ``IdPath``/``IdQuery`` and friends give
them the same bounds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field, PlainSerializer, Strict

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
        raise ValueError(problem)
    return value


def _assume_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _bounded_moment(value: datetime) -> datetime:
    value = _assume_utc(value)
    if not MIN_MOMENT <= value < MAX_MOMENT:
        raise ValueError(f"must be between {isoformat_z(MIN_MOMENT)} and {isoformat_z(MAX_MOMENT)}")
    return value


Text = Annotated[str, AfterValidator(_storable_text)]
Id = Annotated[int, Strict(), Field(ge=1, le=MAX_INT64)]
Int64 = Annotated[int, Strict(), Field(ge=MIN_INT64, le=MAX_INT64)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0, le=MAX_INT64)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]

# Serialised as ISO-8601 UTC with a Z and whole seconds: "2026-03-21T14:32:01Z".
Timestamp = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str, when_used="json")]
# Accepted with or without a zone; no zone means UTC.
TimestampIn = Annotated[datetime, AfterValidator(_bounded_moment)]

# Parameters: strings on the wire, so not strict, but bounded the same way.
IdPath = Annotated[int, Path(ge=1, le=MAX_INT64, description="The resource's id")]
