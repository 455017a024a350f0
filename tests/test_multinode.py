"""The multi-node deployment on loopback: two API nodes (``serve --no-worker``) and two workers sharing
PostgreSQL, Redis and the two-shard ClickHouse cluster (scripts/clickhouse-cluster), started once for the
module (tests/topology.py). Each test works in a team of its own, so the module's servers going offline
(``OFFLINE_AFTER`` is seconds here) reach no other test's webhooks.

What one node does, the other sees: telemetry sent to one is read through the other, a rate-limit budget
is one budget across nodes, and state changes fire once however many nodes and workers could fire them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]

from hostatlas.db.engine import Database
from tests.receiver import Receiver, receiver
from tests.support import CLICKHOUSE_CLUSTER, bearer, enrol, pro_team_key, wait_until
from tests.topology import Topology

# The module's topology starts in the first test's setup: 20-50 s here, up to topology.START_TIMEOUT when loaded.
pytestmark = [pytest.mark.long_running(40), pytest.mark.clickhouse, pytest.mark.postgres,
              pytest.mark.redis, pytest.mark.timeout(480)]

# Small enough to run out of in a test, large enough for the polling the other tests do with their own keys.
RATE_LIMIT = 150
OFFLINE_AFTER = 3
NODE_ENV = {
    "HOSTATLAS_RATE_LIMIT": f"{RATE_LIMIT}/minute",
    "HOSTATLAS_OFFLINE_AFTER": str(OFFLINE_AFTER),
    "HOSTATLAS_WORKER_TICK": "0.2",
    "HOSTATLAS_FLUSH_INTERVAL": "0.2",
    "HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true",
    "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2",
}


def _rows_per_shard(clickhouse_cluster_url: str, database: str) -> list[dict[int, int]]:
    """Raw points per server in each shard's local table, shard by shard (the addresses system.clusters gives)."""
    admin = Client.from_url(clickhouse_cluster_url)
    try:
        shards = admin.execute("SELECT host_address, port FROM system.clusters WHERE cluster = %(cluster)s "
                               "ORDER BY shard_num, replica_num", {"cluster": CLICKHOUSE_CLUSTER})
    finally:
        admin.disconnect()
    found = []
    for host, port in shards:
        shard = Client(host=host, port=port, database=database)
        try:
            found.append(dict(shard.execute("SELECT server_id, count() FROM metrics_raw_local GROUP BY server_id")))
        finally:
            shard.disconnect()
    return found


def test_telemetry_sent_to_one_node_is_read_through_the_other(running: Topology, install_db: Database,
                                                              clickhouse_cluster_url: str,
                                                              cluster_database: str) -> None:
    key = pro_team_key(install_db, "readers")
    node_a, node_b = running.nodes
    now = int(time.time())
    start = now - now % 60 - 600  # whole minutes ago: every point in its own 15 s raw bucket
    sent = {"cpu.percent": [[start, 12.5], [start + 15, 37.25], [start + 30, 99.0]],
            "load.1": [[start, 0.75], [start + 15, 1.5]]}
    lines = ["disk full on /var", "nginx reloaded", "backup finished in 42 s"]
    with httpx.Client(base_url=node_a.url, headers=bearer(key), timeout=30) as a, \
            httpx.Client(base_url=node_b.url, headers=bearer(key), timeout=30) as b:
        first, first_token = enrol(a, key, machine_id="m-reader-1", hostname="reader-1")
        second, second_token = enrol(b, key, machine_id="m-reader-2", hostname="reader-2")
        pushed = a.post("/api/v1/agent/metrics", headers=bearer(first_token), json={"series": [
            {"metric": metric, "labels": {}, "points": points} for metric, points in sent.items()]})
        assert pushed.json() == {"accepted": 5, "dropped": 0, "problems": []}, pushed.text
        logged = b.post("/api/v1/agent/logs", headers=bearer(second_token), json={
            "entries": [{"ts": now - 30 + index, "source": "/var/log/app.log", "line": line}
                        for index, line in enumerate(lines)]})
        assert logged.status_code == 200 and logged.json()["accepted"] == 3, logged.text

        # Node B waits only for its own spool: what A acknowledged shows within A's batch delay plus a store.
        def points_through_b(metric: str) -> list[list[float]]:
            answer = b.get(f"/api/v1/servers/{first}/metrics", params={
                "metric": metric, "from": start, "to": start + 60, "step": 15, "agg": "last"})
            assert answer.status_code == 200, answer.text
            return [point for series in answer.json()["data"] for point in series["points"]]

        for metric, points in sent.items():
            wait_until(lambda metric=metric: points_through_b(metric), timeout=15, interval=0.3,  # type: ignore[misc]
                       what=f"{metric} through node B")
            assert points_through_b(metric) == points
        fleet = a.get("/api/v1/metrics", params={"metric": "cpu.percent", "server_id": [first, second],
                                                 "from": start, "to": start + 60, "step": 15, "agg": "sum"}).json()
        assert [(series["server"]["id"], series["points"]) for series in fleet["data"]] == [
            (first, sent["cpu.percent"])]

        def lines_through_a() -> list[str]:
            answer = a.get("/api/v1/logs", params={"server_id": second, "per_page": 100})
            assert answer.status_code == 200, answer.text
            return sorted(entry["line"] for entry in answer.json()["data"])

        wait_until(lines_through_a, timeout=15, interval=0.3, what="the log lines through node A")
        assert lines_through_a() == sorted(lines)
    # Each server's rows live on one shard of the two (sharded by server), all of them, once.
    per_shard = _rows_per_shard(clickhouse_cluster_url, cluster_database)
    assert [found.get(first, 0) for found in per_shard] in ([5, 0], [0, 5]), per_shard


