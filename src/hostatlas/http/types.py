"""Field types shared by request and response schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer

from hostatlas.clock import isoformat_z


def _assume_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Serialised as ISO-8601 UTC with a Z and whole seconds: "2026-03-21T14:32:01Z".
Timestamp = Annotated[datetime, PlainSerializer(isoformat_z, return_type=str, when_used="json")]
# Accepted with or without a zone; no zone means UTC.
TimestampIn = Annotated[datetime, AfterValidator(_assume_utc)]
