"""The check-in hot path, served without FastAPI's routing and dependency machinery.

Check-ins are most of the platform's traffic (60,000 hosts at one a minute is 1,000 a second), and
FastAPI's per-request work costs more than the check-in itself. This middleware answers only the
plain case: a small body that validates, from an agent whose token is already cached. Everything else
(errors, unknown tokens, odd bodies) is handed on, body intact, to the regular route, which stays the
one place that defines the endpoint's behaviour and its OpenAPI entry. It runs inside ApiGuard and the
decompression middleware, so rate limits, size caps, content types and the response headers apply.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from hostatlas import tokens
from hostatlas.agentapi.auth import AgentAuthenticator, AgentIdentity
from hostatlas.agentapi.schemas import CheckInRequest, CheckInResponse
from hostatlas.clock import utcnow
from hostatlas.http.asgi import header, read_body, replay_body
from hostatlas.servers.checkins import Checkin, CheckinBuffer

CHECK_IN_PATH = "/api/v1/agent/check-in"
# A check-in is a few dozen bytes; anything larger is unusual enough for the regular route.
FAST_BODY_LIMIT = 4096


def record_checkin(buffer: CheckinBuffer, agent: AgentIdentity, body: CheckInRequest) -> CheckInResponse:
    """What a check-in does, whichever path served it."""
    now = utcnow()
    buffer.note(agent.server_id, Checkin(at=now, agent_version=body.agent_version, uptime_s=body.uptime_s,
                                         boot_id=body.boot_id))
    return CheckInResponse(server_id=agent.server_id, received_at=now)


class CheckinFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHECK_IN_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        agent = self._cached_agent(scope)
        length = header(scope, b"content-length")
        if agent is None or length is None or not length.isdigit() or int(length) > FAST_BODY_LIMIT:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        try:
            checkin = CheckInRequest.model_validate_json(body or b"{}")
        except ValidationError:
            await self.app(scope, replay_body(body, receive), send)
            return
        state = scope["app"].state
        answer = record_checkin(state.checkins, agent, checkin)
        payload = orjson.dumps(answer.model_dump(mode="json"))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _cached_agent(scope: Scope) -> AgentIdentity | None:
        # ApiGuard recognised and hashed the bearer secret already.
        bearer: tokens.Bearer | None = scope.get("state", {}).get("bearer")
        if bearer is None or bearer.prefix != tokens.AGENT_TOKEN_PREFIX:
            return None
        authenticator: AgentAuthenticator = scope["app"].state.agent_auth
        return authenticator.cached(bearer.hash)
