"""Heartbeat ping throughput and latency of a real `hostatlas serve`, against a bare Starlette "OK" baseline.

    uv run python bench/pings.py                       # both backends, defaults below
    uv run python bench/pings.py --backends postgres --heartbeats 2000 --rate 3000 --duration 20

For each backend: start `hostatlas serve` on a fresh database, create --heartbeats heartbeats through the
REST API, then
  1. open loop: pings sent on a fixed schedule at --rate per second for --duration seconds, spread over
     all heartbeats; latency is measured from the *scheduled* send time (no coordinated omission);
  2. closed loop: --concurrency connections pinging back to back for --duration seconds.
Every ping is acknowledged only after its transaction committed, so afterwards the ping log must hold
every ping answered 200 (counted in the database). The same two phases are run against a bare Starlette
app answering "OK" under uvicorn with the same settings, on the same machine, and the ratio is printed.
When Debian's `wrk` is installed, both servers also get a closed loop driven by it (C, one thread): the
aiohttp client costs a core of its own at a few thousand requests a second, so its bare Starlette figure is
the client's ceiling; wrk's is the server's.
Target (issue 12): >= 6,000 pings/s sustained with p99 < 50 ms, and >= 30% of the bare Starlette rate.
The default per-heartbeat limit (10/s) stays on: the load is spread so that no heartbeat exceeds it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from sqlalchemy import create_engine, text

from _harness import (
    CpuMeter,
    Request,
    Run,
    closed_loop,
    create_heartbeats,
    free_port,
    load_arguments,
    open_loop,
    serve,
    summary,
    wait_until_answers,
)

BARE_SCRIPT = textwrap.dedent("""
    import sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):
        await request.body()
        return PlainTextResponse("OK")

    app = Starlette(routes=[Route("/heartbeat/{token}", ok, methods=["GET", "POST", "HEAD"]),
                            Route("/readyz", ok)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                proxy_headers=False)
""")


# wrk's script: each connection asks for the paths of $WRK_PATHS (one per line) in turn.
WRK_SCRIPT = textwrap.dedent("""
    local paths = {}
    for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
    local counter = 0
    request = function()
      counter = counter + 1
      return wrk.format("GET", paths[(counter % #paths) + 1])
    end
""")


@dataclass
class WrkRun:
    """A closed loop driven by wrk (C, one thread): what the server sustains when the client costs little."""

    rate: float
    p99_ms: float
    answered: int
    refused: int  # answers other than 2xx/3xx
    cpu: CpuMeter

    @property
    def acknowledged(self) -> int:
        return self.answered - self.refused


def _wrk(base_url: str, paths: list[str], args: argparse.Namespace, server_pid: int) -> WrkRun | None:
    """The closed loop again through Debian's wrk when it is installed (`apt-get install wrk`), else None.
    The aiohttp client costs a core of its own at a few thousand requests a second, so against a fast server
    (bare Starlette) its closed loop measures the client; wrk's measures the server."""
    if shutil.which("wrk") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="hostatlas-wrk-") as scratch:
        script, listing = Path(scratch) / "paths.lua", Path(scratch) / "paths.txt"
        script.write_text(WRK_SCRIPT)
        listing.write_text("\n".join(paths))
        with CpuMeter.for_server(server_pid) as cpu:
            output = subprocess.run(
                ["wrk", "-t1", f"-c{args.concurrency}", f"-d{max(1, round(args.duration))}s", "--latency",
                 "-s", str(script), base_url], env={**os.environ, "WRK_PATHS": str(listing)},
                capture_output=True, text=True, timeout=args.duration + 60, check=True).stdout

    def number(pattern: str, default: str = "0") -> float:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else float(default)

    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)] if p99 else float("nan")
    return WrkRun(rate=number(r"Requests/sec:\s+([\d.]+)"), p99_ms=p99_ms,
                  answered=int(number(r"(\d+) requests in")), refused=int(number(r"Non-2xx or 3xx responses: (\d+)")),
                  cpu=cpu)


def _pinger(session: aiohttp.ClientSession, urls: list[str]) -> Request:
    async def ping(index: int) -> bool:
        async with session.get(urls[index % len(urls)]) as response:
            await response.read()
            return response.status == 200

    return ping


async def _phases(session: aiohttp.ClientSession, urls: list[str],
                  args: argparse.Namespace, server_pid: int) -> tuple[Run, Run, Run, CpuMeter]:
    # Warm-up: every heartbeat pinged once, so each process has its token cached as in steady state.
    warm_rate = min(args.rate, 500)
    warm = await open_loop(_pinger(session, urls), warm_rate, max(2.0, len(urls) / warm_rate))
    # The load generator shares the machine: keep its own collector from adding pauses to the latencies.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        steady = await open_loop(_pinger(session, urls), args.rate, args.duration)
        with CpuMeter.for_server(server_pid) as cpu:
            flat_out = await closed_loop(_pinger(session, urls), args.concurrency, args.duration)
    finally:
        gc.enable()
    return warm, steady, flat_out, cpu


def _stored(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM heartbeat_pings")).scalar_one())
    finally:
        engine.dispose()


@contextlib.contextmanager
def bare_starlette() -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE_SCRIPT, str(port)])
    try:
        if not wait_until_answers(f"http://127.0.0.1:{port}/readyz", timeout=20):
            raise RuntimeError("the bare Starlette app did not start")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _report(name: str, steady: Run, flat_out: Run, cpu: CpuMeter, args: argparse.Namespace) -> None:
    print(f"  {name}")
    print(f"    open loop   target {args.rate:7.0f}/s  achieved {steady.rate:7.0f}/s  errors {steady.errors:5d}  "
          f"{summary(steady.latencies)}")
    print(f"    closed loop {args.concurrency:3d} conns        sustained {flat_out.rate:7.0f}/s  errors "
          f"{flat_out.errors:5d}  {summary(flat_out.latencies)}")
    print(f"      closed loop {cpu}")


