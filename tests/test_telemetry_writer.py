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
from hostatlas.telemetry.ingest.decode import limits_of
from hostatlas.telemetry.ingest.quarantine import FrameQuarantine
from hostatlas.telemetry.ingest.spool import (
    Frame,
    Kind,
    Spool,
    adopt_orphans,
    closed_segments,
    read_frames,
    still_unstored,
    unstored_segments,
    wait_until_stored,
)
from hostatlas.telemetry.ingest.storer import Storer
from hostatlas.telemetry.ingest.writer import SpoolWriter
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.storage.contract import Agg, LogQuery, LogRecord, MetricPoint, SeriesQuery, Tier
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from tests.support import Story, bearer, enrol, hostatlas_command, running_server, wait_until

pytestmark = pytest.mark.long_running(80)

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


def test_writes_are_answered_once_spooled_and_readable_once_stored(tmp_path: Path) -> None:
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
    # A read waits for the open segment and does not close it: that is the writer's to do, at its delay.
    assert wait_until_stored(spool.root, timeout=0.2) is False
    assert len(list(read_frames(open_segment))) == 20 and store.inserted == []
    writer.close()  # closes the segment, as the delay would have
    assert wait_until_stored(spool.root, timeout=10)
    # One INSERT for the twenty requests, every point readable, and the segment gone.
    assert store.inserted == [60]
    assert _sum(store, list(range(20))) == 20 * 6.0
    assert closed_segments(spool.directory) == []
    stop.set()
    runner.join()


def test_a_read_after_the_delay_closed_the_segment_still_waits_for_the_store(tmp_path: Path) -> None:
    # No storer runs: the closed segment stays, so the read must time out rather than claim it is stored.
    spool = Spool(tmp_path / "spool")
    writer = SpoolWriter(spool.segments(Kind.METRICS), spool.directory, name="metrics", max_delay=0.05)
    asyncio.run(writer.write(_metrics_frame(1, [1.0]).encode()))
    wait_until(lambda: closed_segments(spool.directory), what="the batch delay to close the segment")
    assert wait_until_stored(spool.root, timeout=0.3) is False
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
    wait_until(lambda: not closed_segments(spool.directory), what="the storer to store the segment")
    stop.set()
    runner.join()
    # Two failures, waits of 0.5 s then 1 s, then stored once.
    assert time.monotonic() - started >= 1.5
    assert store.inserted == [1] and _sum(store, [7]) == 5.0


def test_a_read_waits_for_what_another_process_acknowledged(tmp_path: Path) -> None:
    """Two serving processes of one install, as they share the spool root: each its directory, writer and storer.

    A batch acknowledged by A, still in A's open segment, is in the store when a read served by B returns.
    """
    root = tmp_path / "spool"
    a, b = Spool(root), Spool(root)
    writer_a = SpoolWriter(a.segments(Kind.METRICS), a.directory, name="metrics", max_delay=0.3)
    writer_b = SpoolWriter(b.segments(Kind.METRICS), b.directory, name="metrics", max_delay=0.3)
    stores = [FlakyStore(tmp_path / "t.db") for _ in range(3)]  # A's storer's, B's storer's, B's reads'
    stores[0].migrate()
    stop = threading.Event()
    runners = [threading.Thread(target=_storer(store, spool.directory, tmp_path).run, args=(stop,))
               for store, spool in zip(stores, (a, b), strict=False)]
    for runner in runners:
        runner.start()
    asyncio.run(writer_a.write(_metrics_frame(5, [1.0, 2.0, 4.0]).encode()))
    assert list(a.directory.glob("metrics-*.open")) and _sum(stores[2], [5]) == 0.0  # acknowledged, not stored
    assert wait_until_stored(b.root, timeout=10)
    assert _sum(stores[2], [5]) == 7.0
    assert stores[0].inserted == [3] and stores[1].inserted == []  # stored by A's storer: B closed nothing of A's
    for writer in (writer_a, writer_b):
        writer.close()
    stop.set()
    for runner in runners:
        runner.join()


def test_a_read_waits_for_segments_with_frames_wherever_a_storer_moves_them(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    dead = Spool(root)
    segments = dead.segments(Kind.METRICS)
    segments.append([_metrics_frame(3, [4.0]).encode()])
    closed = segments.rotate()  # closed, and the next segment opened empty
    assert closed is not None and list(dead.directory.glob("metrics-*.open"))
    # A suspect waits for its retry, behind the line: no read waits for it.
    (dead.directory / "metrics-0-suspect-1-0123abcd.seg").write_bytes(_metrics_frame(4, [1.0]).encode())
    alive = Spool(root)
    pending = unstored_segments(root)
    assert [(segment.directory, segment.stem) for segment in pending] == [(dead.directory, closed.stem)]
    os.close(dead._lock_fd)  # what the kernel does when the process dies
    assert adopt_orphans(root, alive.directory) == 3
    assert not closed.exists() and still_unstored(root, pending) == pending  # moved, not stored: still waited for
    [adopted] = alive.directory.glob(f"metrics-0-{dead.directory.name}-{closed.name.partition('-')[2]}")
    adopted.unlink()  # what its storer does once it stored it
    assert still_unstored(root, pending) == []


def test_a_batch_acknowledged_by_one_serve_process_is_read_by_another(tmp_path: Path) -> None:
    """Two real ``hostatlas serve`` processes on one data directory: the first read served by the second finds
    what the first acknowledged, though the first's segment is still open (a batch delay of 1 s)."""
    env = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "1"}
    created = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "t", "--scopes", "*"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[-1]
    now = int(time.time())
    with running_server(tmp_path, env) as first, running_server(tmp_path, env) as second, \
            httpx.Client(base_url=first) as writer, httpx.Client(base_url=second) as reader:
        server_id, token = enrol(writer, key)
        answer = writer.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": [
            {"metric": "cpu.percent", "points": [[now - 30, 10.0], [now - 15, 20.0]]}]})
        assert answer.json()["accepted"] == 2
        found = reader.get(f"/api/v1/servers/{server_id}/metrics", headers=bearer(key),
                           params={"metric": "cpu.percent", "from": now - 60, "step": 15, "agg": "sum"})
        assert found.status_code == 200, found.text
        assert sum(value for series in found.json()["data"] for _, value in series["points"]) == 30.0


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
    wait_until(lambda: store.inserted, what="the adopted segment to be stored")
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
        answers = [client.post("/api/v1/agent/metrics", headers=bearer(token), json=batch)]
        assert answers[0].status_code == 200

        def refused_once_measured() -> bool:
            # The closed segment is counted at the writer's next backlog measurement (once a second).
            answers.append(client.post("/api/v1/agent/metrics", headers=bearer(token), json=batch))
            return answers[-1].status_code != 200

        wait_until(refused_once_measured, interval=0.1, what="the backlog to refuse the agent")
        refused = answers[-1]
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
        def total() -> float:
            found = httpx.get(f"{base}/api/v1/servers/{server_id}/metrics", headers=bearer(key),
                              params={"metric": "cpu.percent", "from": now - 60, "step": 15, "agg": "sum"}).json()
            return float(sum(value for series in found["data"] for _, value in series["points"]))

        wait_until(lambda: total() == 30.0, timeout=20, interval=0.1, what="every acknowledged point")
