"""Poison on the agent telemetry endpoints: whatever one agent sends, every other team's data keeps flowing.

Each hostile value rides in a batch of team B's agent beside a good entry, so the batch is spooled and
reaches the storer. Team A's agent then sends its own batch, which must be readable through the REST API
within 5 s, every point and line of it. Run on SQLite and PostgreSQL with the storer as a thread, and
once through a real ``hostatlas serve`` with the storer process.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.http import runtime
from hostatlas.jobs import replayers
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings
from hostatlas.telemetry.ingest.decode import limits_of
from hostatlas.telemetry.ingest.quarantine import FrameQuarantine, frame_of
from hostatlas.telemetry.ingest.spool import BacklogStatus, Frame, Kind, backlog_status, closed_segments
from hostatlas.telemetry.ingest.storer import STRIKES, SUSPECT_RETRY_SECONDS, Storer, StorerThread
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.storage.contract import Agg, MetricPoint, SeriesQuery, Tier
from hostatlas.telemetry.storage.embedded import EmbeddedStore
from tests.support import Story, bearer, enrol, hostatlas_command, running_server, wait_until

pytestmark = pytest.mark.long_running(90)

NOW = int(time.time())
JSON = {"Content-Type": "application/json"}
DEEP = 100_000  # deeper than any JSON parser here recurses
_unique = itertools.count(1)

HUGE = b"9" * 401
# Numbers no float64 holds finitely, spelled as JSON parsers write them: orjson refuses them all, the
# stdlib fallback takes them (NaN and Infinity as floats, long integers as ints).
HUGE_INTEGERS = [HUGE, b"-" + HUGE, b"1" + b"0" * 400, b"1" + b"0" * 5000]  # 5001: past the int conversion limit
OVERFLOWING = [b"1e400", b"-1e400", b"1E400", b"1e+400", b"1.5e999", b"0.1e401"]
NAN_AND_INFINITY = [b"NaN", b"Infinity", b"-Infinity"]
NOT_JSON_NUMBERS = [b"nan", b"inf", b"Inf", b"infinity", b"+Infinity", b"-NaN"]  # 400: not JSON at all
NUL = [b'"a\\u0000b"', b'"\\u0000"']
LONE_SURROGATES = [b'"\\ud800"', b'"\\udfff tail"', b'"raw \xff\xfe bytes"', b'"cesu \xed\xa0\x80"']
NESTED_500 = b"[" * 500 + b"]" * 500


def _series(metric: bytes = b'"cpu.percent"', labels: bytes = b"{}", points: bytes | None = None,
            value: bytes = b"1.5", ts: bytes | None = None) -> bytes:
    points = points or b"[[%s, %s]]" % (ts or str(NOW - 15).encode(), value)
    return b'{"metric": %s, "labels": %s, "points": %s}' % (metric, labels, points)


def _numbers(spellings: list[bytes], status: int = 200) -> list[tuple[bytes, int]]:
    return [(_series(value=n), status) for n in spellings] + [(_series(ts=n), status) for n in spellings]


def _texts(spellings: list[bytes]) -> list[tuple[bytes, int]]:
    return [(_series(labels=b'{"mount": %s}' % t), 200) for t in spellings] + [
        (_series(metric=t), 200) for t in spellings]


# Per class of hostile value: (the poison series, the status its batch gets). A 200 keeps the good point.
METRIC_POISON: dict[str, list[tuple[bytes, int]]] = {
    "huge integers": _numbers(HUGE_INTEGERS),
    "1e400": _numbers(OVERFLOWING),
    "NaN and Infinity": _numbers(NAN_AND_INFINITY) + _numbers(NOT_JSON_NUMBERS, 400),
    "NUL": [*_texts(NUL), (_series(labels=b'{"mount": "a\x00b"}'), 400)],
    "lone surrogates": _texts(LONE_SURROGATES),
    "deep nesting": [(_series(value=NESTED_500), 200), (_series(labels=b'{"m": [%s]}' % NESTED_500), 200),
                     (_series(value=b"[" * DEEP + b"]" * DEEP), 400)],
    "wrong types": [*_numbers([b"true", b'"12"', b"null", b"{}", b"[1]"]), (_series(points=b'"many"'), 200),
                    (_series(labels=b"[1, 2]"), 200), (_series(metric=b"5"), 200), (b"7", 200)],
}


def _entry(ts: bytes | None = None, source: bytes = b'"/var/log/app.log"', line: bytes = b'"hostile"') -> bytes:
    return b'{"ts": %s, "source": %s, "line": %s}' % (ts or str(NOW).encode(), source, line)


def _log_texts(spellings: list[bytes]) -> list[tuple[bytes, int]]:
    return [(_entry(line=t), 200) for t in spellings] + [(_entry(source=t), 200) for t in spellings]


LOG_POISON: dict[str, list[tuple[bytes, int]]] = {
    "huge integers": [(_entry(ts=n), 200) for n in HUGE_INTEGERS],
    "1e400": [(_entry(ts=n), 200) for n in OVERFLOWING],
    "NaN and Infinity": [(_entry(ts=n), 200) for n in NAN_AND_INFINITY] + [
        (_entry(ts=n), 400) for n in NOT_JSON_NUMBERS],
    "NUL": [*_log_texts(NUL), (_entry(line=b'"a\x00b"'), 400)],
    "lone surrogates": _log_texts(LONE_SURROGATES),
    "deep nesting": [(_entry(line=NESTED_500), 200), (_entry(ts=NESTED_500), 200),
                     (b"[" * DEEP + b"]" * DEEP, 400)],
    "wrong types": [*[(_entry(ts=t), 200) for t in [b"true", b'"now"', b"null", b"[]"]],
                    *[(_entry(line=t), 200) for t in [b"5", b"true", b"null", b"{}"]],
                    (_entry(source=b"5"), 200), (b'"nope"', 200)],
}


@pytest.fixture
def agents(client: TestClient, story: Story) -> tuple[str, str]:
    """(team A's agent token, team B's agent token)."""
    _, token_a = enrol(client, story.admin_a, machine_id="machine-a", hostname="a-01")
    _, token_b = enrol(client, story.admin_b, machine_id="machine-b", hostname="b-01")
    return token_a, token_b


def _poison(http: httpx.Client | TestClient, token: str, path: str, body: bytes, status: int) -> None:
    response = http.post(f"/api/v1/agent/{path}", headers={**bearer(token), **JSON}, content=body)
    assert response.status_code == status, response.text
    if status == 200:
        # The good entry beside the poison is kept; the poison alone is dropped.
        assert response.json()["accepted"] == 1 and response.json()["dropped"] == 1, response.text
    else:
        assert response.json()["error"]["code"] == "malformed_json"


def _poisoned_metrics(series: bytes) -> bytes:
    return b'{"series": [%s, %s]}' % (_series(metric=b'"poison.good"'), series)


def _poisoned_logs(entry: bytes) -> bytes:
    return b'{"entries": [%s, %s]}' % (_entry(line=b'"poison good line"'), entry)


def _wait_for(read: Any, expected: object, *, within: float = 5.0) -> None:
    """``read()`` equals ``expected`` within ``within`` seconds of the call."""
    started = time.monotonic()
    seen = read()
    while seen != expected and time.monotonic() - started < within:
        time.sleep(0.05)
        seen = read()
    assert seen == expected
    assert time.monotonic() - started < within


def _metrics_flow(http: httpx.Client | TestClient, token: str, key: str) -> None:
    """Team A's agent sends ten points of a fresh metric; all ten are readable within 5 s."""
    metric = f"flow.n{next(_unique)}"
    points = [[NOW - 10 * i, float(i + 1)] for i in range(10)]
    sent = http.post("/api/v1/agent/metrics", headers=bearer(token),
                     json={"series": [{"metric": metric, "labels": {"mount": "/"}, "points": points}]})
    assert sent.json() == {"accepted": 10, "dropped": 0, "problems": []}

    def read() -> float:
        answer = http.get("/api/v1/metrics", headers=bearer(key),
                          params={"metric": metric, "from": NOW - 300, "to": NOW + 60, "step": 3600, "agg": "sum"})
        return sum(v for s in answer.json()["data"] for _, v in s["points"])

    _wait_for(read, 55.0)  # 1 + 2 + ... + 10: any point lost shows


