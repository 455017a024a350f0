"""Agent tokens (``agt_...``): every active token is held in an in-process map to its server.

At 60,000 hosts checking in once a minute, each token is seen once a minute, so a cache that fills on
demand and expires would miss nearly every time, and token lookups would be the platform's busiest
query. Instead each process loads all active tokens at start (one query), adds tokens it issues, looks
up the rare unknown one, and reloads everything every ``agent_auth_cache_seconds``. Revocation is
pushed: once per flush interval every process reads the tokens revoked since its last look
(re-enrolment and server deletion revoke them) and drops them. A revoked token stops working at once
in the process that revoked it and within about one flush interval everywhere else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import Unauthenticated
from hostatlas.servers.models import AgentToken

# Revocations are stamped with the revoking process's clock: look back a little to absorb skew.
REVOCATION_LOOKBACK = timedelta(seconds=30)


@dataclass(frozen=True)
class AgentIdentity:
    server_id: int
    team_id: int


class AgentAuthenticator:
    def __init__(self, reload_seconds: float) -> None:
        self.reload_seconds = reload_seconds
        self._known: dict[str, AgentIdentity] = {}
        # token hashes per server, so forgetting a server (at every re-enrolment) is not a full scan
        self._by_server: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self._revocations_seen_until: datetime = utcnow()
        self._loaded_at = float("-inf")

    def cached(self, token_hash: str) -> AgentIdentity | None:
        return self._known.get(token_hash)

    def remember(self, token_hash: str, identity: AgentIdentity) -> None:
        with self._lock:
            self._known[token_hash] = identity
            self._by_server.setdefault(identity.server_id, set()).add(token_hash)

    def load_all(self, db: Database) -> int:
        """Replace the map with every active token, then re-apply recent revocations the load may predate."""
        with db.session(write=False) as session:
            rows = session.execute(select(AgentToken.token_hash, AgentToken.server_id, AgentToken.team_id)
                                   .where(AgentToken.revoked_at.is_(None), AgentToken.server_id.is_not(None)))
            known = {row.token_hash: AgentIdentity(row.server_id, row.team_id) for row in rows}
        by_server: dict[int, set[str]] = {}
        for token_hash, identity in known.items():
            by_server.setdefault(identity.server_id, set()).add(token_hash)
        with self._lock:
            self._known, self._by_server = known, by_server
        self._loaded_at = time.monotonic()
        self.sync_revocations(db)
        return len(known)

    def refresh(self, db: Database) -> None:
        """The periodic step: drop revoked tokens, and reload the whole map when it is due."""
        if time.monotonic() - self._loaded_at >= self.reload_seconds:
            self.load_all(db)
        else:
            self.sync_revocations(db)

    def resolve(self, db: Database, token_hash: str) -> AgentIdentity:
        with db.session(write=False) as session:
            row = session.execute(select(AgentToken.server_id, AgentToken.team_id, AgentToken.revoked_at)
                                  .where(AgentToken.token_hash == token_hash)).first()
        if row is None:
            raise Unauthenticated("invalid_agent_token", "The agent token is not valid; register the agent again")
        if row.revoked_at is not None or row.server_id is None:
            raise Unauthenticated("agent_token_revoked", "The agent token was revoked; register the agent again")
        identity = AgentIdentity(row.server_id, row.team_id)
        self.remember(token_hash, identity)
        return identity

    def forget_server(self, server_id: int) -> None:
        with self._lock:
            for token_hash in self._by_server.pop(server_id, ()):
                self._known.pop(token_hash, None)

    def sync_revocations(self, db: Database) -> int:
        """Drop tokens revoked (by any process) since the last sync."""
        now = utcnow()
        since = self._revocations_seen_until - REVOCATION_LOOKBACK
        with db.session(write=False) as session:
            revoked = list(session.scalars(select(AgentToken.token_hash).where(AgentToken.revoked_at >= since)))
        self._revocations_seen_until = now
        with self._lock:
            for token_hash in revoked:
                identity = self._known.pop(token_hash, None)
                if identity is not None:
                    self._by_server.get(identity.server_id, set()).discard(token_hash)
        return len(revoked)
