"""The ping URLs (/heartbeat/...): every path and method, run timing, slugs, hostile pings, durability.

On SQLite and PostgreSQL; the burst and the big bodies also through a real ``hostatlas serve``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from hostatlas import jobs
from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events.models import Event
from hostatlas.heartbeats import ping_routes, pings, service
from hostatlas.heartbeats.models import Heartbeat, HeartbeatFlip, HeartbeatPing, PingKind
from hostatlas.heartbeats.pings import Ping, PingOutcome, Target
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Plan
from tests.support import running_server


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings with room for the pings these tests send (the limit has its own test)."""
    return settings.model_copy(update={"ping_rate_limit": "100000/second"})


def _team(db: Database) -> int:
    with db.session(write=False) as session:
        return teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id


def _heartbeat(db: Database, team_id: int, name: str, **fields: Any) -> tuple[int, str]:
    with db.session(write=True) as session:
        heartbeat = service.create_heartbeat(session, team_id=team_id,
                                             fields={"name": name, "interval": 3600, **fields}, now=utcnow())
        return heartbeat.id, heartbeat.ping_token


def _get(db: Database, heartbeat_id: int) -> Heartbeat:
    with db.session(write=False) as session:
        return session.get_one(Heartbeat, heartbeat_id)


def _pings(db: Database, heartbeat_id: int) -> list[HeartbeatPing]:
    with db.session(write=False) as session:
        return list(session.scalars(select(HeartbeatPing).where(HeartbeatPing.heartbeat_id == heartbeat_id)
                                    .order_by(HeartbeatPing.id)))


def _count(db: Database) -> int:
    with db.session(write=False) as session:
        return session.scalar(select(func.count()).select_from(HeartbeatPing)) or 0