def _logs_flow(http: httpx.Client | TestClient, token: str, key: str) -> None:
    """Team A's agent sends twenty lines with a fresh word; all twenty are found within 5 s."""
    word = f"flowword{next(_unique)}"
    entries = [{"ts": NOW - i, "source": "/var/log/flow.log", "line": f"{word} line {i}"} for i in range(20)]
    sent = http.post("/api/v1/agent/logs", headers=bearer(token), json={"entries": entries})
    assert sent.json() == {"accepted": 20, "dropped": 0, "problems": []}

    def read() -> list[str]:
        found = http.get("/api/v1/logs", headers=bearer(key), params={"q": word, "per_page": 100}).json()
        return sorted(row["line"] for row in found["data"])

    _wait_for(read, sorted(str(entry["line"]) for entry in entries))


def _good_points_kept(http: httpx.Client | TestClient, key: str) -> float:
    kept = http.get("/api/v1/metrics", headers=bearer(key),
                    params={"metric": "poison.good", "from": NOW - 300, "agg": "count", "step": 3600}).json()
    return sum(v for s in kept["data"] for _, v in s["points"])


def _good_lines_kept(http: httpx.Client | TestClient, key: str) -> int:
    return int(http.get("/api/v1/logs", headers=bearer(key), params={"q": "poison"}).json()["meta"]["total"])


