"""API key usage: one use the database refuses never stops the others' last-use bookkeeping."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from hostatlas.apikeys.models import ApiKey
from hostatlas.apikeys.usage import KeyUsageTracker
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.jobs import replayers
from hostatlas.pipelines import quarantine
from hostatlas.settings import Settings
from tests.support import Story


def _key(db: Database, name: str) -> ApiKey:
    with db.session(write=False) as session:
        return session.scalars(select(ApiKey).where(ApiKey.name == name)).one()


def test_a_poison_key_use_is_set_aside_and_the_other_teams_uses_are_written(db: Database, settings: Settings,
                                                                           story: Story) -> None:
    tracker = KeyUsageTracker(timedelta(seconds=60))
    at = utcnow()
    # A lone surrogate: neither SQLite nor PostgreSQL can encode it (the edge refuses it in headers).
    tracker.note(_key(db, "admin B"), at=at, ip="10.0.0.\ud800")
    tracker.note(_key(db, "admin A"), at=at, ip="10.0.0.1")
    tracker.note(_key(db, "teammate A"), at=at, ip="10.0.0.2")
    assert tracker.flush(db) == 2
    assert (_key(db, "admin A").last_used_at, _key(db, "admin A").last_used_ip) == (at, "10.0.0.1")
    assert _key(db, "teammate A").last_used_ip == "10.0.0.2"
    assert _key(db, "admin B").last_used_at is None
    with db.session(write=False) as session:
        [item] = quarantine.listing(session, pipeline="apikeys.usage")
    assert item.team_id == story.team_b and "UnicodeEncodeError" in item.reason
    assert tracker.flush(db) == 0  # set aside, not retried

    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow()) is False
    quarantine.drop(db, item.id)
    with db.session(write=False) as session:
        assert quarantine.listing(session) == []