def test_a_rate_limit_budget_is_shared_by_the_nodes(running: Topology, install_db: Database) -> None:
    """Requests alternating between the nodes run out after one budget, not one per node. The first request of
    a key on each node is charged to the client's address (ratelimit.py: the node does not know the key yet),
    so one budget plus at most one request per node gets through."""
    key = pro_team_key(install_db, "limited")
    clients = [httpx.Client(base_url=node.url, headers=bearer(key), timeout=30) for node in running.nodes]
    answers: list[tuple[str, int, dict[str, str]]] = []
    started = time.monotonic()
    try:
        for number in range(2 * RATE_LIMIT + 20):
            client = clients[number % 2]
            answer = client.get("/api/v1/servers")
            answers.append((str(client.base_url), answer.status_code, dict(answer.headers)))
    finally:
        for client in clients:
            client.close()
    elapsed = time.monotonic() - started
    assert elapsed < 50, f"the requests took {elapsed:.0f} s: a one-minute window may have rolled over"
    statuses = [status for _, status, _ in answers]
    allowed = statuses.count(200)
    assert set(statuses) == {200, 429}, Counter(statuses)
    assert RATE_LIMIT <= allowed <= RATE_LIMIT + len(running.nodes), (allowed, Counter(statuses))
    first_refusal = statuses.index(429)
    assert 200 not in statuses[first_refusal + len(running.nodes):], "a node let requests through after the budget"
    refused_by = {base for base, status, _ in answers if status == 429}
    assert refused_by == {node.url for node in running.nodes}
    _, _, last = answers[-1]
    assert last["x-ratelimit-limit"] == str(RATE_LIMIT) and last["x-ratelimit-remaining"] == "0"
    assert int(last["retry-after"]) >= 1


def _events(client: httpx.Client, kind: str, server_id: int) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/events", params={"type": kind, "server_id": server_id, "per_page": 100})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def _delivered(hook: Receiver) -> list[dict[str, Any]]:
    with hook.lock:
        return [orjson.loads(request.body) for request in hook.requests]


