"""Keyset pagination with ``?per_page``, an opaque ``?cursor`` and ``?sort=field|-field``.

The cursor holds the sort field and the last row's (value, id), so a page never skips or repeats rows
when rows are added meanwhile, and deep pages cost as little as the first. A cursor is client input like
any other: its value is validated against the sort column's type and bounds before it reaches a query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field, Strict, StringConstraints, TypeAdapter
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.types import TypeDecorator

from hostatlas.errors import InvalidInput
from hostatlas.http import cursors
from hostatlas.http.types import Id, Int64, NonNegativeInt, Storable, TimestampIn

T = TypeVar("T")
Row = TypeVar("Row")


class PageMeta(BaseModel):
    total: NonNegativeInt = Field(description="Rows matching the filters, across all pages")
    per_page: NonNegativeInt
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class Page(BaseModel, Generic[T]):
    data: list[T]
    meta: PageMeta


@dataclass(frozen=True)
class ListParams:
    per_page: int
    cursor: str | None
    sort: str | None


def list_params(
    per_page: int = Query(25, ge=1, le=100, description="Rows per page (1-100)"),
    cursor: Annotated[str, StringConstraints(max_length=4096), Storable] | None = Query(
        None, description="Opaque cursor from meta.next_cursor"),
    sort: Annotated[str, StringConstraints(max_length=64), Storable] | None = Query(
        None, description="Sort field; prefix with - for descending"),
) -> ListParams:
    return ListParams(per_page, cursor, sort)


@dataclass(frozen=True)
class PageResult(Generic[Row]):
    rows: list[Row]
    total: int
    per_page: int
    next_cursor: str | None


def _encode(sort: str, value: Any, row_id: int) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    return cursors.encode([sort, value, row_id])


# What a cursor may hold for a sort column of each Python type: what its store can compare against.
_CURSOR_VALUES: dict[type, TypeAdapter[Any]] = {
    int: TypeAdapter(Int64),
    str: TypeAdapter(Annotated[str, Strict(), Storable]),
    datetime: TypeAdapter(TimestampIn),
}
_CURSOR_ID: TypeAdapter[int] = TypeAdapter(Id)


def _decode(cursor: str, sort: str, column: InstrumentedAttribute[Any]) -> tuple[Any, int]:
    try:
        cursor_sort, value, row_id = cursors.decode(cursor)
        if cursor_sort != sort:
            raise ValueError("cursor made for another sort")
        return _cursor_value(value, column), _CURSOR_ID.validate_python(row_id)
    except (ValueError, TypeError) as exc:  # pydantic's and orjson's errors are ValueErrors
        raise InvalidInput.single("cursor", "invalid_cursor",
                                  "The cursor is not valid for this list and sort") from exc


def _cursor_value(value: Any, column: InstrumentedAttribute[Any]) -> Any:
    sql_type = column.type
    python_type = (sql_type.impl_instance if isinstance(sql_type, TypeDecorator) else sql_type).python_type
    if python_type is datetime:
        if not isinstance(value, dict) or list(value) != ["dt"]:
            raise ValueError("not an encoded moment")
        value = value["dt"]
    return _CURSOR_VALUES[python_type].validate_python(value)


def paginate(session: Session, stmt: Select[Row], *, id_column: InstrumentedAttribute[int],
             sortable: dict[str, InstrumentedAttribute[Any]], params: ListParams,
             default_sort: str = "-id") -> PageResult[Row]:
    """Run ``stmt`` (already filtered and team-scoped) for one page; sortable columns must be non-null."""
    sort = params.sort or default_sort
    descending = sort.startswith("-")
    field_name = sort.lstrip("-")
    column = id_column if field_name == "id" else sortable.get(field_name)
    if column is None:
        allowed = ", ".join(sorted({"id", *sortable}))
        raise InvalidInput.single("sort", "invalid_sort", f"Sort by one of: {allowed}")

    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    page_stmt = stmt
    if params.cursor:
        value, last_id = _decode(params.cursor, sort, column)
        if column is id_column:
            page_stmt = page_stmt.where(id_column < last_id if descending else id_column > last_id)
        else:
            beyond = column < value if descending else column > value
            tie = id_column < last_id if descending else id_column > last_id
            page_stmt = page_stmt.where(or_(beyond, and_(column == value, tie)))
    orders = [column.desc(), id_column.desc()] if descending else [column.asc(), id_column.asc()]
    if column is id_column:
        orders = orders[:1]
    rows = list(session.scalars(page_stmt.order_by(*orders).limit(params.per_page + 1)))
    next_cursor = None
    if len(rows) > params.per_page:
        rows = rows[: params.per_page]
        last = rows[-1]
        next_cursor = _encode(sort, getattr(last, column.key), getattr(last, id_column.key))
    return PageResult(rows, total, params.per_page, next_cursor)


def page_of(result: PageResult[Row], render: Callable[[Row], T]) -> Page[T]:
    """The list envelope for a page of rows, each rendered to its response shape."""
    return Page(data=[render(row) for row in result.rows],
                meta=PageMeta(total=result.total, per_page=result.per_page, next_cursor=result.next_cursor))
