"""The quarantine: where a pipeline sets aside an item that keeps failing, so the rest of the line moves on.

An item is never retried forever at the head of a queue, and never silently lost: it is written here
with the reason (logged once, counted in ``/metrics``, reported by ``/readyz``), and stays until an
operator replays it (``hostatlas quarantine replay ID``, once the cause is fixed) or drops it.

A reason is stored as text cut to ``MAX_REASON_CHARS`` and scrubbed of NUL (PostgreSQL refuses NUL in
text), since the reason often quotes the bad input itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hostatlas.db.engine import Database
from hostatlas.errors import NotFound
from hostatlas.pipelines.models import QuarantinedItem

log = structlog.get_logger(__name__)

MAX_REASON_CHARS = 2000

# pipeline -> how to try one of its items again; raises if it fails again.
Replayer = Callable[[Database, "QuarantinedItem"], None]
Replayers = Mapping[str, Replayer]


def describe(exc: BaseException) -> str:
    """A reason from an exception: its type and first line, never statement parameters (they may hold secrets)."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _clean(reason: str) -> str:
    return reason.replace("\x00", "\\0")[:MAX_REASON_CHARS]


def set_aside(session: Session, *, pipeline: str, reason: str, payload: bytes, team_id: int | None,
              now: datetime) -> QuarantinedItem:
    """Add an item to the caller's transaction; logged here, once."""
    item = QuarantinedItem(pipeline=pipeline, team_id=team_id, reason=_clean(reason), payload=payload,
                           created_at=now, last_failed_at=now)
    session.add(item)
    session.flush()
    log.error("item_quarantined", pipeline=pipeline, item_id=item.id, team_id=team_id, reason=item.reason)
    return item


def set_aside_now(db: Database, *, pipeline: str, reason: str, payload: bytes, team_id: int | None,
                  now: datetime) -> int:
    """``set_aside`` in a transaction of its own; returns the item's id."""
    with db.session(write=True) as session:
        return set_aside(session, pipeline=pipeline, reason=reason, payload=payload, team_id=team_id, now=now).id


@dataclass(frozen=True)
class QuarantineSummary:
    pipeline: str
    items: int
    oldest: datetime | None


def counts(session: Session) -> list[QuarantineSummary]:
    rows = session.execute(select(QuarantinedItem.pipeline, func.count(), func.min(QuarantinedItem.created_at))
                           .group_by(QuarantinedItem.pipeline).order_by(QuarantinedItem.pipeline)).all()
    return [QuarantineSummary(pipeline, items, oldest) for pipeline, items, oldest in rows]


def listing(session: Session, *, pipeline: str | None = None, limit: int = 100) -> list[QuarantinedItem]:
    stmt = select(QuarantinedItem).order_by(QuarantinedItem.id).limit(limit)
    if pipeline is not None:
        stmt = stmt.where(QuarantinedItem.pipeline == pipeline)
    return list(session.scalars(stmt))


def get_item(session: Session, item_id: int) -> QuarantinedItem:
    item = session.get(QuarantinedItem, item_id)
    if item is None:
        raise NotFound("Quarantined item", "quarantined_item_not_found")
    return item


def drop(db: Database, item_id: int) -> None:
    with db.session(write=True) as session:
        get_item(session, item_id)
        session.execute(delete(QuarantinedItem).where(QuarantinedItem.id == item_id))
    log.info("quarantined_item_dropped", item_id=item_id)


def replay(db: Database, item_id: int, replayers: Replayers, *, now: datetime) -> bool:
    """Try an item again through its pipeline: removed on success; on failure kept, with the new reason."""
    with db.session(write=False) as session:
        item = get_item(session, item_id)
    replayer = replayers.get(item.pipeline)
    if replayer is None:
        raise NotFound(f"A replayer for pipeline {item.pipeline!r}", "no_replayer")
    try:
        replayer(db, item)
    except Exception as exc:
        with db.session(write=True) as session:
            stored = get_item(session, item_id)
            stored.failures += 1
            stored.reason = _clean(describe(exc))
            stored.last_failed_at = now
        log.warning("quarantined_item_replay_failed", item_id=item_id, pipeline=item.pipeline,
                    reason=describe(exc))
        return False
    with db.session(write=True) as session:
        session.execute(delete(QuarantinedItem).where(QuarantinedItem.id == item_id))
    log.info("quarantined_item_replayed", item_id=item_id, pipeline=item.pipeline)
    return True
