"""PostgreSQL stopped mid-load and started again, under two API nodes and a worker (a PostgreSQL of this test's
own, tests/engines.py, so no other test notices).

While it is down, every request that needs the database is refused cleanly: 503 in the platform's JSON
envelope (plain text for pings), never a 500, a stack trace or a hang; once it is back the same nodes, not
restarted, answer again. Afterwards the rows are counted: everything acknowledged is there once, and every
multi-row write (an enrolment: server and agent token; a heartbeat: row and tags) is whole or absent.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from hostatlas.db.engine import Database
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG
from tests.conftest import require_service
from tests.engines import EngineMissing, PrivatePostgres, private_postgres
from tests.fault_agents import Count, Phase, count, describe_statuses, report_fault
from tests.support import bearer, enrol, issue_key
from tests.topology import Topology, topology

pytestmark = pytest.mark.postgres

DOWN_S = 8.0
AFTER_S = 6.0
CLIENTS = 2
NODE_ENV = {"HOSTATLAS_RATE_LIMIT": "100000/minute", "HOSTATLAS_FLUSH_INTERVAL": "0.2",
            "HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true", "HOSTATLAS_PING_RATE_LIMIT": "1000/second"}


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    try:
        with private_postgres() as engine:
            yield engine
    except EngineMissing as missing:
        require_service("a private PostgreSQL", False, str(missing))


@dataclass
class Fixtures:
    key: str
    agent_token: str
    # An agent that checks in only while the database is down: its last_seen_at afterwards shows whether the
    # check-ins acknowledged then were kept (the other agent's later check-ins would hide that).
    outage_agent_token: str
    outage_server_id: int
    ping_token: str
    phase: Phase


@dataclass
class Answer:
    phase: str
    operation: str
    status: str  # the HTTP status, or the transport error's name
    clean: bool  # a 2xx, or an error in the expected shape with no internals in it
    created: str | None  # the unique name of what a 2xx created


@dataclass
class Load:
    """Threads sending every kind of request, round-robin over the nodes, until halted (at most 120 s)."""

    nodes: list[str]
    fixtures: Fixtures
    phase: Phase
    answers: list[Answer] = field(default_factory=list)
    halt: threading.Event = field(default_factory=threading.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    def run(self) -> None:
        deadline = time.monotonic() + 120
        turn = 0
        with httpx.Client(timeout=15) as client:
            while not self.halt.is_set() and time.monotonic() < deadline:
                for name, operation in OPERATIONS.items():
                    node = self.nodes[turn % len(self.nodes)]
                    turn += 1
                    self._record(name, *operation(client, node, self.fixtures, next(self.numbers)))
                self.halt.wait(0.05)

    def _record(self, operation: str, answer: httpx.Response | Exception, created: str | None) -> None:
        if isinstance(answer, Exception):
            self.answers.append(Answer(self.phase.name, operation, type(answer).__name__, False, None))
            return
        ok = answer.is_success
        self.answers.append(Answer(self.phase.name, operation, str(answer.status_code),
                                   ok or _clean_refusal(answer), created if ok else None))


def _clean_refusal(answer: httpx.Response) -> bool:
    """A 503 as the platform promises it: the JSON envelope (plain text for pings), a Retry-After, no internals."""
    if answer.status_code != 503 or "Traceback" in answer.text or "psycopg" in answer.text:
        return False
    if answer.request.url.path.startswith("/heartbeat/"):
        return True
    error = answer.json().get("error", {})
    return (error.get("status") == 503 and error.get("code") == "unavailable"
            and error.get("request_id") == answer.headers.get("X-Request-Id") and "Retry-After" in answer.headers)


Sent = tuple[httpx.Response | Exception, str | None]


def _send(client: httpx.Client, method: str, url: str, created: str | None = None, **kwargs: object) -> Sent:
    try:
        return client.request(method, url, **kwargs), created  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return exc, None


def _read_servers(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    return _send(client, "GET", f"{node}/api/v1/servers", headers=bearer(fx.key))


def _create_heartbeat(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    body = {"name": f"fault-hb-{n}", "interval": 3600, "grace": 600, "tags": ["fault", f"n{n}"]}
    return _send(client, "POST", f"{node}/api/v1/heartbeats", f"fault-hb-{n}", headers=bearer(fx.key), json=body)


def _create_alert_rule(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    body = {"name": f"fault-rule-{n}", "metric": "cpu.percent", "operator": ">=", "threshold": 95, "for_s": 60}
    return _send(client, "POST", f"{node}/api/v1/alert-rules", f"fault-rule-{n}", headers=bearer(fx.key), json=body)


def _create_webhook(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    body = {"url": f"http://127.0.0.1:9/fault-{n}", "description": f"fault-wh-{n}"}
    return _send(client, "POST", f"{node}/api/v1/webhooks", f"fault-wh-{n}", headers=bearer(fx.key), json=body)


def _create_api_key(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    body = {"name": f"fault-key-{n}", "scopes": ["servers:read"]}
    return _send(client, "POST", f"{node}/api/v1/api-keys", f"fault-key-{n}", headers=bearer(fx.key), json=body)


def _enrol(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    facts = {"machine_id": f"m-fault-{n}", "hostname": f"fault-{n}", "ip_address": "10.0.0.1", "os": "Debian 12",
             "kernel": "6.1", "cpu_cores": 2, "ram_total_mb": 2048, "agent_version": "1.4.2"}
    return _send(client, "POST", f"{node}/api/v1/agent/register", f"m-fault-{n}", headers=bearer(fx.key), json=facts)


def _check_in(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    body = {"agent_version": "1.4.2", "uptime_s": n, "boot_id": "fault"}
    token = fx.outage_agent_token if fx.phase.name == "outage" else fx.agent_token
    return _send(client, "POST", f"{node}/api/v1/agent/check-in", f"{fx.phase.name} {time.time()}",
                 headers=bearer(token), json=body)


def _ping(client: httpx.Client, node: str, fx: Fixtures, n: int) -> Sent:
    return _send(client, "GET", f"{node}/heartbeat/{fx.ping_token}", str(n))


OPERATIONS: dict[str, Callable[[httpx.Client, str, Fixtures, int], Sent]] = {
    "read servers": _read_servers, "create heartbeat": _create_heartbeat, "create alert rule": _create_alert_rule,
    "create webhook": _create_webhook, "create API key": _create_api_key, "enrol": _enrol, "check-in": _check_in,
    "ping": _ping,
}
# Answered from memory while the database is down (docs/deploy.md: buffered check-ins): the others need it.
BUFFERED = {"check-in"}


@pytest.mark.timeout(240)
def test_postgres_restarted_mid_load_answers_503_then_recovers_with_nothing_half_written(
        tmp_path: Path, postgres: PrivatePostgres) -> None:
    with topology(tmp_path / "topology", database_url=postgres.url, env=NODE_ENV) as running:
        pids = [node.pid for node in [*running.nodes, *running.workers]]
        phase = Phase()
        load = Load([node.url for node in running.nodes], _fixtures(running, postgres.url, phase), phase)
        threads = [threading.Thread(target=load.run, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(3)
            # Answers that arrive while the server stops or starts may go either way: only the phases between
            # are judged strictly.
            phase.name = "stopping"
            postgres.stop()
            phase.name = "outage"
            time.sleep(DOWN_S)
            ready_during = _readiness(running)
            phase.name = "restart"
            postgres.start()
            time.sleep(1)
            phase.name = "after"
            time.sleep(AFTER_S)
        finally:
            load.halt.set()
            for thread in threads:
                thread.join(timeout=30)
        assert ready_during == {node.name: (503, "unreachable") for node in running.nodes}, ready_during
        assert _readiness(running) == {node.name: (200, "ok") for node in running.nodes}
        assert [node.pid for node in [*running.nodes, *running.workers]] == pids
        assert all(process.running for process in [*running.nodes, *running.workers]), running.logs()
        last_check_in = _last_acknowledged_check_in(load.answers)
        server = httpx.get(f"{running.nodes[0].url}/api/v1/servers/{load.fixtures.outage_server_id}",
                           headers=bearer(load.fixtures.key), timeout=10)
        _assert_and_report(load.answers, postgres.url, load.fixtures, server.json(), last_check_in)


def _readiness(running: Topology) -> dict[str, tuple[int, str]]:
    """Each node's /readyz status and its database check."""
    answers = {node.name: httpx.get(f"{node.url}/readyz", timeout=10) for node in running.nodes}
    return {name: (answer.status_code, str(answer.json().get("database"))) for name, answer in answers.items()}


