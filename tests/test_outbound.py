"""The outbound client's bounds against real loopback servers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hostatlas.outbound import Outbound, OutboundError


@contextmanager
def trickling_server(every: float, for_seconds: float) -> Iterator[str]:
    """Answers 200 with a body it sends one byte at a time, ``every`` seconds, for ``for_seconds``."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            deadline = time.monotonic() + for_seconds
            while time.monotonic() < deadline and not stop.wait(every):
                try:
                    connection.sendall(b"x")
                except OSError:
                    return  # the client hung up, as it should

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_an_answer_that_trickles_in_ends_within_connect_plus_read_timeout() -> None:
    # Every byte arrives well within the read timeout, so only the whole-request bound can end this.
    async def post(url: str) -> None:
        outbound = Outbound(allow_private=True, connect_timeout=0.5, read_timeout=0.5)
        try:
            await outbound.post(url, b"{}", {"Content-Type": "application/json"})
        finally:
            await outbound.aclose()

    with trickling_server(every=0.1, for_seconds=10) as url:
        started = time.monotonic()
        with pytest.raises(OutboundError) as raised:
            asyncio.run(post(url))
        took = time.monotonic() - started
    assert raised.value.kind == "timeout"
    assert 0.9 <= took < 3.0, took
