"""Redis down under two API nodes and a worker (a Redis of this test's own, tests/engines.py).

Redis holds nothing but the rate-limit windows the nodes share. While it is down the limits degrade open
(every request is let through; each node warns once, not at every request), and nothing else changes: agents
keep ingesting (counted afterwards in ClickHouse: nothing lost, nothing twice), API reads answer, webhooks are
delivered once. When it is back, one budget is shared by both nodes again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]

from hostatlas.db.engine import Database
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG
from tests.conftest import require_service
from tests.engines import EngineMissing, PrivateRedis, private_redis
from tests.fault_agents import (
    METRIC,
    Count,
    NumberedAgent,
    Phase,
    count,
    describe_statuses,
    report_fault,
    statuses_by_phase,
)
from tests.receiver import Receiver, receiver
from tests.support import bearer, enrol, issue_key, wait_until
from tests.topology import Topology, topology

pytestmark = [pytest.mark.long_running(35), pytest.mark.redis, pytest.mark.postgres, pytest.mark.clickhouse]

LIMIT = 200  # per minute and identity; a probe's burst fits in one window, an agent's minute stays well below
NODE_ENV = {"HOSTATLAS_RATE_LIMIT": f"{LIMIT}/minute", "HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true",
            "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2", "HOSTATLAS_WORKER_TICK": "0.2"}
DOWN_S = 10.0
SLOW_S = 2.0  # no answer may take this long because the limiter cannot reach Redis


@pytest.fixture
def redis_engine(tmp_path: Path) -> Iterator[PrivateRedis]:
    try:
        with private_redis(tmp_path) as engine:
            yield engine
    except EngineMissing as missing:
        require_service("a private Redis", False, str(missing))


class Team:
    def __init__(self, database_url: str) -> None:
        self.db = Database(database_url)
        with self.db.session(write=False) as session:
            self.id = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id

    def new_key(self, name: str) -> str:
        return issue_key(self.db, self.id, ["*"], name=name)


def _probe(running: Topology, key: str, *, requests: int) -> tuple[Counter[str], float]:
    """Reads with one key, alternating between the nodes, after one request to each (a key is charged to the
    client's address until it has authenticated on a node): the statuses, and the slowest answer in seconds."""
    nodes = [node.url for node in running.nodes]
    seen: Counter[str] = Counter()
    slowest = 0.0
    with httpx.Client(headers=bearer(key), timeout=10) as client:
        for node in nodes:
            assert client.get(f"{node}/api/v1/servers").status_code == 200
        for turn in range(requests):
            started = time.monotonic()
            answer = client.get(f"{nodes[turn % len(nodes)]}/api/v1/servers")
            slowest = max(slowest, time.monotonic() - started)
            seen[f"{nodes[turn % len(nodes)]} {answer.status_code}"] += 1
    return seen, slowest


def _allowed(seen: Counter[str]) -> int:
    return sum(times for outcome, times in seen.items() if outcome.endswith(" 200"))


@pytest.mark.timeout(240)
def test_redis_down_degrades_rate_limits_open_and_changes_nothing_else(
        tmp_path: Path, redis_engine: PrivateRedis, private_schema_url: str, clickhouse_db_url: str) -> None:
    database_url = private_schema_url
    with receiver() as hooks, topology(tmp_path / "topology", database_url=database_url, redis_url=redis_engine.url,
                                       clickhouse_url=clickhouse_db_url, env=NODE_ENV) as running:
        team = Team(database_url)
        try:
            figures = _run(running, team, redis_engine, hooks, clickhouse_db_url)
        finally:
            team.db.dispose()
    shared_before, open_during, shared_after, slowest = figures
    # One budget for both nodes: the LIMIT-th request is the last let through, whichever node gets it.
    assert _allowed(shared_before) == LIMIT and _allowed(shared_after) == LIMIT, (shared_before, shared_after)
    assert _allowed(open_during) == sum(open_during.values()) > LIMIT, open_during
    assert slowest < SLOW_S, slowest


def _run(running: Topology, team: Team, redis_engine: PrivateRedis, hooks: Receiver,
         clickhouse_url: str) -> tuple[Counter[str], Counter[str], Counter[str], float]:
    nodes = [node.url for node in running.nodes]
    with httpx.Client(base_url=nodes[0], timeout=10) as client:
        server_id, token = enrol(client, team.new_key("enrolment"), machine_id="m-fault-redis", hostname="fault")
    admin = team.new_key("admin")
    webhook = httpx.post(f"{nodes[1]}/api/v1/webhooks", headers=bearer(admin), timeout=10,
                         json={"url": hooks.url, "events": ["heartbeat.missed"]})  # test deliveries only
    assert webhook.status_code == 201, webhook.text
    phase = Phase()
    agent = NumberedAgent(server_id, token, nodes, phase, interval=1.0, max_seconds=120)
    agent.start()
    try:
        shared_before, _ = _probe(running, team.new_key("probe before"), requests=LIMIT + 20)
        phase.name = "outage"
        redis_engine.stop()
        down_since = time.monotonic()
        open_during, slowest = _probe(running, team.new_key("probe during"), requests=LIMIT + 20)
        reads = [httpx.get(f"{node}/api/v1/servers/{server_id}", headers=bearer(admin), timeout=10).status_code
                 for node in nodes]
        tests = [httpx.post(f"{node}/api/v1/webhooks/{webhook.json()['id']}/test", headers=bearer(admin),
                            timeout=10).status_code for node in nodes]
        delivered = hooks.wait_for(len(nodes), timeout=30)
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_since)))
        phase.name = "restart"
        redis_engine.start()
        phase.name = "after"
        shared_after, _ = _probe(running, team.new_key("probe after"), requests=LIMIT + 20)
    finally:
        agent.halt.set()
        agent.join(timeout=30)
    assert reads == [200, 200] and all(status in (200, 201, 202) for status in tests), (reads, tests)
    time.sleep(2)  # a second delivery of either test would have come by now
    deliveries = Counter(request.headers.get("x-hostatlas-delivery") for request in hooks.requests)
    assert len(deliveries) == len(nodes) and set(deliveries.values()) == {1}, deliveries
    assert len(delivered) == len(nodes)
    ingested = _count_ingested(agent, clickhouse_url)
    logs = [node.log_path.read_text(errors="replace") for node in running.nodes]
    warnings = [log.count("rate_limiter_unavailable") for log in logs]
    # A warning when Redis went away (not one per request let through: hundreds here), and one when it came back.
    assert warnings == [1] * len(logs) and all("rate_limiter_recovered" in log for log in logs), \
        warnings
    report_fault("redis-down", describe_statuses(statuses_by_phase([agent])), ingested,
                 f"down {DOWN_S:.0f} s; one key alternating over both nodes let through {_allowed(shared_before)} "
                 f"of {LIMIT + 20} before, {_allowed(open_during)} of {LIMIT + 20} while down (limit {LIMIT}/minute), "
                 f"{_allowed(shared_after)} after; rate_limiter_unavailable warnings per node {warnings}; "
                 f"slowest answer while down {slowest:.2f} s; webhook tests delivered {sum(deliveries.values())} "
                 f"for {len(nodes)}")
    agent_answers = statuses_by_phase([agent])
    assert all(status.startswith("2") for seen in agent_answers.values() for status in seen), agent_answers
    assert (ingested.lost, ingested.duplicated) == (0, 0), ingested
    return shared_before, open_during, shared_after, slowest


def _count_ingested(agent: NumberedAgent, clickhouse_url: str) -> Count:
    """The agent's points as stored, once both nodes' spools are empty."""
    client = Client.from_url(clickhouse_url)
    try:
        def stored() -> list[tuple[int, int]]:
            rows = client.execute("SELECT server_id, toInt64(value) FROM metrics_raw WHERE metric = %(m)s",
                                  {"m": METRIC})
            return [(int(server), int(number)) for server, number in rows]

        acknowledged = {(agent.server_id, number) for number in agent.tally.acknowledged_points}
        wait_until(lambda: set(stored()) >= acknowledged, timeout=30, interval=0.5, what="the agent's points")
        time.sleep(1)
        return count(acknowledged, stored())
    finally:
        client.disconnect()