def _fixtures(running: Topology, database_url: str, phase: Phase) -> Fixtures:
    db = Database(database_url)
    try:
        with db.session(write=False) as session:
            team_id = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
        key = issue_key(db, team_id, ["*"], name="fault load")
    finally:
        db.dispose()
    with httpx.Client(base_url=running.nodes[0].url, timeout=30) as client:
        _, agent_token = enrol(client, key, machine_id="m-fault-agent", hostname="fault-agent")
        outage_server_id, outage_token = enrol(client, key, machine_id="m-fault-outage", hostname="fault-outage")
        created = client.post("/api/v1/heartbeats", headers=bearer(key), json={"name": "fault-pinged", "interval": 60})
        assert created.status_code == 201, created.text
    return Fixtures(key, agent_token, outage_token, outage_server_id, created.json()["ping_url"].rsplit("/", 1)[-1],
                    phase)


def _last_acknowledged_check_in(answers: list[Answer]) -> float:
    """When the last check-in sent during the outage (and acknowledged) was sent."""
    sent = [a.created.split() for a in answers if a.operation == "check-in" and a.created]
    return max(float(at) for phase, at in sent if phase == "outage")


def _rows(database_url: str) -> dict[str, list[tuple[object, ...]]]:
    queries = {
        "heartbeats": "SELECT h.name, (SELECT count(*) FROM heartbeat_tags t WHERE t.heartbeat_id = h.id) "
                      "FROM heartbeats h WHERE h.name LIKE 'fault-hb-%'",
        "alert rules": "SELECT name FROM alert_rules WHERE name LIKE 'fault-rule-%'",
        "webhooks": "SELECT description, secret IS NOT NULL FROM webhooks WHERE description LIKE 'fault-wh-%'",
        "API keys": "SELECT name FROM api_keys WHERE name LIKE 'fault-key-%'",
        "servers": "SELECT s.machine_id, (SELECT count(*) FROM agent_tokens t WHERE t.server_id = s.id "
                   "AND t.revoked_at IS NULL) FROM servers s WHERE s.machine_id LIKE 'm-fault-%' "
                   "AND s.machine_id NOT IN ('m-fault-agent', 'm-fault-outage')",
        "pings": "SELECT p.id FROM heartbeat_pings p JOIN heartbeats h ON h.id = p.heartbeat_id "
                 "WHERE h.name = 'fault-pinged'",
    }
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return {name: [tuple(row) for row in connection.execute(text(sql))] for name, sql in queries.items()}
    finally:
        engine.dispose()


