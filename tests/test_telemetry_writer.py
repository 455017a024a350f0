"""The telemetry write path: spool (durable before the answer), storer (parses and stores behind), recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.errors import Unavailable
from hostatlas.http import runtime
from hostatlas.settings import Settings
from hostatlas.telemetry.embedded import EmbeddedStore
from hostatlas.telemetry.ingest import limits_of
from hostatlas.telemetry.model import Agg, LogQuery, LogRecord, MetricPoint, SeriesQuery, Tier
from hostatlas.telemetry.quarantine import FrameQuarantine
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.spool import Frame, Kind, Spool, closed_segments, read_frames
from hostatlas.telemetry.storer import Storer
from hostatlas.telemetry.writer import SpoolWriter
from tests.support import Story, bearer, enrol, hostatlas_command, running_server

NOW = time.time()


class FlakyStore(EmbeddedStore):
    """The embedded store, down for its first ``failures`` INSERTs (its ping failing too), counting the rest."""

    def __init__(self, path: Path, failures: int = 0) -> None:
        super().__init__(path)
        self.failures = failures
        self.down = False
        self.inserted: list[int] = []

    def ping(self) -> None:
        if self.down:
            raise OSError("store unavailable")
        super().ping()

    def _maybe_fail(self, rows: Sequence[object]) -> None:
        self.down = self.failures > 0
        if self.down:
            self.failures -= 1
            raise OSError("store unavailable")
        self.inserted.append(len(rows))

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        self._maybe_fail(points)
        super().insert_metrics(points)

    def insert_logs(self, records: Sequence[LogRecord]) -> None:
        self._maybe_fail(records)
        super().insert_logs(records)


def _metrics_frame(server_id: int, values: list[float]) -> Frame:
    body = orjson.dumps({"series": [{"metric": "cpu.percent",
                                     "points": [[int(NOW) - 15 * i, v] for i, v in enumerate(values)]}]})
    return Frame(Kind.METRICS, 1, server_id, NOW, body)


def _logs_frame(lines: list[str]) -> Frame:
    body = orjson.dumps({"entries": [{"ts": NOW, "source": "/var/log/app.log", "line": line} for line in lines]})
    return Frame(Kind.LOGS, 1, 1, NOW, body)


def _sum(store: EmbeddedStore, server_ids: list[int]) -> float:
    found = store.query_series(SeriesQuery(1, server_ids, "cpu.percent", {}, int(NOW) - 7200, int(NOW) + 3600,
                                           3600, Agg.SUM, Tier.HOUR))
    return sum(value for series in found for _, value in series.points)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, telemetry_storer="thread", **overrides)  # type: ignore[call-arg]


def _storer(store: EmbeddedStore, directory: Path, tmp_path: Path) -> Storer:
    # Nothing here is set aside: the quarantine's database is never opened.
    return Storer(store, directory, limits_of(_settings(tmp_path)), max_rows=1000,
                  quarantine=FrameQuarantine(f"sqlite:///{tmp_path / 'unused.db'}"))


def test_frames_survive_torn_writes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    segments = spool.segments(Kind.METRICS)
    frames = [_metrics_frame(server, [1.0]) for server in range(3)]
    segments.append([frame.encode() for frame in frames])
    closed = segments.rotate()
    assert closed is not None and list(read_frames(closed)) == frames
    # A crash in the middle of the third frame: the first two are all there is.
    closed.write_bytes(closed.read_bytes()[:-7])
    assert list(read_frames(closed)) == frames[:2]
    # A flipped byte inside the second frame ends the segment there.
    data = bytearray(closed.read_bytes())
    data[len(frames[0].encode()) + 30] ^= 0xFF
    closed.write_bytes(bytes(data))
    assert list(read_frames(closed)) == frames[:1]


def test_writes_are_answered_once_spooled_and_readable_after_sync(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    writer = SpoolWriter(spool.segments(Kind.METRICS), spool.directory, name="metrics", max_delay=60)
    store = FlakyStore(tmp_path / "t.db")
    store.migrate()
    stop = threading.Event()
    storer = _storer(store, spool.directory, tmp_path)
    runner = threading.Thread(target=storer.run, args=(stop,))
    runner.start()

    async def twenty_agents() -> None:
        await asyncio.gather(*(writer.write(_metrics_frame(server, [1.0, 2.0, 3.0]).encode())
                               for server in range(20)))

    asyncio.run(twenty_agents())
    # Answered: every frame is on disk, in the open segment (the batch delay has not passed).
    [open_segment] = spool.directory.glob("metrics-*.open")
    assert len(list(read_frames(open_segment))) == 20
    assert store.inserted == []
    assert writer.sync(timeout=10)
    # One INSERT for the twenty requests, every point readable, and the segment gone.
    assert store.inserted == [60]
    assert _sum(store, list(range(20))) == 20 * 6.0
    assert closed_segments(spool.directory) == []
    writer.close()
    stop.set()
    runner.join()


def test_a_sync_after_the_delay_closed_the_segment_still_waits_for_the_store(tmp_path: Path) -> None:
    # No storer runs: the closed segment stays, so the sync must time out rather than claim it is stored.
    spool = Spool(tmp_path / "spool")
    writer = SpoolWriter(spool.segments(Kind.METRICS), spool.directory, name="metrics", max_delay=0.05)
    asyncio.run(writer.write(_metrics_frame(1, [1.0]).encode()))
    deadline = time.monotonic() + 10
    while not closed_segments(spool.directory) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed_segments(spool.directory), "the batch delay never closed the segment"
    assert writer.sync(timeout=0.3) is False
    writer.close()


def test_a_failing_store_loses_nothing_and_stores_nothing_twice(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    segments = spool.segments(Kind.LOGS)
    segments.append([_logs_frame([f"line {n} of batch {b}" for n in range(50)]).encode() for b in range(4)])
    segments.rotate()
    store = FlakyStore(tmp_path / "t.db", failures=2)
    store.migrate()
    storer = _storer(store, spool.directory, tmp_path)
    for _ in range(2):
        with pytest.raises(OSError):
            storer.store_segments(closed_segments(spool.directory))
        assert len(closed_segments(spool.directory)) == 1  # kept for the retry
    storer.store_segments(closed_segments(spool.directory))
    assert store.inserted == [200]
    assert store.count_logs(LogQuery(1, None, None, None, None, None, None, 10)) == 200
    assert closed_segments(spool.directory) == []


def test_the_storer_retries_with_backoff_until_the_store_is_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    segments = spool.segments(Kind.METRICS)
    segments.append([_metrics_frame(7, [5.0]).encode()])
    segments.rotate()
    store = FlakyStore(tmp_path / "t.db", failures=2)
    store.migrate()
    stop = threading.Event()
    runner = threading.Thread(target=_storer(store, spool.directory, tmp_path).run, args=(stop,))
    started = time.monotonic()
    runner.start()
    while closed_segments(spool.directory) and time.monotonic() - started < 10:
        time.sleep(0.02)
    stop.set()
    runner.join()
    # Two failures, waits of 0.5 s then 1 s, then stored once.
    assert time.monotonic() - started >= 1.5
    assert store.inserted == [1] and _sum(store, [7]) == 5.0


def test_a_dead_process_segments_are_adopted_and_stored(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    dead = Spool(root)
    dead_segments = dead.segments(Kind.METRICS)
    dead_segments.append([_metrics_frame(3, [4.0, 6.0]).encode()])  # still open: the process died mid-segment
    os.close(dead._lock_fd)  # what the kernel does when the process dies
    alive = Spool(root)
    store = FlakyStore(tmp_path / "t.db")
    store.migrate()
    stop = threading.Event()
    runner = threading.Thread(target=_storer(store, alive.directory, tmp_path).run, args=(stop,))
    runner.start()
    deadline = time.monotonic() + 10
    while not store.inserted and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    runner.join()
    assert _sum(store, [3]) == 10.0
    assert not dead.directory.exists()


def test_a_live_process_segments_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    other = Spool(root)
    other_segments = other.segments(Kind.METRICS)
    other_segments.append([_metrics_frame(3, [4.0]).encode()])
    other_segments.rotate()
    mine = Spool(root)
    store = FlakyStore(tmp_path / "t.db")
    store.migrate()
    stop = threading.Event()
    stop.set()  # one pass, then stop
    _storer(store, mine.directory, tmp_path).run(stop)
    assert store.inserted == []
    assert len(closed_segments(other.directory)) == 1


def test_a_full_backlog_gets_agents_a_503_with_retry_after(settings: Settings, db: Database, story: Story) -> None:
    settings = settings.model_copy(update={"telemetry_max_backlog_bytes": 1, "telemetry_batch_delay": 0.01})
    key = story.key(story.team_a, ["*"])
    with TestClient(create_app(settings, db=db), raise_server_exceptions=False) as client:
        _, token = enrol(client, key)
        runtime.of(client.app).part(Telemetry).storer.stop()  # the store falls behind
        batch = {"series": [{"metric": "cpu.percent", "points": [[int(time.time()), 1.0]]}]}
        assert client.post("/api/v1/agent/metrics", headers=bearer(token), json=batch).status_code == 200
        time.sleep(1.2)  # the closed segment is counted at the next backlog measurement
        refused = client.post("/api/v1/agent/metrics", headers=bearer(token), json=batch)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "telemetry_backlog"


def test_writer_refuses_when_backlogged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.directory / "logs-0000000001.seg").write_bytes(b"x" * 100)
    writer = SpoolWriter(spool.segments(Kind.LOGS), spool.directory, name="logs", max_backlog_bytes=100)
    with pytest.raises(Unavailable):
        asyncio.run(writer.write(b"frame"))
    writer.close()


def _serve_pid(base: str) -> int:
    return int(subprocess.run(["pgrep", "-f", f"serve --port {base.rsplit(':', 1)[1]}"], capture_output=True,
                              text=True).stdout.split()[0])


@pytest.mark.parametrize("kill_storer", [False, True], ids=["serve-killed", "serve-and-storer-killed"])
def test_acknowledged_points_survive_a_killed_process(tmp_path: Path, kill_storer: bool) -> None:
    """SIGKILL right after the 200 (and the storer too): a restarted platform still has every point."""
    env = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "30"}
    created = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "t", "--scopes", "*"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[-1]
    now = int(time.time())
    with running_server(tmp_path, env) as base, httpx.Client(base_url=base) as http:
        server_id, token = enrol(http, key)
        answer = http.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": [
            {"metric": "cpu.percent", "points": [[now - 30, 10.0], [now - 15, 20.0]]}]})
        assert answer.json()["accepted"] == 2
        pid = _serve_pid(base)
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        assert children, "the storer runs as a child process of serve"
        os.kill(pid, signal.SIGKILL)
        if kill_storer:
            for child in children:
                os.kill(int(child), signal.SIGKILL)
    with running_server(tmp_path, env) as base:
        # The segments left behind are stored by the old storer, or adopted by the new one when it starts.
        deadline, total = time.monotonic() + 20, 0.0
        while total != 30.0 and time.monotonic() < deadline:
            found = httpx.get(f"{base}/api/v1/servers/{server_id}/metrics", headers=bearer(key),
                              params={"metric": "cpu.percent", "from": now - 60, "step": 15, "agg": "sum"}).json()
            total = sum(value for series in found["data"] for _, value in series["points"])
            time.sleep(0.1)
    assert total == 30.0
