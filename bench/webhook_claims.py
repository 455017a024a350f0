"""What a disabled webhook's backlog costs the dispatcher's claim, parked or not (PostgreSQL).

    uv run python bench/webhook_claims.py

In a fresh schema: one enabled webhook with --due due deliveries and one disabled webhook with
--backlog due deliveries, then VACUUM ANALYZE. Times `Dispatcher.claim` (--rounds claims, leases given
back between them, median) twice: with the disabled webhook's deliveries left due (as if disabling did
not park them) and after `service.disable` parked them (`next_attempt_at` NULL).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta

from sqlalchemy import select, text, update

from hostatlas.clock import utcnow
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.teams.models import Team
from hostatlas.webhooks import service
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.models import Webhook

from _harness import insert_pending_deliveries, postgres_schema


def _deliveries(db: Database, team_id: int, webhook_id: int, count: int, due_at: datetime) -> None:
    with db.engine.begin() as connection:
        insert_pending_deliveries(connection, team_id=team_id, webhook_id=webhook_id, count=count, at=due_at,
                                  body=lambda _: "{}")


def _median_claim_ms(db: Database, dispatcher: Dispatcher, rounds: int) -> tuple[float, int]:
    times, got = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        claimed = dispatcher.claim(64)
        times.append((time.perf_counter() - began) * 1000)
        got = len(claimed)
        dispatcher.release([item.id for item in claimed])
    return statistics.median(times), got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with postgres_schema() as url:
        db = Database(url)
        migrate.upgrade(db)
        now = utcnow()
        with db.session(write=True) as session:
            team_id = session.scalars(select(Team.id)).first()
            if team_id is None:
                team = Team(name="bench", slug="bench")
                session.add(team)
                session.flush()
                team_id = team.id
            enabled, disabled = (service.create_webhook(session, team_id=team_id, url=f"https://203.0.113.1/{name}",
                                                        events_=None, description="", now=now,
                                                        destinations=service.Destinations(allow_private=True)).id
                                 for name in ("enabled", "disabled"))
        _deliveries(db, team_id, disabled, args.backlog, now - timedelta(hours=1))  # older: claimed first
        _deliveries(db, team_id, enabled, args.due, now)
        dispatcher = Dispatcher(db, Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]

        def vacuum() -> None:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE webhook_deliveries"))

        with db.session(write=True) as session:
            session.execute(update(Webhook).where(Webhook.id == disabled).values(enabled=False))
        vacuum()
        ms, got = _median_claim_ms(db, dispatcher, args.rounds)
        print(f"backlog of {args.backlog} left due:  claim median {ms:6.2f} ms ({got} claimed)")
        with db.session(write=True) as session:
            service.disable(session, [disabled], reason=None, now=now)
        vacuum()
        ms, got = _median_claim_ms(db, dispatcher, args.rounds)
        print(f"backlog of {args.backlog} parked:    claim median {ms:6.2f} ms ({got} claimed)")
        db.dispose()


if __name__ == "__main__":
    main()
