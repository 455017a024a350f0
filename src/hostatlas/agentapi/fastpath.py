"""The agents' hot paths (check-ins, metrics, logs), served without FastAPI's routing and dependencies.

These are most of the platform's traffic (10,000 hosts send 667 metric batches a second), and FastAPI's
per-request work costs more than a check-in or a small metric batch itself. This middleware answers
only the plain case: an agent whose token is already cached, and a body that decodes. Everything else
(errors, unknown tokens, odd bodies, a full telemetry backlog) is handed on, body intact, to the regular
route, which stays the one place that defines the endpoint's behaviour, errors and OpenAPI entry. It
runs inside ApiGuard and the decompression middleware, so rate limits, size caps, content types and
the response headers apply.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from hostatlas import tokens
from hostatlas.agentapi.auth import AgentAuthenticator, AgentIdentity
from hostatlas.agentapi.schemas import CheckInRequest, CheckInResponse
from hostatlas.clock import utcnow
from hostatlas.errors import DomainError
from hostatlas.http.asgi import header, read_body, replay_body
from hostatlas.servers.checkins import Checkin, CheckinBuffer
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.spool import Frame, Kind

CHECK_IN_PATH = "/api/v1/agent/check-in"
TELEMETRY_PATHS = {"/api/v1/agent/metrics": Kind.METRICS, "/api/v1/agent/logs": Kind.LOGS}
# A check-in is a few dozen bytes; anything larger is unusual enough for the regular route.
CHECK_IN_BODY_LIMIT = 4096
# Larger telemetry batches are judged off the event loop.
INLINE_DECODE_BYTES = 64 * 1024


def record_checkin(buffer: CheckinBuffer, agent: AgentIdentity, body: CheckInRequest) -> CheckInResponse:
    """What a check-in does, whichever path served it."""
    now = utcnow()
    buffer.note(agent.server_id, Checkin(at=now, agent_version=body.agent_version, uptime_s=body.uptime_s,
                                         boot_id=body.boot_id))
    return CheckInResponse(server_id=agent.server_id, received_at=now)


async def ingest(telemetry: Telemetry, agent: AgentIdentity, kind: Kind, body: bytes) -> dict[str, Any]:
    """Judge a batch entry by entry, wait until it is durable; raise DomainError if it is refused."""
    frame = Frame(kind, agent.team_id, agent.server_id, time.time(), body)
    outcome = (telemetry.judge(frame) if len(body) <= INLINE_DECODE_BYTES
               else await run_in_threadpool(telemetry.judge, frame))
    if outcome.accepted:
        await telemetry.write(frame)
    return {"accepted": outcome.accepted, "dropped": outcome.dropped, "problems": outcome.problems}


class AgentFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope["method"] != "POST" or (
                path != CHECK_IN_PATH and path not in TELEMETRY_PATHS):
            await self.app(scope, receive, send)
            return
        agent = self._cached_agent(scope)
        length = header(scope, b"content-length")
        if agent is None or (path == CHECK_IN_PATH and not (length and length.isdigit()
                                                            and int(length) <= CHECK_IN_BODY_LIMIT)):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        state = scope["app"].state
        answer: dict[str, Any]
        try:
            if path == CHECK_IN_PATH:
                checkin = CheckInRequest.model_validate_json(body or b"{}")
                answer = record_checkin(state.checkins, agent, checkin).model_dump(mode="json")
            else:
                answer = await ingest(state.telemetry, agent, TELEMETRY_PATHS[path], body)
        except (ValidationError, DomainError):
            # The regular route decides again and answers with the error envelope.
            await self.app(scope, replay_body(body, receive), send)
            return
        payload = orjson.dumps(answer)
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
