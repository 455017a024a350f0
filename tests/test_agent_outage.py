"""The platform goes away and comes back: every metric point and log line the agent produced meanwhile
arrives, in order, none twice. (``bench/agent_outage.py`` runs the same with a 2-minute outage.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.agent_harness import AgentUnderTest, create_key, running_agent
from tests.support import free_port, running_server

pytestmark = pytest.mark.long_running(40)

SERVE_ENV = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2", "HOSTATLAS_FLUSH_INTERVAL": "0.2",
             "HOSTATLAS_LOCAL_AGENT": "false"}
OUTAGE_S = 15.0


class NumberedWriter(threading.Thread):
    """Appends ``outagemark <n>`` to a log file five times a second, the way an application logs."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.written = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with self.path.open("a") as handle:
                handle.write(f"outagemark {self.written:06d}\n")
            self.written += 1
            time.sleep(0.2)


def test_an_outage_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    figures = run_outage(tmp_path, OUTAGE_S)
    assert figures["lines"] == figures["lines_written"] and figures["spooled_batches"] > 0


def run_outage(tmp_path: Path, outage_s: float) -> dict[str, float]:
    """The platform stopped for ``outage_s`` while the agent runs and an application logs; every check is
    asserted here; returns the figures (bench/agent_outage.py prints them for a 2-minute outage)."""
    figures: dict[str, float] = {"outage_s": outage_s}
    platform_dir = tmp_path / "platform"
    platform_dir.mkdir()
    key = create_key(platform_dir)
    port = free_port()
    log = tmp_path / "app.log"
    log.write_text("")
    writer = NumberedWriter(log)
    first_run = running_server(platform_dir, SERVE_ENV, port=port)
    base = first_run.__enter__()
    try:
        with running_agent(tmp_path / "agent", base, key, log_paths=[str(log)]) as agent:
            agent.eventually(lambda: agent.api(f"/api/v1/servers/{agent.server_id}")["last_seen_at"], "a check-in")
            writer.start()
            time.sleep(3)
            outage_start = time.time()
            first_run.__exit__(None, None, None)  # the platform stops; the agent goes on
            first_run = None
            time.sleep(outage_s)
            spool = agent.status().get("spool") or {}
            figures["spooled_batches"], figures["spooled_bytes"] = spool.get("batches", 0), spool.get("bytes", 0)
            spooled = agent.cli("status").stdout
            assert "spool:" in spooled and "spool:      0 batches" not in spooled, spooled
            with running_server(platform_dir, SERVE_ENV, port=port):
                outage_end = time.time()
                time.sleep(2)
                writer.halt.set()
                writer.join()
                figures["lines_written"] = writer.written
                drained_from = time.monotonic()
                figures.update(_check_everything_arrived(agent, log, writer.written, outage_start, outage_end))
                figures["drained_in_s"] = round(time.monotonic() - drained_from, 1)
    finally:
        writer.halt.set()
        if first_run is not None:
            first_run.__exit__(None, None, None)
    return figures


def _check_everything_arrived(agent: AgentUnderTest, log: Path, total: int, outage_start: float,
                              outage_end: float) -> dict[str, float]:
    def arrived() -> list[str]:
        lines: list[str] = []
        cursor = None
        while True:
            params = {"q": "outagemark", "source": str(log), "per_page": 100, "from": "-1h"}
            if cursor:
                params["cursor"] = cursor
            page = agent.api("/api/v1/logs", **params)
            lines += [entry["line"] for entry in page["data"]]
            cursor = page["meta"]["next_cursor"]
            if not cursor:
                return lines

    expected = [f"outagemark {n:06d}" for n in range(total)]
    try:
        lines = agent.eventually(lambda: len(found := arrived()) >= total and found, "every line", timeout=60)
    except AssertionError:
        lines = arrived()
        missing = sorted(set(expected) - set(lines))
        raise AssertionError(f"{len(lines)} of {total} lines arrived; missing {len(missing)}: {missing[:5]}..."
                             f"{missing[-5:]}; status: {agent.cli('status').stdout}") from None
    assert sorted(lines) == expected  # all, none twice
    series = agent.api(f"/api/v1/servers/{agent.server_id}/metrics", metric="cpu.percent", step="1s",
                       agg="count", **{"from": str(int(outage_start) - 2), "to": str(int(outage_end))})
    points = series["data"][0]["points"]
    assert all(count == 1 for _, count in points), points  # no second arrived twice
    seconds = [ts for ts, _ in points]
    assert max(b - a for a, b in zip(seconds, seconds[1:], strict=False)) <= 3, seconds  # no hole
    assert seconds[-1] >= outage_end - 3
    return {"lines": len(lines), "metric_seconds": len(seconds), "largest_gap_s": max(
        b - a for a, b in zip(seconds, seconds[1:], strict=False))}
