"""Small helpers for the pure-ASGI middlewares: reading a whole body and handing it on again."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive) -> bytes:
    """The whole body. A client that goes away first raises starlette's ClientDisconnect, as ``request.body()``
    does in a route, so that ApiGuard handles both alike (logged, not traced, not answered)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A receive that yields an already-read body, so the next app can read it as if fresh."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            # Later calls wait for the disconnect, as they would on the original stream.
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_body(send: Send, status: int, body: bytes, content_type: bytes,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer from a pure-ASGI middleware (the one place those answers are written)."""
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or ())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_body(send, status, orjson.dumps(body), b"application/json", headers)
