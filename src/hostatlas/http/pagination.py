"""Keyset pagination with ``?per_page``, an opaque ``?cursor`` and ``?sort=field|-field``.

The cursor holds the sort field and the last row's (value, id), so a page never skips or repeats rows
when rows are added meanwhile, and deep pages cost as little as the first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from hostatlas.errors import InvalidInput

T = TypeVar("T")
Row = TypeVar("Row")


class PageMeta(BaseModel):
    total: int = Field(description="Rows matching the filters, across all pages")
    per_page: int
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
    cursor: str | None = Query(None, description="Opaque cursor from meta.next_cursor"),
    sort: str | None = Query(None, description="Sort field; prefix with - for descending"),
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
    return base64.urlsafe_b64encode(orjson.dumps([sort, value, row_id])).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        cursor_sort, value, row_id = orjson.loads(base64.urlsafe_b64decode(padded))
        if isinstance(value, dict):
            value = datetime.fromisoformat(value["dt"])
        if cursor_sort != sort or not isinstance(row_id, int):
            raise ValueError("cursor made for another sort")
    except (ValueError, TypeError, KeyError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise InvalidInput.single("cursor", "invalid_cursor",
                                  "The cursor is not valid for this list and sort") from exc
    return value, row_id


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
        value, last_id = _decode(params.cursor, sort)
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
