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

from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from hostatlas import tokens
from hostatlas.agentapi.schemas import CheckInRequest, CheckInResponse
from hostatlas.errors import DomainError
from hostatlas.http import runtime
from hostatlas.http.asgi import header, read_body, replay_body, send_json
from hostatlas.servers.agent_auth import AgentAuthenticator, AgentIdentity
from hostatlas.servers.checkins import CheckinBuffer, check_in
from hostatlas.telemetry.ingest.spool import Kind
from hostatlas.telemetry.runtime import Telemetry

CHECK_IN_PATH = "/api/v1/agent/check-in"
TELEMETRY_PATHS = {"/api/v1/agent/metrics": Kind.METRICS, "/api/v1/agent/logs": Kind.LOGS}
# A check-in is a few dozen bytes; anything larger is unusual enough for the regular route.
CHECK_IN_BODY_LIMIT = 4096


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
        app_runtime = runtime.of_scope(scope)
        answer: dict[str, Any]
        try:
            if path == CHECK_IN_PATH:
                checkin = CheckInRequest.model_validate_json(body or b"{}")
                received_at = check_in(app_runtime.part(CheckinBuffer), agent.server_id,
                                       agent_version=checkin.agent_version, uptime_s=checkin.uptime_s,
                                       boot_id=checkin.boot_id)
                answer = CheckInResponse(server_id=agent.server_id, received_at=received_at).model_dump(mode="json")
            else:
                outcome = await app_runtime.part(Telemetry).accept_batch(
                    TELEMETRY_PATHS[path], team_id=agent.team_id, server_id=agent.server_id, body=body)
                answer = outcome.answer()
        except (ValidationError, DomainError):
            # The regular route decides again and answers with the error envelope.
            await self.app(scope, replay_body(body, receive), send)
            return
        await send_json(send, 200, answer)

    @staticmethod
    def _cached_agent(scope: Scope) -> AgentIdentity | None:
        # ApiGuard recognised and hashed the bearer secret already.
        bearer: tokens.Bearer | None = scope.get("state", {}).get("bearer")
        if bearer is None or bearer.prefix != tokens.AGENT_TOKEN_PREFIX:
            return None
        return runtime.of_scope(scope).part(AgentAuthenticator).cached(bearer.hash)
