"""Group commit: concurrent requests share INSERTs, each is answered only after its rows are committed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from hostatlas.telemetry.embedded import EmbeddedStore
from hostatlas.telemetry.model import Agg, LogRecord, MetricPoint, SeriesQuery, Tier
from hostatlas.telemetry.writer import TelemetryWriter
from tests.support import bearer, enrol, hostatlas_command, running_server


class CountingStore(EmbeddedStore):
    def __init__(self, path: Path, fail: bool = False) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.fail = fail

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        if self.fail:
            raise OSError("disk full")
        if points:
            self.batches.append(len(points))
        super().insert_metrics(points)

    def insert_logs(self, records: Sequence[LogRecord]) -> None:
        super().insert_logs(records)


def _points(server: int, count: int) -> list[MetricPoint]:
    return [MetricPoint(1, server, "cpu.percent", "", 1_795_564_800 + 15 * i, 1.0) for i in range(count)]


def test_concurrent_writes_are_batched_and_committed_before_the_answer(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "t.db")
    store.migrate()
    writer = TelemetryWriter(store, max_rows=1000, max_delay=0.2)

    async def main() -> None:
        await asyncio.gather(*(writer.write(metrics=_points(server, 30)) for server in range(20)))

    asyncio.run(main())
    writer.close()
    # Twenty requests of thirty points: one INSERT, and every point readable once the writes returned.
    assert store.batches == [600]
    found = store.query_series(SeriesQuery(1, list(range(20)), "cpu.percent", {}, 1_795_564_800,
                                           1_795_564_800 + 3600, 3600, Agg.COUNT, Tier.HOUR))
    assert sorted(point for series in found for _, point in series.points) == [30.0] * 20


def test_a_failed_write_fails_every_request_in_its_batch(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "t.db", fail=True)
    store.migrate()
    writer = TelemetryWriter(store, max_rows=1000, max_delay=0.1)

    async def main() -> list[BaseException | None]:
        return list(await asyncio.gather(*(writer.write(metrics=_points(s, 3)) for s in range(3)),
                                         return_exceptions=True))

    outcomes = asyncio.run(main())
    writer.close()
    assert all(isinstance(outcome, OSError) for outcome in outcomes)


def test_acknowledged_points_survive_a_killed_process(tmp_path: Path) -> None:
    """SIGKILL right after the 200: a restarted platform still has every acknowledged point."""
    env = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.5"}
    created = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "t", "--scopes", "*"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[-1]
    now = int(time.time())
    with running_server(tmp_path, env) as base, httpx.Client(base_url=base) as http:
        server_id, token = enrol(http, key)
        answer = http.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": [
            {"metric": "cpu.percent", "points": [[now - 30, 10.0], [now - 15, 20.0]]}]})
        assert answer.json()["accepted"] == 2
        pid = int(subprocess.run(["pgrep", "-f", f"serve --port {base.rsplit(':', 1)[1]}"], capture_output=True,
                                 text=True).stdout.split()[0])
        subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(pid)], check=True)
    with running_server(tmp_path, env) as base:
        found = httpx.get(f"{base}/api/v1/servers/{server_id}/metrics", headers=bearer(key),
                          params={"metric": "cpu.percent", "from": now - 60, "step": 15, "agg": "sum"}).json()
    assert sum(value for _, value in found["data"][0]["points"]) == 30.0


