"""Agent tokens (``agt_...``): resolved to a server, with a short in-process cache.

Check-ins arrive a thousand a second at scale; looking every token up in the database would make
them the platform's busiest query. A resolved token is trusted for ``agent_auth_cache_seconds``;
deleting or re-enrolling a server evicts its tokens in this process at once, and in other processes
within that many seconds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hostatlas import tokens
from hostatlas.db.engine import Database
from hostatlas.errors import Unauthenticated
from hostatlas.servers.models import AgentToken


@dataclass(frozen=True)
class AgentIdentity:
    server_id: int
    team_id: int


class AgentAuthenticator:
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[AgentIdentity, float]] = {}
        self._lock = threading.Lock()

    def cached(self, token_hash: str) -> AgentIdentity | None:
        entry = self._cache.get(token_hash)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def resolve(self, db: Database, token_hash: str) -> AgentIdentity:
        with db.session(write=False) as session:
            row = session.execute(select(AgentToken.server_id, AgentToken.team_id, AgentToken.revoked_at)
                                  .where(AgentToken.token_hash == token_hash)).first()
        if row is None:
            raise Unauthenticated("invalid_agent_token", "The agent token is not valid; register the agent again")
        if row.revoked_at is not None:
            raise Unauthenticated("agent_token_revoked", "The agent token was replaced; register the agent again")
        identity = AgentIdentity(row.server_id, row.team_id)
        with self._lock:
            self._cache[token_hash] = (identity, time.monotonic() + self.ttl)
        return identity

    def forget_server(self, server_id: int) -> None:
        with self._lock:
            for token_hash in [h for h, (identity, _) in self._cache.items() if identity.server_id == server_id]:
                del self._cache[token_hash]


agent_bearer = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="`Authorization: Bearer agt_...`, as returned by POST /api/v1/agent/register.")


async def agent_identity(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(agent_bearer)) -> AgentIdentity:
    """The server behind the request's ``Authorization: Bearer agt_...``."""
    secret = credentials.credentials.strip() if credentials else ""
    if not secret:
        raise Unauthenticated("missing_agent_token", "Send the agent token as 'Authorization: Bearer agt_...'")
    if secret.startswith(tokens.API_KEY_PREFIX):
        raise Unauthenticated("wrong_token_type", "API keys do not work on agent endpoints; use the agent token")
    if not tokens.is_well_formed(secret, tokens.AGENT_TOKEN_PREFIX):
        raise Unauthenticated("invalid_agent_token", "The agent token is not valid; register the agent again")
    authenticator: AgentAuthenticator = request.app.state.agent_auth
    token_hash = tokens.hash_token(secret)
    identity = authenticator.cached(token_hash)
    if identity is None:
        identity = await run_in_threadpool(authenticator.resolve, request.app.state.db, token_hash)
    return identity
