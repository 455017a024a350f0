"""Declarative base, naming conventions and column types shared by every feature's models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC: SQLite keeps no zone, PostgreSQL gets the same values."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value.replace(tzinfo=UTC)
        return moment


def time_binder(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """``UTCDateTime``'s bind conversion, dialect processing included, as one cheap function, for hot bulk
    statements that pass DB-API parameters themselves (the ping writer): through SQLAlchemy's two layers a
    datetime costs ~8 us, a ping has six. PostgreSQL takes naive UTC; SQLite stores SQLAlchemy's DATETIME
    text, which this reproduces exactly (``tests/test_units.py`` compares the two), since the indexed
    comparisons of the worker's sweep compare that text."""
    text = dialect.name == "sqlite"

    def bind(value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware datetime")
        naive = value.astimezone(UTC).replace(tzinfo=None)
        return naive.isoformat(" ", "microseconds") if text else naive

    return bind


# Every integer column without a type of its own: 64 bits, as the API's ids and counts are (http.types.Id).
# SQLite's INTEGER already is, and must stay spelled INTEGER: only "INTEGER PRIMARY KEY" is the rowid.
Int64Column = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {int: Int64Column}