@pytest.mark.parametrize("kind", METRIC_POISON)
def test_poisoned_metric_batches_never_stop_another_teams_metrics(client: TestClient, story: Story,
                                                                  agents: tuple[str, str], kind: str) -> None:
    token_a, token_b = agents
    for series, status in METRIC_POISON[kind]:
        _poison(client, token_b, "metrics", _poisoned_metrics(series), status)
        _metrics_flow(client, token_a, story.admin_a)
    # The good point beside each poison is stored too.
    assert _good_points_kept(client, story.admin_b) == sum(status == 200 for _, status in METRIC_POISON[kind])


@pytest.mark.parametrize("kind", LOG_POISON)
def test_poisoned_log_batches_never_stop_another_teams_logs(client: TestClient, story: Story,
                                                            agents: tuple[str, str], kind: str) -> None:
    token_a, token_b = agents
    for entry, status in LOG_POISON[kind]:
        _poison(client, token_b, "logs", _poisoned_logs(entry), status)
        _logs_flow(client, token_a, story.admin_a)
    assert _good_lines_kept(client, story.admin_b) == sum(status == 200 for _, status in LOG_POISON[kind])


def _cli(workdir: Path, *args: str) -> str:
    done = subprocess.run([*hostatlas_command(), *args], cwd=workdir, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, str, str, str]]:
    """A real ``hostatlas serve`` (storer process) with team A's key and agents of teams A and B."""
    env = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_RATE_LIMIT": "100000/minute",
           "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.05"}  # each flow's read waits for its batch to close
    key_a = _cli(tmp_path, "apikey", "create", "--name", "a", "--scopes", "*")
    _cli(tmp_path, "team", "create", "outsiders")
    key_b = _cli(tmp_path, "apikey", "create", "--name", "b", "--scopes", "*", "--team", "outsiders")
    with running_server(tmp_path, env) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        _, token_a = enrol(http, key_a, machine_id="machine-a", hostname="a-01")
        _, token_b = enrol(http, key_b, machine_id="machine-b", hostname="b-01")
        yield http, key_a, token_a, token_b


def test_every_poison_through_a_real_server_and_storer_process(served: tuple[httpx.Client, str, str, str]) -> None:
    http, key_a, token_a, token_b = served
    for series, status in itertools.chain(*METRIC_POISON.values()):
        _poison(http, token_b, "metrics", _poisoned_metrics(series), status)
        _metrics_flow(http, token_a, key_a)
    for entry, status in itertools.chain(*LOG_POISON.values()):
        _poison(http, token_b, "logs", _poisoned_logs(entry), status)
        _logs_flow(http, token_a, key_a)


class RefusingStore(EmbeddedStore):
    """The embedded store, refusing every INSERT that holds a row of one server: a fault no input causes."""

    def __init__(self, path: Path, server_id: int) -> None:
        super().__init__(path)
        self.server_id = server_id

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        if any(point.server_id == self.server_id for point in points):
            raise ValueError(f"refused a row of server {self.server_id}")
        super().insert_metrics(points)


