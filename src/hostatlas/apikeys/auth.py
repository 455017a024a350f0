"""Who is calling the REST API: the API key behind ``Authorization: Bearer sk_live_...``, with its scopes."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from hostatlas import tokens
from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys.service import authenticate
from hostatlas.apikeys.usage import KeyUsageTracker
from hostatlas.clock import utcnow
from hostatlas.errors import PermissionDenied, Unauthenticated
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer sk_live_...`. Each operation lists the scopes it needs.",
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of one team with its scopes, or a signed-in person of the dashboard with the
    scopes of their role in the team (``users.service.scopes_of``). ``actor`` names them on timelines:
    ``api_key:<id>:<name>`` or ``user:<id>:<email>``."""

    team_id: int
    scopes: tuple[str, ...]
    actor: str
    key_id: int | None = None

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
    app_runtime = runtime.current(request)
    known_keys = app_runtime.known_keys
    try:
        key = authenticate(session, credentials.credentials, now)
    except Unauthenticated:
        known_keys.forget(tokens.hash_token(credentials.credentials))  # revoked or expired meanwhile
        raise
    known_keys.note(key.key_hash)
    app_runtime.part(KeyUsageTracker).note(key, at=now, ip=request.client.host if request.client else None)
    principal = Principal(team_id=key.team_id, key_id=key.id, scopes=tuple(key.scopes),
                          actor=f"api_key:{key.id}:{key.name}")
    for scope in security_scopes.scopes:
        if not principal.can(scope):
            raise PermissionDenied("missing_scope", f"This API key lacks the scope '{scope}'")
    return principal
