"""The SSL expiry watch as a worker job: resolve the incidents of renewed certificates, then notice new crossings.

A pass reads outside a write transaction (most passes find every crossing noticed already) and writes only the
items with a notice due, in batches isolated the way the other sweeps are (``pipelines.isolation``): one
certificate whose row cannot be turned into an event (bad stored data) is set aside (``certwatch.expiry``)
and skipped by later passes until it is replayed, and never keeps the others from their notices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostatlas.certwatch import service
from hostatlas.certwatch.service import Watched
from hostatlas.clock import Throttle, utcnow
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.isolation import write_isolating
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings

PIPELINE = "certwatch.expiry"
BATCH = 200
# Expiry moves in days: a pass every five minutes is on time, and writes nothing when nothing is due.
WATCH_EVERY = 300.0
# Notices looked at for staleness per pass.
PRUNE_BATCH = 1000

T = TypeVar("T")


def watch_certificates(db: Database, settings: Settings, now: datetime) -> int:
    """One pass as of ``now``; returns the incidents resolved plus the ``ssl.expiring`` events recorded."""
    aside = _set_aside_keys(db)
    with db.session(write=False) as session:
        notices = [notice_id for notice_id in service.open_incidents(session) if _notice_key(notice_id) not in aside]
    settled = _isolated(db, notices, lambda session, notice_id: service.settle(session, notice_id, now),
                        lambda notice_id: {"kind": "notice", "notice_id": notice_id}, now)
    with db.session(write=False) as session:
        items = [item for item in service.pending(session, service.expiring(session, now), now)
                 if _item_key(item) not in aside]
    sent = _isolated(db, items, lambda session, item: service.watch(session, item, now),
                     lambda item: {"kind": "item", "item": item.as_json()}, now)
    return settled + sent


class CertificateWatch:
    """``watch_certificates`` at most once every ``every`` seconds of the ``now`` it is given (``clock.Throttle``).

    Each pass also looks at ``PRUNE_BATCH`` more notices for stale ones (``service.forget_stale``), from where
    the last pass stopped, starting over at the end: the notice table holds what is still needed.
    """

    def __init__(self, every: float = WATCH_EVERY) -> None:
        self.throttle = Throttle(every)
        self._pruned_to = 0

    def __call__(self, db: Database, settings: Settings, now: datetime) -> int:
        if not self.throttle.due(now):
            return 0
        done = watch_certificates(db, settings, now)
        with db.session(write=True) as session:
            _, last = service.forget_stale(session, now, after_id=self._pruned_to, limit=PRUNE_BATCH)
        self._pruned_to = last or 0
        self.throttle.ran(now)
        return done


def _isolated(db: Database, items: Sequence[T], step: Callable[[Session, T], int],
              describe: Callable[[T], dict[str, Any]], now: datetime) -> int:
    made = 0

    def write(piece: list[T]) -> None:
        nonlocal made
        with db.session(write=True) as session:
            counted = sum(step(session, item) for item in piece)
        made += counted  # only once committed

    done = write_isolating(items, write, batch=BATCH)
    for item, exc in done.poison:
        payload = describe(item)
        quarantine.set_aside_now(db, pipeline=PIPELINE, reason=quarantine.describe(exc),
                                 payload=json.dumps(payload, sort_keys=True).encode(),
                                 team_id=_team_of(payload), now=now)
    if done.outage is not None:
        raise done.outage
    return made


def _team_of(payload: dict[str, Any]) -> int | None:
    team_id = payload.get("item", {}).get("team_id")
    return int(team_id) if team_id is not None else None


def _notice_key(notice_id: int) -> str:
    return f"notice:{notice_id}"


def _item_key(item: Watched) -> str:
    return f"item:{item.kind}:{item.row_id}:{item.not_after.isoformat()}"


def _key_of(payload: dict[str, Any]) -> str:
    if payload["kind"] == "notice":
        return _notice_key(payload["notice_id"])
    return _item_key(Watched.from_json(payload["item"]))


def _set_aside_keys(db: Database) -> set[str]:
    """What the quarantine holds: skipped until replayed, so a bad row costs no transaction per pass."""
    with db.session(write=False) as session:
        payloads = session.scalars(select(QuarantinedItem.payload).where(QuarantinedItem.pipeline == PIPELINE))
        return {_key_of(json.loads(payload)) for payload in payloads}


def replay(db: Database, item: QuarantinedItem) -> None:
    """Try a set-aside certificate (or renewal) again as of now; raises, keeping it aside, if it fails again."""
    payload = json.loads(item.payload)
    now = utcnow()
    with db.session(write=True) as session:
        if payload["kind"] == "notice":
            service.settle(session, payload["notice_id"], now)
        else:
            service.watch(session, Watched.from_json(payload["item"]), now)
