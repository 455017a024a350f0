"""Dependencies every handler uses: the request's database session and the calling API key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy.orm import Session

from hostatlas import tokens
from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys.service import authenticate
from hostatlas.clock import utcnow
from hostatlas.errors import PermissionDenied, Unauthenticated
from hostatlas.http.ratelimit import KnownKeys

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer sk_live_...`. Each operation lists the scopes it needs.",
)


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    with request.app.state.db.session(write=request.method not in SAFE_METHODS) as session:
        yield session


# Every handler and dependency names the session this way, so they share one per request; "function"
# scope commits before the response is sent, so a client never reads before its own write landed.
DbSession = Annotated[Session, Depends(db_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of one team, with its scopes."""

    team_id: int
    key_id: int
    scopes: tuple[str, ...]

    def can(self, scope: str) -> bool:
        return scope_rules.grants(self.scopes, scope)


def authenticated(
    security_scopes: SecurityScopes,
    request: Request,
    session: DbSession,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> Principal:
    if credentials is None:
        raise Unauthenticated("missing_api_key", "Send an API key as 'Authorization: Bearer sk_live_...'")
    now = utcnow()
    known_keys: KnownKeys = request.app.state.known_keys
    try:
        key = authenticate(session, credentials.credentials, now)
    except Unauthenticated:
        known_keys.forget(tokens.hash_token(credentials.credentials))  # revoked or expired meanwhile
        raise
    known_keys.note(key.key_hash)
    request.app.state.key_usage.note(key, at=now, ip=request.client.host if request.client else None)
    principal = Principal(team_id=key.team_id, key_id=key.id, scopes=tuple(key.scopes))
    for scope in security_scopes.scopes:
        if not principal.can(scope):
            raise PermissionDenied("missing_scope", f"This API key lacks the scope '{scope}'")
    return principal