def _refuse_server(client: TestClient, db: Database, server_id: int) -> None:
    """Restart the app's storer over a store that refuses ``server_id``'s rows."""
    telemetry: Telemetry = runtime.of(client.app).part(Telemetry)
    settings: Settings = runtime.of(client.app).settings
    telemetry.storer.stop()
    store = RefusingStore(settings.data_dir / "telemetry.db", server_id)
    telemetry.storer = StorerThread(Storer(store, telemetry.spool.directory, telemetry.limits,
                                           max_rows=settings.telemetry_batch_rows,
                                           quarantine=FrameQuarantine(settings.resolved_database_url, db)))


def _quarantined(db: Database) -> list[QuarantinedItem]:
    with db.session(write=False) as session:
        return quarantine.listing(session)


def test_a_frame_whose_insert_fails_alone_is_set_aside_and_replayable(client: TestClient, story: Story,
                                                                      db: Database) -> None:
    _, token_a = enrol(client, story.admin_a, machine_id="machine-a", hostname="a-01")
    server_b, token_b = enrol(client, story.admin_b, machine_id="machine-b", hostname="b-01")
    _refuse_server(client, db, server_b)
    batch = {"series": [{"metric": "refused.metric", "points": [[NOW - 5, 7.0]]}]}
    assert client.post("/api/v1/agent/metrics", headers=bearer(token_b), json=batch).json()["accepted"] == 1

    _metrics_flow(client, token_a, story.admin_a)  # flows past B's frame at once
    wait_until(lambda: _quarantined(db), timeout=20, what="the refused frame to be set aside")
    [item] = _quarantined(db)
    assert (item.pipeline, item.team_id, item.failures) == ("telemetry.metrics", story.team_b, 1)
    assert item.reason == f"ValueError: refused a row of server {server_b}"
    assert frame_of(item).server_id == server_b

    def stored() -> float:
        found = client.get("/api/v1/metrics", headers=bearer(story.admin_b),
                           params={"metric": "refused.metric", "from": NOW - 300, "agg": "sum", "step": 3600})
        return sum(v for s in found.json()["data"] for _, v in s["points"])

    assert stored() == 0
    settings: Settings = runtime.of(client.app).settings
    assert quarantine.replay(db, item.id, replayers(db, settings), now=utcnow())
    assert stored() == 7.0 and _quarantined(db) == []


def _segment(directory: Path, name: str, frames: list[Frame]) -> Path:
    path = directory / name
    path.write_bytes(b"".join(frame.encode() for frame in frames))
    return path


def _metrics(server_id: int, value: float, team_id: int = 1) -> Frame:
    body = orjson.dumps({"series": [{"metric": "cpu.percent", "points": [[NOW - 5, value]]}]})
    return Frame(Kind.METRICS, team_id, server_id, NOW, body)


class DownStore(EmbeddedStore):
    """Refuses every INSERT while ``down``; its ping fails too unless ``answers``."""

    def __init__(self, path: Path, *, answers: bool) -> None:
        super().__init__(path)
        self.down, self.answers = True, answers

    def ping(self) -> None:
        if self.down and not self.answers:
            raise ConnectionRefusedError("store down")
        super().ping()

    def insert_metrics(self, points: Sequence[MetricPoint]) -> None:
        if self.down:
            raise ConnectionRefusedError("store down")
        super().insert_metrics(points)


def _storer(store: EmbeddedStore, directory: Path, settings: Settings, db: Database) -> Storer:
    return Storer(store, directory, limits_of(settings), max_rows=1000,
                  quarantine=FrameQuarantine(settings.resolved_database_url, db))


def _sum(store: EmbeddedStore, team_id: int = 1) -> float:
    found = store.query_series(SeriesQuery(team_id, [1, 2, 3], "cpu.percent", {}, NOW - 3600, NOW + 3600, 3600,
                                           Agg.SUM, Tier.HOUR))
    return sum(value for series in found for _, value in series.points)


def test_a_frame_that_cannot_be_decoded_is_set_aside_at_once(tmp_path: Path, settings: Settings,
                                                             db: Database) -> None:
    store = EmbeddedStore(tmp_path / "t.db")
    store.migrate()
    broken = Frame(Kind.METRICS, 5, 3, NOW, b'{"series": [')  # never spooled by the judge: a fault injected
    _segment(tmp_path, "metrics-0000000001.seg", [_metrics(1, 2.0), broken, _metrics(2, 3.0)])
    _storer(store, tmp_path, settings, db).store_segments(closed_segments(tmp_path))
    assert _sum(store) == 5.0 and closed_segments(tmp_path) == []
    [item] = _quarantined(db)
    assert (item.pipeline, item.team_id, item.payload) == ("telemetry.metrics", 5, broken.encode())
    assert item.reason == "MalformedBody: The body is not valid JSON"