@contextmanager
def _counted_queries(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")


def test_every_path_and_method(client: TestClient, db: Database) -> None:
    heartbeat_id, token = _heartbeat(db, _team(db), "nightly")
    for method in ("GET", "POST", "HEAD"):
        for suffix in ("", "/start", "/fail", "/0", "/1", "/255", "/log"):
            response = client.request(method, f"/heartbeat/{token}{suffix}")
            _ok(response)
            assert response.text == ("" if method == "HEAD" else "OK")
    rows = _pings(db, heartbeat_id)
    assert len(rows) == 21
    assert [(row.kind, row.exit_status) for row in rows[:7]] == [
        ("success", None), ("start", None), ("fail", None), ("success", 0), ("fail", 1), ("fail", 255), ("log", None)]
    assert {row.method for row in rows} == {"GET", "POST", "HEAD"}
    assert rows[0].user_agent == "testclient" and rows[0].remote_addr == "testclient"
    for bad in ("/256", "/-1", "/1000", "/a/b/c/d", "/start/x"):
        response = client.get(f"/heartbeat/{token}{bad}")
        assert (response.status_code, response.text) == (404, "not found"), bad
    response = client.put(f"/heartbeat/{token}")
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST, HEAD"
    assert client.get(f"/heartbeat/{token}", params={"rid": "x" * 65}).status_code == 400
    assert len(_pings(db, heartbeat_id)) == 21


def test_status_follows_the_pings_and_log_changes_nothing(client: TestClient, db: Database) -> None:
    heartbeat_id, token = _heartbeat(db, _team(db), "backup")
    assert _get(db, heartbeat_id).status == "new"
    _ok(client.get(f"/heartbeat/{token}/log"))
    assert _get(db, heartbeat_id).status == "new"
    _ok(client.get(f"/heartbeat/{token}"))
    assert _get(db, heartbeat_id).status == "up"
    _ok(client.post(f"/heartbeat/{token}/log", content=b"just saying"))
    assert _get(db, heartbeat_id).status == "up"
    _ok(client.get(f"/heartbeat/{token}/start"))
    assert _get(db, heartbeat_id).status == "started"
    _ok(client.get(f"/heartbeat/{token}/3"))
    stored = _get(db, heartbeat_id)
    assert stored.status == "down"
    _ok(client.get(f"/heartbeat/{token}/log"))
    assert _get(db, heartbeat_id).status == "down"
    _ok(client.get(f"/heartbeat/{token}/0"))
    assert _get(db, heartbeat_id).status == "up"
    _ok(client.get(f"/heartbeat/{token}/fail"))
    assert _get(db, heartbeat_id).status == "down"
    with db.session(write=False) as session:
        flips = [(flip.from_status, flip.to_status, flip.cause) for flip in session.scalars(
            select(HeartbeatFlip).where(HeartbeatFlip.heartbeat_id == heartbeat_id).order_by(HeartbeatFlip.id))]
        alerts = list(session.scalars(select(Event.type).where(Event.resource_type == "heartbeat",
                                                               Event.resource_id == heartbeat_id).order_by(Event.id)))
    assert flips == [("new", "up", "ping"), ("up", "started", "started"), ("started", "down", "exit_status:3"),
                     ("down", "up", "ping"), ("up", "down", "fail_ping")]
    assert alerts == ["heartbeat.missed", "heartbeat.recovered", "heartbeat.missed"]


def test_rid_pairs_overlapping_runs(client: TestClient, db: Database) -> None:
    heartbeat_id, token = _heartbeat(db, _team(db), "overlapping")
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        _ok(client.get(f"/heartbeat/{token}/start", params={"rid": "run-a"}))
        clock.move_to(start + timedelta(seconds=10))
        _ok(client.get(f"/heartbeat/{token}/start", params={"rid": "run-b"}))
        clock.move_to(start + timedelta(seconds=30))
        _ok(client.get(f"/heartbeat/{token}", params={"rid": "run-a"}))
        clock.move_to(start + timedelta(seconds=35))
        _ok(client.get(f"/heartbeat/{token}/0", params={"rid": "run-b"}))
    rows = _pings(db, heartbeat_id)
    assert [(row.kind, row.rid, row.duration_s) for row in rows] == [
        ("start", "run-a", None), ("start", "run-b", None), ("success", "run-a", 30.0), ("success", "run-b", 25.0)]
    assert _get(db, heartbeat_id).last_duration_s == 25.0


def test_slug_urls_with_and_without_create(client: TestClient, db: Database) -> None:
    with db.session(write=True) as session:
        team_id = teams.create_team(session, "free-team", plan=Plan.FREE).id
    heartbeat_id, _ = _heartbeat(db, team_id, "db dump", slug="db-dump")
    with db.session(write=True) as session:
        ping_key = service.ping_settings(session, team_id=team_id).ping_key
    assert ping_key
    for suffix in ("", "/start", "/0", "/fail", "/7", "/log"):
        _ok(client.post(f"/heartbeat/{ping_key}/db-dump{suffix}", content=b"out"))
    assert [row.kind for row in _pings(db, heartbeat_id)] == ["success", "start", "success", "fail", "fail", "log"]
    assert client.get(f"/heartbeat/{ping_key}/nope").status_code == 404
    assert client.get(f"/heartbeat/{ping_key}/nope", params={"create": "1"}).status_code == 404  # switched off
    assert client.get("/heartbeat/unknownkey123/db-dump").status_code == 404
    with db.session(write=True) as session:
        service.update_ping_settings(session, team_id=team_id, ping_create=True)
    _ok(client.get(f"/heartbeat/{ping_key}/fresh-job/start", params={"create": "1"}))
    with db.session(write=False) as session:
        created = session.execute(select(Heartbeat).where(Heartbeat.slug == "fresh-job")).scalar_one()
    assert (created.interval, created.grace, created.status) == (86_400, 3_600, "started")
    _ok(client.get(f"/heartbeat/{ping_key}/fresh-job"))  # now known, no create needed
    assert _get(db, created.id).status == "up"
    for index in range(18):  # the free plan's 20 heartbeats
        _heartbeat(db, team_id, f"filler {index}")
    response = client.get(f"/heartbeat/{ping_key}/one-too-many", params={"create": "1"})
    assert response.status_code == 403 and "limit" in response.text


def test_unknown_and_malformed_tokens_cost_at_most_one_query(client: TestClient, db: Database) -> None:
    _heartbeat(db, _team(db), "known")
    client.get("/healthz")
    with _counted_queries(db) as statements:
        for malformed in ("x", "short", "has.dots.in.it.aaaaaaaa", "a" * 200, "%00%01aaaaaaaaaaaaaaaaaa"):
            assert client.get(f"/heartbeat/{malformed}").status_code == 404
    assert statements == []
    unknown = "u" * 22
    with _counted_queries(db) as statements:
        response = client.get(f"/heartbeat/{unknown}")
    assert (response.status_code, response.text) == (404, "not found")
    assert len(statements) <= 1
    with _counted_queries(db) as statements:
        for _ in range(5):
            assert client.post(f"/heartbeat/{unknown}/fail", content=b"x").status_code == 404
    assert statements == []  # remembered as unknown for a few seconds


def test_rotated_and_deleted_heartbeats_stop_answering_at_once(client: TestClient, db: Database) -> None:
    team_id = _team(db)
    heartbeat_id, token = _heartbeat(db, team_id, "rotating")
    _ok(client.get(f"/heartbeat/{token}"))  # now cached
    with db.session(write=True) as session:
        new_token = service.rotate_token(session, team_id=team_id, heartbeat_id=heartbeat_id, now=utcnow()).ping_token
    assert client.get(f"/heartbeat/{token}").status_code == 404
    _ok(client.get(f"/heartbeat/{new_token}"))
    with db.session(write=True) as session:
        service.delete_heartbeat(session, team_id=team_id, heartbeat_id=heartbeat_id)
    assert client.get(f"/heartbeat/{new_token}").status_code == 404


def test_rate_limit_per_heartbeat(db: Database, settings: Settings) -> None:
    limited = settings.model_copy(update={"ping_rate_limit": "3/minute"})
    team_id = _team(db)
    _, token = _heartbeat(db, team_id, "runaway")
    _, other = _heartbeat(db, team_id, "calm")
    with TestClient(create_app(limited, db=db)) as client:
        for _ in range(3):
            _ok(client.get(f"/heartbeat/{token}"))
        response = client.get(f"/heartbeat/{token}")
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        _ok(client.get(f"/heartbeat/{other}"))  # a budget per heartbeat


def _poison_ping(target: Target, token_hash: str) -> Ping:
    # An exit status no integer column holds: both databases refuse the row.
    return Ping(target=target, check=("token", token_hash), kind=PingKind.FAIL, at=utcnow(), method="GET",
                exit_status=2 ** 70)


def test_a_poison_ping_is_set_aside_and_its_batch_stored(db: Database, settings: Settings) -> None:
    team_id = _team(db)
    heartbeat_id, _ = _heartbeat(db, team_id, "poisoned")
    other_id, _ = _heartbeat(db, team_id, "healthy")
    with db.session(write=False) as session:
        rows = session.execute(select(Heartbeat.id, Heartbeat.ping_token_hash))
        hashes = {row.id: row.ping_token_hash for row in rows}
    writer = pings.PingWriter(db, public_url=settings.public_url, cache=pings.TargetCache())

    def good(hid: int) -> Ping:
        return Ping(target=Target(hid, team_id), check=("token", hashes[hid]), kind=PingKind.SUCCESS, at=utcnow(),
                    method="GET")

    batch = [good(heartbeat_id), good(other_id), _poison_ping(Target(heartbeat_id, team_id), hashes[heartbeat_id]),
             good(other_id), good(heartbeat_id)]
    writer.write(batch)
    assert [ping.outcome for ping in batch] == [PingOutcome.RECORDED, PingOutcome.RECORDED, PingOutcome.SET_ASIDE,
                                               PingOutcome.RECORDED, PingOutcome.RECORDED]
    assert len(_pings(db, heartbeat_id)) == 2 and len(_pings(db, other_id)) == 2
    with db.session(write=False) as session:
        items = list(session.scalars(select(QuarantinedItem).where(QuarantinedItem.pipeline == pings.PIPELINE)))
    assert len(items) == 1 and items[0].team_id == team_id
    assert pings.decode(items[0].payload).exit_status == 2 ** 70
    # Replaying it fails again (the value is still refused) and keeps it; the replayer is registered.
    assert not quarantine.replay(db, items[0].id, jobs.replayers(db, settings), now=utcnow())
    fixed = pings.decode(items[0].payload)
    fixed.exit_status = 3  # as an operator would once the cause is fixed
    with db.session(write=True) as session:
        session.get_one(QuarantinedItem, items[0].id).payload = pings.encode(fixed)
    assert quarantine.replay(db, items[0].id, jobs.replayers(db, settings), now=utcnow())
    assert [row.exit_status for row in _pings(db, heartbeat_id)] == [None, None, 3]


def test_through_the_writer_concurrently(db: Database, settings: Settings) -> None:
    """Many waiting requests share transactions; each is answered after its commit."""
    team_id = _team(db)
    heartbeat_id, _ = _heartbeat(db, team_id, "grouped")
    target, check = Target(heartbeat_id, team_id), ("token", _get(db, heartbeat_id).ping_token_hash)
    writer = pings.PingWriter(db, public_url=settings.public_url, cache=pings.TargetCache())

    async def burst() -> list[PingOutcome]:
        return list(await asyncio.gather(*(writer.submit(Ping(target=target, check=check, kind=PingKind.LOG,
                                                              at=utcnow(), method="GET")) for _ in range(300))))

    assert asyncio.run(burst()) == [PingOutcome.RECORDED] * 300
    assert len(_pings(db, heartbeat_id)) == 300


@pytest.fixture
def server(db: Database, settings: Settings, database_url: str, tmp_path: Path) -> Iterator[str]:
    env = {"HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_DATA_DIR": str(settings.data_dir),
           "HOSTATLAS_RATE_LIMIT": "1000000/minute", "HOSTATLAS_PING_RATE_LIMIT": "1000000/second",
           "HOSTATLAS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path, env, extra_args=("--no-worker", "--no-access-log")) as base:
        yield base


def test_real_server_burst_and_hostile_bodies(server: str, db: Database, settings: Settings) -> None:
    team_id = _team(db)
    beats = [_heartbeat(db, team_id, f"burst {index}") for index in range(10)]

    def hammer(worker: int) -> list[int]:
        with httpx.Client(base_url=server, timeout=30, trust_env=False) as http:
            return [http.post(f"/heartbeat/{beats[(worker + i) % 10][1]}/log", content=b"line").status_code
                    for i in range(25)]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = [status for batch in pool.map(hammer, range(20)) for status in batch]
    assert statuses == [200] * 500
    assert _count(db) == 500  # every acknowledged ping is stored

    heartbeat_id, token = beats[0]
    huge = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MB, far over the API's 1 MB body cap
    with httpx.Client(base_url=server, timeout=60, trust_env=False) as http:
        _ok(http.post(f"/heartbeat/{token}/fail", content=huge))
        _ok(http.post(f"/heartbeat/{token}/log", content=bytes(range(256)),
                      headers={"content-type": "application/octet-stream"}))
        _ok(http.get(f"/heartbeat/{token}"))  # the connection still serves after the drained body
    rows = _pings(db, heartbeat_id)
    cut, binary = rows[-3], rows[-2]
    assert cut.kind == "fail" and cut.body_truncated and cut.body == huge[:settings.ping_body_bytes]
    assert binary.body == bytes(range(256)) and not binary.body_truncated
    assert _get(db, heartbeat_id).status == "up"


def test_a_database_outage_is_503_not_500(client: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = _heartbeat(db, _team(db), "outage")

    def down(*_args: Any, **_kwargs: Any) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(pings, "find_by_token", down)
    response = client.get(f"/heartbeat/{token}")
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    monkeypatch.undo()
    monkeypatch.setattr(pings, "record", down)  # the writer's transaction fails as a whole: nothing set aside
    response = client.get(f"/heartbeat/{token}")
    assert response.status_code == 503
    with db.session(write=False) as session:
        assert session.scalar(select(func.count()).select_from(QuarantinedItem)) == 0


RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def _stamped(response: httpx.Response) -> str:
    """The answer carries what every answer must (docs/heartbeats.md, CONTRACT.md); returns its request id."""
    for name in RATE_LIMIT_HEADERS:
        assert int(response.headers[name]) >= 0, (name, response.headers)
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 1
    assert response.headers["content-type"].startswith("text/plain")
    return response.headers["x-request-id"]


def test_every_ping_answer_carries_a_request_id_and_rate_limit_headers(db: Database, settings: Settings) -> None:
    limited = settings.model_copy(update={"ping_rate_limit": "2/minute"})
    _, token = _heartbeat(db, _team(db), "stamped")
    with TestClient(create_app(limited, db=db)) as client:
        answers = [client.get(f"/heartbeat/{token}"), client.post(f"/heartbeat/{token}/log", content=b"x"),
                   client.get(f"/heartbeat/{token}"), client.get(f"/heartbeat/{'u' * 22}"),
                   client.get("/heartbeat/x"), client.get("/heartbeat/a/b/c/d"), client.put(f"/heartbeat/{token}"),
                   client.head(f"/heartbeat/{token}/start")]
        assert [answer.status_code for answer in answers] == [200, 200, 429, 404, 404, 404, 405, 429]
        ids = [_stamped(answer) for answer in answers]
        assert all(request_id.startswith("req_") for request_id in ids) and len(set(ids)) == len(ids)
        # A known heartbeat's answers show its own budget: HOSTATLAS_PING_RATE_LIMIT.
        assert [answers[index].headers["x-ratelimit-limit"] for index in (0, 1, 2)] == ["2", "2", "2"]
        assert [answers[index].headers["x-ratelimit-remaining"] for index in (0, 1, 2)] == ["1", "0", "0"]
        # The client's own id comes back when it is well formed; another is made when it is not.
        echoed = client.get(f"/heartbeat/{'u' * 22}", headers={"X-Request-Id": "cron-42.nightly:7"})
        assert _stamped(echoed) == "cron-42.nightly:7"
        replaced = client.get(f"/heartbeat/{'u' * 22}", headers={"X-Request-Id": "no spaces allowed"})
        assert _stamped(replaced).startswith("req_")


def test_an_unexpected_error_is_a_plain_500_without_internals(client: TestClient, db: Database,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    _, token = _heartbeat(db, _team(db), "faulty")

    async def broken(*_args: Any, **_kwargs: Any) -> PingOutcome:
        raise RuntimeError("internal detail: /srv/secret/path")

    monkeypatch.setattr(pings.PingWriter, "submit", broken)
    responses = (client.get(f"/heartbeat/{token}"),
                 client.post(f"/heartbeat/{token}/fail", content=b"x", headers={"X-Request-Id": "job-9"}))
    logged = capfd.readouterr()
    logged_text = logged.out + logged.err
    for request_id in (responses[0].headers["x-request-id"], "job-9"):  # the traceback is in the log, by id
        assert f"request_id={request_id}" in logged_text or f'"request_id": "{request_id}"' in logged_text
    assert "RuntimeError: internal detail" in logged_text
    for response in responses:
        assert response.status_code == 500
        assert response.text == "internal error"
        assert "Traceback" not in response.text and "secret" not in response.text
        request_id = _stamped(response)
    assert request_id == "job-9"
    monkeypatch.undo()
    _ok(client.get(f"/heartbeat/{token}"))  # the fault passed; nothing was left broken


def test_pings_are_counted_under_their_templates(client: TestClient, db: Database) -> None:
    _, token = _heartbeat(db, _team(db), "counted")
    _ok(client.get(f"/heartbeat/{token}"))
    _ok(client.get(f"/heartbeat/{token}"))
    _ok(client.post(f"/heartbeat/{token}/start", content=b""))
    assert client.head(f"/heartbeat/{'u' * 22}/{'v' * 8}/fail").status_code == 404
    assert client.get("/heartbeat/a/b/c/d").status_code == 404
    assert client.request("BREW", f"/heartbeat/{token}").status_code == 405
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(client.get("/metrics").text)
               for sample in family.samples}
    for (method, route, status), count in ((("GET", "/heartbeat/{token}", "2xx"), 2),
                                           (("POST", "/heartbeat/{token}/{suffix}", "2xx"), 1),
                                           (("HEAD", "/heartbeat/{token}/{suffix}/{action}", "4xx"), 1),
                                           (("GET", "unmatched", "4xx"), 1),
                                           (("OTHER", "/heartbeat/{token}", "4xx"), 1)):
        labels = {"method": method, "route": route, "status": status}
        assert samples[("hostatlas_http_requests_total", frozenset(labels.items()))] == count, labels
        assert samples[("hostatlas_http_request_duration_seconds_sum", frozenset(labels.items()))] > 0
    # The labels are the templates the OpenAPI document shows for the ping URLs.
    assert set(ping_routes.ROUTES) <= set(client.app.openapi()["paths"])  # type: ignore[attr-defined]


def test_cached_heartbeats_skip_the_address_budget_and_lookups_do_not(db: Database, settings: Settings) -> None:
    """Many jobs behind one address may ping their known heartbeats freely; made-up tokens, which cost a
    lookup, are charged to the address's API budget (HOSTATLAS_RATE_LIMIT, shared with the API)."""
    tiny = settings.model_copy(update={"rate_limit": "3/minute"})
    _, token = _heartbeat(db, _team(db), "behind a NAT")
    with TestClient(create_app(tiny, db=db)) as client:
        for _ in range(10):  # the first is a lookup (charged: 1 of 3), the rest come from the cache
            _ok(client.get(f"/heartbeat/{token}"))
        unknown = [client.get(f"/heartbeat/{index:022d}") for index in range(3)]
        assert [response.status_code for response in unknown] == [404, 404, 429]
        assert unknown[0].headers["x-ratelimit-limit"] == "3" and unknown[0].headers["x-ratelimit-remaining"] == "1"
        _stamped(unknown[2])
        assert client.get("/api/v1/servers").status_code == 429  # the same budget as the API's
        _ok(client.get(f"/heartbeat/{token}"))  # the known heartbeat is not refused


def test_one_heartbeats_pings_apply_in_arrival_order_with_two_writer_threads(db: Database, settings: Settings) -> None:
    """Each writer thread owns a share of the heartbeats, so pings sent to one heartbeat together are applied
    (and logged) in the order they arrived, whichever thread's batch commits first."""
    team_id = _team(db)
    beats = [_heartbeat(db, team_id, f"ordered {index}")[0] for index in range(4)]
    hashes = {hid: _get(db, hid).ping_token_hash for hid in beats}
    writer = pings.PingWriter(db, public_url=settings.public_url, cache=pings.TargetCache(), threads=2)
    start = utcnow()

    def ping(hid: int, step: int) -> Ping:
        # Alternating start/success with run ids: out of order, a success would end no run (no duration).
        kind = PingKind.START if step % 2 == 0 else PingKind.SUCCESS
        return Ping(target=Target(hid, team_id), check=("token", hashes[hid]), kind=kind,
                    at=start + timedelta(milliseconds=step), method="GET", rid=f"run-{step // 2}")

    async def burst() -> list[PingOutcome]:
        return list(await asyncio.gather(*(writer.submit(ping(hid, step)) for step in range(60) for hid in beats)))

    assert asyncio.run(burst()) == [PingOutcome.RECORDED] * 240
    for hid in beats:
        logged = _pings(db, hid)
        assert [row.at for row in logged] == sorted(row.at for row in logged)
        assert all(row.duration_s is not None for row in logged if row.kind == "success")


def test_an_alerts_run_history_holds_the_run_its_own_ping_ended(db: Database, settings: Settings) -> None:
    team_id = _team(db)
    heartbeat_id, _ = _heartbeat(db, team_id, "history")
    target, check = Target(heartbeat_id, team_id), ("token", _get(db, heartbeat_id).ping_token_hash)
    writer = pings.PingWriter(db, public_url=settings.public_url, cache=pings.TargetCache())
    start = utcnow()
    for kind, seconds in ((PingKind.START, 0), (PingKind.FAIL, 5)):
        batch = [Ping(target=target, check=check, kind=kind, at=start + timedelta(seconds=seconds), method="GET")]
        writer.write(batch)
        assert batch[0].outcome is PingOutcome.RECORDED
    with db.session(write=False) as session:
        missed = session.scalars(select(Event).where(Event.resource_id == heartbeat_id,
                                                     Event.type == "heartbeat.missed")).one()
    assert missed.payload["cause"] == "fail_ping"
    assert missed.payload["runs"] == {"count": 1, "p50_s": 5.0, "p95_s": 5.0}


def test_the_writers_statements_cover_what_state_columns_stores() -> None:
    """The batch UPDATE is spelled from ``pings._STATE_COLUMNS``: it must name exactly what ``state.columns``
    returns (a column added there and not here would never be written by the fast path)."""
    from hostatlas.heartbeats import state
    from hostatlas.heartbeats.machine import State

    assert list(pings._STATE_COLUMNS) == list(state.columns(State(), utcnow()))