async def bench(backend: str, args: argparse.Namespace) -> None:
    with serve(backend, serve_args=("--no-worker", *args.serve_args.split())) as target:
        connector = aiohttp.TCPConnector(limit=args.connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            tokens = await create_heartbeats(session, target.base_url, target.api_key, args.heartbeats)
            urls = [f"{target.base_url}/heartbeat/{token}" for token in tokens]
            warm, steady, flat_out, cpu = await _phases(session, urls, args, target.pid)
        paths = [url[len(target.base_url):] for url in urls]
        by_wrk = _wrk(target.base_url, paths, args, target.pid)
        stored = _stored(target.database_url)
    acknowledged = len(warm.latencies) + len(steady.latencies) + len(flat_out.latencies) + (
        by_wrk.acknowledged if by_wrk else 0)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.connections)) as session:
        with bare_starlette() as (base, bare_pid):
            bare_urls = [f"{base}/heartbeat/{url.rsplit('/', 1)[1]}" for url in urls]
            _, bare_steady, bare_flat, bare_cpu = await _phases(session, bare_urls, args, bare_pid)
            bare_by_wrk = _wrk(base, paths, args, bare_pid)
    print(f"[{backend}] {args.heartbeats} heartbeats, {args.duration:.0f} s per phase")
    _report("hostatlas serve", steady, flat_out, cpu, args)
    _report("bare Starlette 'OK'", bare_steady, bare_flat, bare_cpu, args)
    ratio = flat_out.rate / bare_flat.rate if bare_flat.rate else float("nan")
    print(f"  closed-loop rate vs bare Starlette: {ratio:.0%}")
    if by_wrk and bare_by_wrk:
        for name, run in (("hostatlas serve", by_wrk), ("bare Starlette 'OK'", bare_by_wrk)):
            print(f"  wrk closed loop, {name}: {run.rate:7.0f}/s  p99 {run.p99_ms:.2f} ms  non-2xx {run.refused}  "
                  f"{run.cpu}")
        print(f"  wrk closed-loop rate vs bare Starlette: {by_wrk.rate / bare_by_wrk.rate:.0%}")
    # Every ping answered 200 must be in the log (one that failed on the client side may be there too).
    verdict = "OK" if stored >= acknowledged else "MISSING PINGS"
    print(f"  ping log: {stored} rows, {acknowledged} pings acknowledged (warm-up included): {verdict}")


def main() -> None:
    args = load_arguments(__doc__, count=("heartbeats", 2000, "heartbeats created before measuring"), rate=2000.0,
                          concurrency=64, connections=512)
    args.heartbeats = max(1, min(args.heartbeats, 100_000))
    for backend in args.backends.split(","):
        asyncio.run(bench(backend.strip(), args))


if __name__ == "__main__":
    main()
