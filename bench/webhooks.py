"""Webhook delivery throughput, and what draining a backlog does to the API's latency.

    uv run python bench/webhooks.py                          # PostgreSQL, 100,000 deliveries
    uv run python bench/webhooks.py --backends sqlite,postgres --deliveries 20000

For each backend: start `hostatlas serve --no-worker` on a fresh database and a local receiver (aiohttp,
its own process, answering 200 at once), create a webhook to it, then:
  1. probe the API (GET /api/v1/servers, open loop at --probe-rate) for --idle seconds: idle p50/p99;
  2. insert --deliveries pending deliveries, start --workers `hostatlas worker` processes, and probe the API
     the same way until the receiver has them all (bounded by --timeout): drain time, deliveries/s, and the
     API's p50/p99 during the drain, next to idle.
Every delivery is signed and every attempt logged, as in production. Target (issue 5, this 2-core machine):
at least 500 deliveries/s, and API p99 during the drain within 2x of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
from sqlalchemy import create_engine, func, select

from _harness import Target, insert_pending_deliveries, percentile, serve, webhook_receiver


async def _probe(url: str, key: str, rate: float, until: Callable[[], Awaitable[bool]]) -> list[float]:
    """GET url at a fixed rate, open loop, until ``until()`` is true; latencies in ms from the scheduled time.

    Nothing here may block the event loop: a blocked loop delays the probes and inflates their latency
    (an earlier version called the synchronous ``httpx.get`` here, 27 ms a call for its TLS context).
    """
    latencies: list[float] = []
    errors: list[float] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False) as client:
        tasks = set()
        start, index = time.perf_counter(), 0

        async def one(scheduled: float) -> None:
            try:
                answer = await client.get(url)
            except httpx.TransportError:
                errors.append(scheduled)
                return
            if answer.status_code != 200:
                errors.append(scheduled)
                return
            latencies.append((time.perf_counter() - scheduled) * 1000)

        while not await until():
            scheduled = start + index / rate
            index += 1
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    if errors:
        print(f"  ({len(errors)} probe requests failed)")
    return latencies


def _insert_backlog(database_url: str, webhook_id: int, count: int) -> None:
    from hostatlas.webhooks.models import Webhook
    from hostatlas.webhooks.service import payload

    engine = create_engine(database_url)
    now = datetime.now(UTC)
    data = {"server": {"id": 47, "hostname": "web-prod-01", "ip_address": "10.0.1.12", "status": "offline",
                       "last_seen_at": "2026-03-21T14:32:01Z"}, "previous_status": "online"}
    with engine.begin() as connection:
        team_id = connection.execute(select(Webhook.team_id).where(Webhook.id == webhook_id)).scalar_one()
        insert_pending_deliveries(connection, team_id=team_id, webhook_id=webhook_id, count=count, at=now,
                                  body=lambda delivery_id: payload("server.offline", delivery_id, now, data))
    engine.dispose()


def _pending(database_url: str) -> int:
    from hostatlas.webhooks.models import WebhookDelivery

    engine = create_engine(database_url)
    with engine.connect() as connection:
        value = connection.execute(select(func.count()).select_from(WebhookDelivery)
                                   .where(WebhookDelivery.status == "pending")).scalar_one()
    engine.dispose()
    return int(value)


def _summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2], percentile(ordered, 0.99)


def bench(backend: str, args: argparse.Namespace) -> None:
    env = {"HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true"}
    with webhook_receiver() as receiver_port, serve(backend, extra_env=env, serve_args=("--no-worker",)) as target:
        _run(target, receiver_port, env, args)


def _run(target: Target, receiver_port: int, env: dict[str, str], args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {target.api_key}"}
    created = httpx.post(f"{target.base_url}/api/v1/webhooks", headers=headers,
                         json={"url": f"http://127.0.0.1:{receiver_port}/hook", "description": "bench"})
    created.raise_for_status()
    webhook_id = created.json()["id"]
    probe_url = f"{target.base_url}/api/v1/servers?per_page=25"
    idle_until = time.monotonic() + args.idle

    async def idle_over() -> bool:
        return time.monotonic() > idle_until

    idle = asyncio.run(_probe(probe_url, target.api_key, args.probe_rate, idle_over))

    _insert_backlog(target.database_url, webhook_id, args.deliveries)
    worker_env = {**os.environ, **env, "HOSTATLAS_DATABASE_URL": target.database_url,
                  "HOSTATLAS_LOG_LEVEL": "WARNING"}
    workers = [subprocess.Popen([sys.executable, "-m", "hostatlas", "worker"], cwd=target.workdir, env=worker_env)
               for _ in range(args.workers)]
    began = time.monotonic()
    received = [0]
    asked_at = [0.0]
    counter = httpx.AsyncClient(timeout=30, trust_env=False)

    async def drained() -> bool:
        if time.monotonic() - began > args.timeout:
            return True
        if time.monotonic() - asked_at[0] >= 0.25:  # ask the receiver a few times a second, not per probe
            asked_at[0] = time.monotonic()
            received[0] = int((await counter.get(f"http://127.0.0.1:{receiver_port}/count")).text)
        return received[0] >= args.deliveries

    try:
        during = asyncio.run(_probe(probe_url, target.api_key, args.probe_rate, drained))
        drain_seconds = time.monotonic() - began
        # The receiver has them all; the last attempts may still be being recorded.
        deadline = time.monotonic() + 30
        while _pending(target.database_url) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _pending(target.database_url)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    idle_p50, idle_p99 = _summary(idle)
    drain_p50, drain_p99 = _summary(during)
    print(f"[{target.backend}] {args.deliveries} deliveries, {args.workers} worker(s)")
    print(f"  drain     {received[0]} received in {drain_seconds:.1f} s = {received[0] / drain_seconds:.0f} "
          f"deliveries/s (signed, every attempt logged); still pending after: {left}")
    print(f"  API idle  p50 {idle_p50:6.2f} ms  p99 {idle_p99:6.2f} ms  ({len(idle)} requests)")
    print(f"  API drain p50 {drain_p50:6.2f} ms  p99 {drain_p99:6.2f} ms  ({len(during)} requests)  "
          f"p99 ratio {drain_p99 / idle_p99:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="postgres")
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--probe-rate", type=float, default=20.0, help="API requests/s while measuring")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle API measurement")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a drain after this long")
    args = parser.parse_args()
    for backend in (name.strip() for name in args.backends.split(",")):
        bench(backend, args)


if __name__ == "__main__":
    main()