@pytest.mark.parametrize("answers", [False, True], ids=["ping-fails", "ping-answers-several-servers-fail"])
def test_an_outage_sets_nothing_aside_and_everything_is_stored_once_back(tmp_path: Path, settings: Settings,
                                                                       db: Database, answers: bool) -> None:
    store = DownStore(tmp_path / "t.db", answers=answers)
    store.migrate()
    _segment(tmp_path, "metrics-0000000001.seg", [_metrics(1, 2.0), _metrics(2, 3.0)])
    storer = _storer(store, tmp_path, settings, db)
    for _ in range(STRIKES + 1):
        with pytest.raises(ConnectionRefusedError):
            storer.store_segments(closed_segments(tmp_path))
    assert [path.name for path in closed_segments(tmp_path)] == ["metrics-0000000001.seg"]
    assert _quarantined(db) == []
    store.down = False
    storer.store_segments(closed_segments(tmp_path))
    assert _sum(store) == 5.0 and closed_segments(tmp_path) == []


def test_a_suspect_waits_behind_the_line_and_is_set_aside_after_three_failures(tmp_path: Path, settings: Settings,
                                                                              db: Database) -> None:
    store = RefusingStore(tmp_path / "t.db", server_id=3)
    store.migrate()
    _segment(tmp_path, "metrics-0000000001.seg", [_metrics(1, 2.0), _metrics(3, 9.0, team_id=7)])
    storer = _storer(store, tmp_path, settings, db)
    storer.store_segments(closed_segments(tmp_path))
    assert _sum(store) == 2.0
    for strikes in range(1, STRIKES):
        [suspect] = closed_segments(tmp_path)
        assert f"-suspect-{strikes}-" in suspect.name and _quarantined(db) == []
        assert storer.ready([suspect]) == []  # not due yet: the line moves on without it
        _segment(tmp_path, f"metrics-000000001{strikes}.seg", [_metrics(2, 1.0)])
        os.utime(suspect, (time.time() - SUSPECT_RETRY_SECONDS, time.time() - SUSPECT_RETRY_SECONDS))
        storer.store_segments(storer.ready(closed_segments(tmp_path)))
    assert _sum(store) == 2.0 + (STRIKES - 1) * 1.0
    assert closed_segments(tmp_path) == []
    [item] = _quarantined(db)
    assert (item.team_id, frame_of(item)) == (7, _metrics(3, 9.0, team_id=7))


def test_the_backlog_is_the_closed_segments_their_size_and_age(tmp_path: Path) -> None:
    assert backlog_status(tmp_path, now=NOW) == BacklogStatus(0, 0, 0.0, 0.0)
    (tmp_path / "metrics-0000000001.open").write_bytes(b"x" * 10)  # still being written: not backlog
    for number, (size, age) in enumerate([(100, 30.0), (50, 5.0)], start=1):
        segment = tmp_path / f"logs-000000000{number}.seg"
        segment.write_bytes(b"x" * size)
        os.utime(segment, (NOW - age, NOW - age))
    assert backlog_status(tmp_path, now=NOW) == BacklogStatus(150, 2, 30.0, 30.0)


def test_the_storer_process_sets_aside_a_frame_it_cannot_decode(served: tuple[httpx.Client, str, str, str],
                                                                 tmp_path: Path) -> None:
    http, key_a, token_a, _ = served
    [spool] = [path for path in (tmp_path / "hostatlas-data" / "telemetry-spool").iterdir() if path.is_dir()]
    broken = Frame(Kind.METRICS, 9, 9, time.time(), b'{"series": [')  # the judge never spools this: injected
    injected = spool / "metrics-0-injected.tmp"
    injected.write_bytes(broken.encode())
    injected.rename(injected.with_suffix(".seg"))
    _metrics_flow(http, token_a, key_a)
    db = Database(f"sqlite:///{tmp_path / 'hostatlas-data' / 'hostatlas.db'}")
    try:
        wait_until(lambda: _quarantined(db), what="the undecodable frame to be set aside")
        [item] = _quarantined(db)
    finally:
        db.dispose()
    assert (item.pipeline, item.team_id, item.payload) == ("telemetry.metrics", 9, broken.encode())
