"""The agent API's caller: the server behind ``Authorization: Bearer agt_...`` (cached by servers.agent_auth)."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from hostatlas import tokens
from hostatlas.errors import Unauthenticated
from hostatlas.http import runtime
from hostatlas.servers.agent_auth import AgentAuthenticator, AgentIdentity

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
    app_runtime = runtime.current(request)
    authenticator = app_runtime.part(AgentAuthenticator)
    token_hash = tokens.hash_token(secret)
    identity = authenticator.cached(token_hash)
    if identity is None:
        identity = await run_in_threadpool(authenticator.resolve, app_runtime.db, token_hash)
    return identity
