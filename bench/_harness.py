"""What every benchmark needs: a real `hostatlas serve` on loopback against a chosen backend, an API
key for it, and honest latency statistics. Nothing here is imported by the platform."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
from sqlalchemy import Connection, create_engine, insert, text

POSTGRES_URL = os.environ.get("HOSTATLAS_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLICKHOUSE_URL = os.environ.get("HOSTATLAS_BENCH_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default")


# A webhook receiver in its own process (aiohttp, answering 200 at once); argv[1] is its port.
# GET /count says how many POSTs it has had.
RECEIVER_SCRIPT = textwrap.dedent("""
    import sys
    from aiohttp import web
    count = 0
    async def hook(request):
        global count
        await request.read()
        count += 1
        return web.Response(text="ok")
    async def seen(request):
        return web.Response(text=str(count))
    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", seen)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")


@dataclass
class Target:
    backend: str
    base_url: str
    api_key: str
    database_url: str
    workdir: Path
    pid: int  # the `hostatlas serve` process (its children are the `--workers` processes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the bench PostgreSQL database, dropped afterwards; yields its URL."""
    schema = f"hostatlas_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def clickhouse_database() -> Iterator[str]:
    """A private ClickHouse database for one run (its URL), dropped afterwards."""
    from clickhouse_driver import Client  # type: ignore[import-untyped]

    database = f"hostatlas_bench_{uuid.uuid4().hex[:8]}"
    admin = Client.from_url(CLICKHOUSE_URL)
    admin.execute(f"CREATE DATABASE {database}")
    try:
        yield CLICKHOUSE_URL.rsplit("/", 1)[0] + f"/{database}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()


@contextlib.contextmanager
def serve(backend: str, *, extra_env: dict[str, str] | None = None,
          serve_args: tuple[str, ...] = ()) -> Iterator[Target]:
    """Run `hostatlas serve` (access log off, warnings only) on a fresh database of the given backend."""
    with tempfile.TemporaryDirectory(prefix="hostatlas-bench-") as workdir, contextlib.ExitStack() as stack:
        database_url = (f"sqlite:///{Path(workdir) / 'hostatlas.db'}" if backend == "sqlite"
                        else stack.enter_context(postgres_schema()))
        env = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_LOG_LEVEL": "WARNING",
               "HOSTATLAS_RATE_LIMIT": "100000000/minute", **(extra_env or {})}
        command = [sys.executable, "-m", "hostatlas"]
        created = subprocess.run([*command, "apikey", "create", "--name", "bench", "--scopes", "*"], cwd=workdir,
                                 env=env, capture_output=True, text=True, check=True)
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        log = open(Path(workdir) / "serve.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen([*command, "serve", "--port", str(port), "--no-access-log", *serve_args],
                                   cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_until_answers(f"{base}/readyz", timeout=30):
                raise RuntimeError((Path(workdir) / "serve.log").read_text())
            yield Target(backend, base, key, database_url, Path(workdir), process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def wait_until_answers(url: str, *, timeout: float) -> bool:
    """Poll ``url`` until it answers 200 (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def webhook_receiver() -> Iterator[int]:
    """RECEIVER_SCRIPT running in a process of its own, answering; yields its port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", RECEIVER_SCRIPT, str(port)])
    try:
        if not wait_until_answers(f"http://127.0.0.1:{port}/count", timeout=10):
            raise RuntimeError("the webhook receiver did not start")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def insert_pending_deliveries(connection: Connection, *, team_id: int, webhook_id: int, count: int,
                              at: datetime, body: Callable[[str], str]) -> None:
    """``count`` pending deliveries due at ``at``, inserted in batches; ``body(delivery_id)`` is each body."""
    from hostatlas.webhooks.models import WebhookDelivery
    from hostatlas.webhooks.service import new_delivery_id

    for start in range(0, count, 5_000):
        rows = []
        for _ in range(min(5_000, count - start)):
            delivery_id = new_delivery_id()
            rows.append({"delivery_id": delivery_id, "team_id": team_id, "webhook_id": webhook_id, "event_id": None,
                         "event": "server.offline", "status": "pending", "attempts": 0, "body": body(delivery_id),
                         "next_attempt_at": at, "created_at": at})
        connection.execute(insert(WebhookDelivery), rows)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(latencies_s: list[float]) -> str:
    ms = [value * 1000 for value in latencies_s]
    return (f"p50 {statistics.median(ms):6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  "
            f"max {max(ms):7.2f} ms") if ms else "no samples"


@dataclass
class Run:
    """One load phase: the latencies of the requests that succeeded, the failures, the phase's length."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


# Sends the index-th request of a phase; True when it succeeded.
Request = Callable[[int], Awaitable[bool]]


async def _timed(request: Request, index: int, run: Run, started: float) -> None:
    try:
        succeeded = await request(index)
    except aiohttp.ClientError:
        succeeded = False
    if succeeded:
        run.latencies.append(time.perf_counter() - started)
    else:
        run.errors += 1


async def open_loop(request: Request, rate: float, duration: float) -> Run:
    """``rate`` requests a second for ``duration`` seconds, whether or not earlier ones were answered;
    latency counts from each request's scheduled time (no coordinated omission)."""
    run = Run()
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for index in range(int(rate * duration)):
        scheduled = start + index * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_timed(request, index, run, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
    run.elapsed = time.perf_counter() - start
    return run


async def closed_loop(request: Request, concurrency: int, duration: float) -> Run:
    """``concurrency`` connections, each sending its next request once the last is answered."""
    run = Run()
    deadline = time.perf_counter() + duration

    async def loop(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            await _timed(request, index, run, time.perf_counter())
            index += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(loop(offset) for offset in range(concurrency)))
    run.elapsed = time.perf_counter() - start
    return run


def load_arguments(description: str | None, *, count: tuple[str, int, str], rate: float, concurrency: int,
                   connections: int) -> argparse.Namespace:
    """The options every load bench shares; ``count`` is (option, default, help) of what it creates first."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(f"--{count[0]}", type=int, default=count[1], help=count[2])
    parser.add_argument("--rate", type=float, default=rate, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per phase (bounded to 120)")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="closed-loop connections")
    parser.add_argument("--connections", type=int, default=connections, help="client connection pool size")
    parser.add_argument("--serve-args", default="", help='extra `hostatlas serve` arguments, e.g. "--workers 2"')
    args = parser.parse_args()
    args.duration = min(args.duration, 120.0)
    return args
