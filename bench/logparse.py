"""Log line parsing throughput on one core: `parse_line` over a realistic mix of agent-streamed lines.

    uv run python bench/logparse.py                  # 200,000 lines, median of 5 runs
    uv run python bench/logparse.py --lines 50000 --runs 3

The mix is nginx access 40%, nginx error 10%, syslog 30% (RFC 3164, rsyslog ISO, RFC 5424), JSON 10%
and plain 10%, shuffled with a fixed seed. Timestamps advance ~20 ms per line, as a busy host's do, so
consecutive lines share seconds the way real streams do. Target (ingestion hot path): >= 150,000 lines/s.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

from hostatlas.telemetry.ingest.logparse import parse_line

START = 1774103521.0  # 2026-03-21T14:32:01Z
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
PATHS = ("/api/v1/servers", "/api/v1/servers/42/metrics?from=1774100000&step=60", "/", "/static/app.3f9a1c.js",
         "/login", "/api/v1/agent/checkin", "/favicon.ico", "/api/v1/logs?q=error&limit=100")
AGENTS = ("curl/8.0", "hostatlas-agent/1.0.0",
          "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
          "Prometheus/2.51.0", "python-httpx/0.28.1")
STATUSES = (200,) * 14 + (201, 204, 301, 304, 400, 401, 404, 404, 500, 502)
SYSLOG_MESSAGES = ("Accepted publickey for deploy from 10.0.1.7 port 52211 ssh2: ED25519 SHA256:Xq3",
                   "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
                   "Started Daily apt download activities.", "error: kex_exchange_identification: Connection closed",
                   "eth0: Link is Up - 1Gbps/Full - flow control rx/tx", "WARNING: disk /var is 91% full")
PLAIN = ("Starting HostAtlas worker on port 8080", "ERROR Traceback (most recent call last):",
         "  File \"/srv/app/main.py\", line 12, in <module>", "[main] INFO c.e.App - Started App in 3.2 seconds",
         "panic: runtime error: index out of range [3] with length 3",
         "W0321 14:32:01.123456 1 reflector.go:324] watch")


def _stamp(ts: float) -> time.struct_time:
    return time.gmtime(ts)


def _access(rng: random.Random, ts: float) -> str:
    t = _stamp(ts)
    stamp = f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    line = (f'10.0.{rng.randrange(256)}.{rng.randrange(256)} - - [{stamp}] "{rng.choice(("GET", "GET", "POST"))} '
            f'{rng.choice(PATHS)} HTTP/1.1" {rng.choice(STATUSES)} {rng.randrange(100000)}')
    if rng.random() < 0.8:
        line += f' "{rng.choice(("-", "https://app.example.com/"))}" "{rng.choice(AGENTS)}"'
        if rng.random() < 0.5:
            line += f" {rng.random():.3f}"
    return line


def _error(rng: random.Random, ts: float) -> str:
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", _stamp(ts))
    level = rng.choice(("error", "error", "warn", "notice", "crit"))
    if rng.random() < 0.7:
        return (f"{stamp} [{level}] 812#812: *{rng.randrange(10**6)} connect() failed (111: Connection refused) "
                f"while connecting to upstream, client: 10.0.1.{rng.randrange(256)}, server: app.example.com, "
                f'request: "GET {rng.choice(PATHS)} HTTP/1.1", upstream: "http://127.0.0.1:8080/", '
                f'host: "app.example.com"')
    return f"{stamp} [{level}] 1#1: signal process started"


def _syslog(rng: random.Random, ts: float) -> str:
    t = _stamp(ts)
    app, pid, message = rng.choice(("sshd", "CRON", "systemd", "kernel")), rng.randrange(1, 65536), rng.choice(
        SYSLOG_MESSAGES)
    kind = rng.random()
    if kind < 0.6:
        clock = time.strftime("%H:%M:%S", t)
        return f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {clock} web-prod-01 {app}[{pid}]: {message}"
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(ts % 1 * 1e6):06d}"
    if kind < 0.9:
        return f"{iso}+00:00 web-prod-01 {app}[{pid}]: {message}"
    return f"<{rng.randrange(192)}>1 {iso[:23]}Z web-prod-01 {app} {pid} - - {message}"


def _json(rng: random.Random, ts: float) -> str:
    level = rng.choice(("info", "info", "debug", "warn", "error"))
    return (f'{{"time":"{time.strftime("%Y-%m-%dT%H:%M:%S", _stamp(ts))}.{int(ts % 1 * 1000):03d}Z",'
            f'"level":"{level}","msg":"request handled","method":"GET","path":"{rng.choice(PATHS)}",'
            f'"status":{rng.choice(STATUSES)},"duration_ms":{rng.random() * 100:.2f},'
            f'"trace_id":"{rng.getrandbits(64):016x}"}}')


def _plain(rng: random.Random, ts: float) -> str:
    line = rng.choice(PLAIN)
    if rng.random() < 0.3:
        line = time.strftime("%Y-%m-%d %H:%M:%S", _stamp(ts)) + f",{rng.randrange(1000):03d} " + line
    return line


MIX: tuple[tuple[Callable[[random.Random, float], str], int], ...] = (
    (_access, 40), (_error, 10), (_syslog, 30), (_json, 10), (_plain, 10))


def build(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    makers = [maker for maker, weight in MIX for _ in range(weight)]
    kinds = [makers[index % len(makers)] for index in range(count)]  # exact proportions, then shuffled
    rng.shuffle(kinds)
    return [maker(rng, START + index * 0.02) for index, maker in enumerate(kinds)]


def run_once(lines: list[str]) -> tuple[float, float]:
    """(lines/s by the wall clock, lines/s of this process's CPU time): on a shared machine they differ."""
    gc.collect()  # start each run from the same heap; the collector stays on, as in the server
    wall, cpu = time.perf_counter(), time.process_time()
    for line in lines:
        parse_line(line)
    return len(lines) / (time.perf_counter() - wall), len(lines) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--grouped", action="store_true",
                        help="lines grouped by format, as agents ship one file's lines per batch (default: shuffled)")
    args = parser.parse_args()
    lines = build(args.lines)
    formats = [parse_line(line).format for line in lines]
    if args.grouped:
        lines = [line for _, line in sorted(zip(formats, lines, strict=True), key=lambda pair: pair[0])]
    counts = {name: formats.count(name) for name in sorted(set(formats))}
    print(f"{len(lines):,} lines, {'grouped by format' if args.grouped else 'shuffled'}: "
          + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    runs = [run_once(lines) for _ in range(args.runs)]
    print("wall: " + ", ".join(f"{wall:,.0f}" for wall, _ in runs) + " lines/s")
    print("cpu:  " + ", ".join(f"{cpu:,.0f}" for _, cpu in runs) + " lines/s")
    print(f"median: {statistics.median(wall for wall, _ in runs):,.0f} lines/s wall clock, "
          f"{statistics.median(cpu for _, cpu in runs):,.0f} lines/s CPU time (target >= 150,000)")


if __name__ == "__main__":
    main()
