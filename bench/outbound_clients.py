"""CPU per webhook POST for the two HTTP clients considered for `hostatlas/outbound.py`.

    uv run python bench/outbound_clients.py

Posts a signed delivery-sized body (the dispatcher's headers) to a local aiohttp receiver in its own
process, --requests times per client and per number in flight (kept-alive connections, after a warm-up),
and prints this process's CPU time per request (`time.process_time`) and the rate. Why outbound.py uses
aiohttp: see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from hostatlas.webhooks.signing import new_secret, signature_headers

from _harness import webhook_receiver

BODY = b'{"event":"server.offline","delivery_id":"del_0123456789abcdef01234567","timestamp":"2026-03-21T14:37:22Z",' \
       b'"data":{"server":{"id":47,"hostname":"web-prod-01","ip_address":"10.0.1.12","status":"offline"}}}'
HEADERS = {"Content-Type": "application/json", "User-Agent": "HostAtlas-Webhooks/bench",
           **signature_headers(BODY, [new_secret()], delivery_id="del_0123456789abcdef01234567",
                               event="server.offline", timestamp=1_774_104_242)}


async def _httpx(url: str, in_flight: int, count: int) -> None:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        async def one() -> None:
            async with client.stream("POST", url, content=BODY, headers=HEADERS) as response:
                async for _ in response.aiter_raw():
                    pass
        await _drive(one, in_flight, count)


async def _aiohttp(url: str, in_flight: int, count: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as client:
        async def one() -> None:
            async with client.post(url, data=BODY, headers=HEADERS) as response:
                await response.content.read()
        await _drive(one, in_flight, count)


async def _drive(one: Callable[[], Awaitable[None]], in_flight: int, count: int) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def gated() -> None:
        async with gate:
            await one()

    await asyncio.gather(*(gated() for _ in range(200)))  # warm-up: connections opened, caches filled
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(count)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"  {in_flight:3d} in flight: {cpu / count * 1000:6.3f} ms CPU/request, {count / wall:7.0f} requests/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--in-flight", default="1,8,16,64")
    args = parser.parse_args()
    with webhook_receiver() as port:
        url = f"http://127.0.0.1:{port}/hook"
        for name, client in (("httpx", _httpx), ("aiohttp", _aiohttp)):
            print(name)
            for in_flight in (int(part) for part in args.in_flight.split(",")):
                asyncio.run(client(url, in_flight, args.requests))

if __name__ == "__main__":
    main()