CREATES = {"create heartbeat": "heartbeats", "create alert rule": "alert rules", "create webhook": "webhooks",
           "create API key": "API keys", "enrol": "servers"}
# What a whole write looks like in the rows above (after the unique name): a heartbeat has its two tags, a
# webhook its secret, a server exactly one live agent token.
WHOLE: dict[str, tuple[object, ...]] = {"heartbeats": (2,), "webhooks": (True,), "servers": (1,)}


def _assert_and_report(answers: list[Answer], database_url: str, fx: Fixtures, server: dict[str, object],
                       last_check_in: float) -> None:
    rows = _rows(database_url)
    figures: list[Count] = []
    for operation, table in CREATES.items():
        acknowledged = {a.created for a in answers if a.operation == operation and a.created}
        figures.append(count({(0, int(name.rsplit("-", 1)[1])) for name in acknowledged if name},
                             [(0, int(str(row[0]).rsplit("-", 1)[1])) for row in rows[table]]))
        half_written = [row for row in rows[table] if row[1:] != WHOLE.get(table, ())]
        assert not half_written, (table, half_written)
    pings_acknowledged = sum(1 for a in answers if a.operation == "ping" and a.created)
    pings = Count(pings_acknowledged, len(rows["pings"]), max(0, pings_acknowledged - len(rows["pings"])),
                  max(0, len(rows["pings"]) - pings_acknowledged), 0)
    total = sum(figures, pings)
    by_phase: dict[str, Counter[str]] = {}
    for answer in answers:
        by_phase.setdefault(answer.phase, Counter())[answer.status] += 1
    outage = [a for a in answers if a.phase == "outage" and a.operation not in BUFFERED]
    report_fault("postgres-restarted", describe_statuses(by_phase), total,
                 f"down {DOWN_S:.0f} s; during it: " + ", ".join(
                     f"{op} {dict(Counter(a.status for a in answers if a.phase == 'outage' and a.operation == op))}"
                     for op in OPERATIONS))

    assert all(a.clean for a in answers), [a for a in answers if not a.clean][:10]
    assert outage and all(a.status == "503" for a in outage), [a for a in outage if a.status != "503"][:10]
    assert all(a.status.startswith("2") for a in answers if a.phase in ("before", "after")), [
        a for a in answers if a.phase in ("before", "after") and not a.status.startswith("2")][:10]
    assert (total.lost, total.duplicated) == (0, 0), (figures, pings)
    # The check-ins acknowledged while the database was down were kept and written once it came back: the
    # agent that checked in only then was last seen at its last one (the node's clock, to the flush interval).
    seen_at = datetime.fromisoformat(str(server["last_seen_at"]).replace("Z", "+00:00")).timestamp()
    assert seen_at >= last_check_in - 1, (server["last_seen_at"], last_check_in)