def _make_webhook(client: httpx.Client, url: str, events: list[str]) -> int:
    created = client.post("/api/v1/webhooks", json={"url": url, "events": events, "description": "multinode"})
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_a_silent_server_fires_one_offline_and_one_online_across_nodes_and_workers(
        running: Topology, install_db: Database) -> None:
    """Two workers sweep for silent servers and two nodes flush check-ins: each flip is one event and one
    delivery. The server is enrolled through node A and checks in through node B."""
    key = pro_team_key(install_db, "silent")
    node_a, node_b = running.nodes
    with receiver() as hook, httpx.Client(base_url=node_a.url, headers=bearer(key), timeout=30) as a, \
            httpx.Client(base_url=node_b.url, headers=bearer(key), timeout=30) as b:
        _make_webhook(b, hook.url, ["server.offline", "server.online"])
        server_id, token = enrol(a, key, machine_id="m-silent", hostname="silent")
        assert b.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
        wait_until(lambda: _events(a, "server.offline", server_id), timeout=OFFLINE_AFTER + 15, interval=0.2,
                   what="the server.offline event")
        # A second event would come from a later sweep than the flip. A sentinel enrolled now goes silent a
        # whole offline window later: once its event is there, both workers have swept that long since.
        sentinel, _ = enrol(b, key, machine_id="m-sentinel", hostname="sentinel")
        wait_until(lambda: _events(b, "server.offline", sentinel), timeout=OFFLINE_AFTER + 15, interval=0.2,
                   what="the sentinel's server.offline event")
        assert len(_events(a, "server.offline", server_id)) == 1
        assert len(_events(b, "server.offline", sentinel)) == 1

        # Back: the same agent checks in through both nodes at once; each node's buffer flushes its check-in.
        barrier = threading.Barrier(2)

        def check_in(client: httpx.Client) -> None:
            barrier.wait(timeout=10)
            assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200

        threads = [threading.Thread(target=check_in, args=(client,)) for client in (a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        wait_until(lambda: _events(a, "server.online", server_id), timeout=10, interval=0.2,
                   what="the server.online event")
        # A second server.online would come from a later flush: wait until both nodes have flushed a later one.
        for number, client in enumerate((a, b), start=1):
            assert client.post("/api/v1/agent/check-in", headers=bearer(token),
                               json={"uptime_s": 4200 + number}).status_code == 200
            wait_until(lambda number=number: b.get(f"/api/v1/servers/{server_id}").json().get("uptime_s")  # type: ignore[misc]
                       == 4200 + number, timeout=10, interval=0.2, what="a later check-in flushed")
        assert len(_events(b, "server.online", server_id)) == 1
        assert len(_events(b, "server.offline", server_id)) == 1

        def delivered_per_server() -> Counter[tuple[str, int]]:
            return Counter((body["event"], body["data"]["server"]["id"]) for body in _delivered(hook))

        expected = Counter({("server.offline", server_id): 1, ("server.offline", sentinel): 1,
                            ("server.online", server_id): 1})
        wait_until(lambda: delivered_per_server() == expected, timeout=15, interval=0.2,
                   what=f"the deliveries {dict(expected)}")
        time.sleep(1.0)  # any second delivery of these would be on its way by now: no lease has to expire
        assert delivered_per_server() == expected
        assert len({body["delivery_id"] for body in _delivered(hook)}) == 3


def test_each_event_is_delivered_once_by_two_workers(running: Topology, install_db: Database) -> None:
    """Twenty incidents reported through both nodes: twenty incident.created deliveries, each received once,
    each with one attempt recorded, whichever worker claimed it."""
    key = pro_team_key(install_db, "hooks")
    reports = 20
    with receiver() as hook, httpx.Client(base_url=running.nodes[0].url, headers=bearer(key), timeout=30) as a, \
            httpx.Client(base_url=running.nodes[1].url, headers=bearer(key), timeout=30) as b:
        webhook_id = _make_webhook(a, hook.url, ["incident.created"])
        _, token = enrol(b, key, machine_id="m-crashy", hostname="crashy")
        for number in range(reports):
            client = (a, b)[number % 2]
            answer = client.post("/api/v1/agent/incidents", headers=bearer(token), json={
                "key": f"crash-{number}", "service": "app", "title": f"app crash {number}"})
            assert answer.status_code in (200, 201), answer.text

        def ours() -> dict[str, str]:
            """delivery_id -> title of the deliveries of these reports (the server going silent after
            OFFLINE_AFTER opens an outage incident too, delivered like the others but not counted here)."""
            return {body["delivery_id"]: body["data"]["title"] for body in _delivered(hook)
                    if body["data"]["title"].startswith("app crash ")}

        wait_until(lambda: len(ours()) == reports, timeout=30, interval=0.2, what=f"{reports} deliveries")

        def recorded() -> dict[str, dict[str, Any]]:
            found = a.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"per_page": 100})
            assert found.status_code == 200, found.text
            return {item["id"]: item for item in found.json()["data"]}

        # Every delivery recorded as done, so none is left to be claimed again.
        wait_until(lambda: all(recorded()[delivery]["status"] == "succeeded" for delivery in ours()), timeout=15,
                   interval=0.2, what="every delivery recorded as succeeded")
        time.sleep(1.0)
        received = Counter(body["delivery_id"] for body in _delivered(hook))
        found = ours()
        records = recorded()
    assert sorted(found.values()) == sorted(f"app crash {number}" for number in range(reports))
    assert set(received.values()) == {1}, received
    assert [(records[delivery]["status"], records[delivery]["attempt_count"]) for delivery in found] == [
        ("succeeded", 1)] * reports
