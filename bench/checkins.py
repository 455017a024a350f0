"""Check-in throughput and latency of a real `hostatlas serve`, on SQLite and on PostgreSQL.

    uv run python bench/checkins.py                      # both backends, defaults below
    uv run python bench/checkins.py --backends postgres --agents 5000 --rate 1500 --duration 30

For each backend: start `hostatlas serve` on a fresh database, enrol --agents agents over the agent
API, then
  1. open loop: check-ins sent on a fixed schedule at --rate per second for --duration seconds, spread
     over all agents; latency is measured from the *scheduled* send time, so a server that falls behind
     shows it (no coordinated omission);
  2. closed loop: --concurrency connections checking in back to back for --duration seconds: the most
     the server sustains.
Finally every agent must show up online with a fresh last_seen_at through the REST API: the buffered
check-ins really reached the database. Target (issue 3): >= 1,000 check-ins/s, p99 < 50 ms on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

import aiohttp

from _harness import Request, Target, closed_loop, enrol, load_arguments, open_loop, serve, summary


def _checker(session: aiohttp.ClientSession, url: str, tokens: list[str]) -> Request:
    async def check_in(index: int) -> bool:
        async with session.post(url, json={"agent_version": "1.0.0", "uptime_s": 42},
                                headers={"Authorization": f"Bearer {tokens[index % len(tokens)]}"}) as response:
            await response.read()
            return response.status == 200

    return check_in


async def _all_fresh(session: aiohttp.ClientSession, target: Target, agents: int, since: float) -> int:
    """How many servers the REST API shows online and seen after `since` (unix seconds)."""
    fresh, cursor = 0, None
    headers = {"Authorization": f"Bearer {target.api_key}"}
    for _ in range(agents // 100 + 2):
        params = {"per_page": "100", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{target.base_url}/api/v1/servers", params=params, headers=headers) as response:
            page = await response.json()
        for server in page["data"]:
            seen = time.mktime(time.strptime(server["last_seen_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            fresh += server["status"] == "online" and seen >= since - 1
        cursor = page["meta"]["next_cursor"]
        if cursor is None:
            break
    return fresh


async def bench(backend: str, args: argparse.Namespace) -> None:
    with serve(backend, serve_args=tuple(args.serve_args.split())) as target:
        connector = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            tokens = await enrol(session, [target.base_url], target.api_key, args.agents)
            url = f"{target.base_url}/api/v1/agent/check-in"
            await open_loop(_checker(session, url, tokens), min(args.rate, 500), 2)  # warm-up
            began = time.time()
            # The load generator shares the machine: keep its own garbage collector from adding pauses
            # to the latencies it attributes to the server.
            gc.collect()
            gc.freeze()
            gc.disable()
            try:
                steady = await open_loop(_checker(session, url, tokens), args.rate, args.duration)
                flat_out = await closed_loop(_checker(session, url, tokens), args.concurrency, args.duration)
            finally:
                gc.enable()
            await asyncio.sleep(2.5)  # two flush intervals
            fresh = await _all_fresh(session, target, args.agents, began)
    print(f"[{backend}] {args.agents} agents")
    print(f"  open loop   target {args.rate:7.0f}/s  achieved {steady.rate:7.0f}/s  errors {steady.errors:4d}  "
          f"{summary(steady.latencies)}")
    print(f"  closed loop {args.concurrency:3d} conns        sustained {flat_out.rate:7.0f}/s  errors "
          f"{flat_out.errors:4d}  {summary(flat_out.latencies)}")
    print(f"  stored: {fresh}/{args.agents} servers online with a last_seen_at from this run")


def main() -> None:
    args = load_arguments(__doc__, count=("agents", 2000, "agents enrolled before measuring"), rate=1000.0,
                          concurrency=32, connections=256)
    for backend in args.backends.split(","):
        asyncio.run(bench(backend.strip(), args))


if __name__ == "__main__":
    main()
