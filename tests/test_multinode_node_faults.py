"""Processes of the multi-node deployment dying mid-work: an API node SIGKILLed during ingestion, a worker
SIGKILLed while delivering webhooks. Two API nodes and two workers on PostgreSQL, Redis and the two-shard
ClickHouse cluster (tests/topology.py), one topology for the module.

What is promised, and counted here:
- Nothing acknowledged is lost. A node's acknowledgement means the batch is in its spool on disk; a node
  killed and started again on the same data directory stores what its spool held. Agents whose request
  failed send it again to the other node (what an agent behind a load balancer does); if the dead node had
  spooled that batch before dying, it is stored twice: delivery is at least once for a request whose answer
  was lost, exactly once for one that was answered. The test predicts every point's count from what the
  agents saw and what node A's spool held when it died, and compares the store with it exactly.
- A webhook delivery whose worker died is sent again once its lease expires, by whichever worker claims it
  (at least once, the receiver dedupes on ``delivery_id``); no delivery the dead worker was not sending is
  sent twice, and every one ends up delivered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]
from sqlalchemy import select

from hostatlas.db.engine import Database
from hostatlas.telemetry.ingest.spool import OPEN_SUFFIX, SEGMENT_SUFFIX, Kind, read_frames
from hostatlas.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.fault_agents import count, report_fault
from tests.receiver import Received, Reply, receiver
from tests.support import bearer, enrol, pro_team_key, wait_until
from tests.topology import Node, Topology

# The module's topology starts in the first test's setup: 20-50 s here, up to topology.START_TIMEOUT when loaded.
pytestmark = [pytest.mark.long_running(40), pytest.mark.clickhouse, pytest.mark.postgres,
              pytest.mark.redis, pytest.mark.timeout(480)]

METRIC = "fault.node_kill"
LEASE_SECONDS = 4
NODE_ENV = {
    "HOSTATLAS_RATE_LIMIT": "100000/minute",
    "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2",
    "HOSTATLAS_WORKER_TICK": "0.2",
    "HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true",
    # A dead worker's deliveries are taken over after this; an attempt must end within half of it
    # (dispatcher.py starts one only then), which these timeouts ensure, so live workers never overlap.
    "HOSTATLAS_WEBHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
    "HOSTATLAS_WEBHOOK_CONNECT_TIMEOUT": "0.5",
    "HOSTATLAS_WEBHOOK_READ_TIMEOUT": "1.5",
}
# Node A stores nothing before it dies (a segment closes after this many seconds), so everything it
# acknowledged is in its spool when it is killed and recovery carries all of it. This also keeps the kill
# away from the storer's own at-least-once window (an INSERT done, its segment not yet deleted: storer.py).
NODE_OVERRIDES = {"node-a": {"HOSTATLAS_TELEMETRY_BATCH_DELAY": "120"}}


@dataclass
class Attempt:
    node: str
    sent_at: float  # monotonic
    outcome: str  # the status code, or the transport error's name


@dataclass
class Batch:
    numbers: range
    attempts: list[Attempt] = field(default_factory=list)


class RetryingAgent(threading.Thread):
    """Posts batches of numbered points (value = number) to its home node; a batch that fails (no answer, or
    5xx) is sent again to the other node, then back, up to ``MAX_ATTEMPTS`` times."""

    PER_BATCH = 5
    MAX_ATTEMPTS = 6
    INTERVAL = 0.1

    def __init__(self, server_id: int, token: str, nodes: list[Node], home: int) -> None:
        super().__init__(daemon=True, name=f"agent-{server_id}")
        self.server_id = server_id
        self.token = token
        self.order = [nodes[home], *nodes[:home], *nodes[home + 1:]]
        self.batches: list[Batch] = []
        self.halt = threading.Event()
        self.first_ts = int(time.time()) - 3 * 3600

    def run(self) -> None:
        deadline = time.monotonic() + 180
        with httpx.Client(headers=bearer(self.token), timeout=15) as client:
            while not self.halt.is_set() and time.monotonic() < deadline:
                start = len(self.batches) * self.PER_BATCH
                batch = Batch(range(start, start + self.PER_BATCH))
                self.batches.append(batch)
                self._send(client, batch)
                self.halt.wait(self.INTERVAL)

    def _send(self, client: httpx.Client, batch: Batch) -> None:
        body = {"series": [{"metric": METRIC, "labels": {},
                            "points": [[self.first_ts + number, float(number)] for number in batch.numbers]}]}
        for attempt in range(self.MAX_ATTEMPTS):
            node = self.order[attempt % len(self.order)]
            sent_at = time.monotonic()
            try:
                outcome = str(client.post(f"{node.url}/api/v1/agent/metrics", json=body).status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            batch.attempts.append(Attempt(node.name, sent_at, outcome))
            if outcome.startswith("2"):
                return
            time.sleep(0.1)


def _spooled(node: Node) -> Counter[tuple[int, int]]:
    """(server_id, number) of every point in the node's spool files, open and closed segments alike."""
    found: Counter[tuple[int, int]] = Counter()
    for path in sorted((node.data_dir / "telemetry-spool").rglob("*")):
        if path.suffix not in (SEGMENT_SUFFIX, OPEN_SUFFIX):
            continue
        for frame in read_frames(path):
            if frame.kind != Kind.METRICS:
                continue
            for series in orjson.loads(frame.body)["series"]:
                found.update((frame.server_id, int(value)) for _, value in series["points"])
    return found


def _stored(clickhouse_cluster_url: str, database: str, servers: list[int]) -> Counter[tuple[int, int]]:
    """Every stored point of these servers, repeats included, through the Distributed table (both shards)."""
    client = Client.from_url(clickhouse_cluster_url.rsplit("/", 1)[0] + f"/{database}")
    try:
        rows = client.execute("SELECT server_id, toInt64(value) FROM metrics_raw WHERE metric = %(metric)s "
                              "AND server_id IN %(servers)s", {"metric": METRIC, "servers": tuple(servers)})
    finally:
        client.disconnect()
    return Counter((int(server), int(number)) for server, number in rows)


def _expected(agents: list[RetryingAgent], spooled_at_kill: Counter[tuple[int, int]], killed: str,
              killed_at: float) -> Counter[tuple[int, int]]:
    """How many times each point must be stored: once for each copy the killed node's spool held, plus once
    for each acknowledgement from a live process (the other node, or the killed node once restarted)."""
    expected = Counter(spooled_at_kill)
    for agent in agents:
        for batch in agent.batches:
            acks = [a for a in batch.attempts if a.outcome.startswith("2")
                    and not (a.node == killed and a.sent_at < killed_at)]
            for number in batch.numbers:
                expected[(agent.server_id, number)] += len(acks)
    return +expected


def test_an_api_node_killed_during_ingestion_loses_no_acknowledged_point(
        running: Topology, install_db: Database, clickhouse_cluster_url: str, cluster_database: str) -> None:
    key = pro_team_key(install_db, "ingest")
    node_a, node_b = running.nodes
    agents = []
    for index in range(4):  # two agents homed on each node, enrolled through their home node
        home = index % 2
        with httpx.Client(base_url=running.nodes[home].url, timeout=30) as client:
            server_id, token = enrol(client, key, machine_id=f"m-ingest-{index}", hostname=f"ingest-{index}")
        agents.append(RetryingAgent(server_id, token, running.nodes, home))
    for agent in agents:
        agent.start()
    try:
        time.sleep(3)
        killed_at = time.monotonic()
        node_a.kill()  # serve and its storer: the whole machine's worth of node A
        spooled_at_kill = _spooled(node_a)
        time.sleep(2)
        node_a.env.update({"HOSTATLAS_TELEMETRY_BATCH_DELAY": NODE_ENV["HOSTATLAS_TELEMETRY_BATCH_DELAY"]})
        node_a.start()  # same port, same data directory
        restarted_at = time.monotonic()
        time.sleep(2)
    finally:
        for agent in agents:
            agent.halt.set()
        for agent in agents:
            agent.join(timeout=30)
    expected = _expected(agents, spooled_at_kill, node_a.name, killed_at)
    servers = [agent.server_id for agent in agents]

    def all_stored() -> bool:
        return _stored(clickhouse_cluster_url, cluster_database, servers).total() >= expected.total()

    # What is missing after the wait shows in the figures and the assertions below, not as a timeout.
    with suppress(AssertionError):
        wait_until(all_stored, timeout=60, interval=0.5, what="every spooled and acknowledged point to be stored")
    time.sleep(1.5)  # anything stored once too often would be stored by now: nothing is left in a spool
    stored = _stored(clickhouse_cluster_url, cluster_database, servers)

    batches = [batch for agent in agents for batch in agent.batches]
    acknowledged = {(agent.server_id, number) for agent in agents for batch in agent.batches
                    if any(a.outcome.startswith("2") for a in batch.attempts) for number in batch.numbers}
    figures = count(acknowledged, stored.elements())
    outcomes = Counter(a.outcome for batch in batches for a in batch.attempts)
    retried = [batch for batch in batches if len(batch.attempts) > 1]
    acked_by_dead = {(agent.server_id, n) for agent in agents for batch in agent.batches for a in batch.attempts
                     if a.node == node_a.name and a.sent_at < killed_at and a.outcome.startswith("2")
                     for n in batch.numbers}
    report_fault("api-node-sigkilled", ", ".join(f"{status} x{times}" for status, times in sorted(outcomes.items()))
                 + f" ({len(retried)} batches sent again to the other node)", figures,
                 f"node A's spool held {spooled_at_kill.total()} points at the kill ({len(acked_by_dead)} of them "
                 f"acknowledged by it), all stored after its restart ({restarted_at - killed_at:.0f} s down); "
                 f"{sum(times > 1 for times in expected.values())} points predicted twice: batches node A spooled "
                 f"whose answer the kill cut off, sent again to node B (at least once for an unanswered "
                 f"request); the store matched the prediction point by point")

    assert acked_by_dead and acked_by_dead <= set(spooled_at_kill), "node A acknowledged what it had not spooled"
    assert figures.lost == 0, sorted(acknowledged - set(stored))[:20]
    assert stored == expected, _difference(stored, expected)
    assert any(a.node == node_a.name and a.sent_at > restarted_at and a.outcome == "200"
               for batch in batches for a in batch.attempts), "node A took no batch after its restart"
    assert not any((node_a.data_dir / "telemetry-spool").rglob(f"*{SEGMENT_SUFFIX}")), "a segment was left unstored"


def _difference(stored: Counter[tuple[int, int]], expected: Counter[tuple[int, int]]) -> str:
    keys = sorted(set(stored) | set(expected))
    wrong = [(key, stored[key], expected[key]) for key in keys if stored[key] != expected[key]]
    return f"{len(wrong)} points differ (point, stored, expected): {wrong[:20]}"


def _delivery_rows(db: Database, webhook_id: int) -> dict[str, str]:
    with db.session(write=False) as session:
        return dict(session.execute(select(WebhookDelivery.delivery_id, WebhookDelivery.status)
                                    .where(WebhookDelivery.webhook_id == webhook_id)).all())


def test_a_worker_killed_mid_delivery_loses_nothing_and_repeats_only_what_it_was_sending(
        running: Topology, install_db: Database) -> None:
    """Worker 2 is frozen (SIGSTOP) before the events exist, so worker 1 alone fans them out and delivers them
    to a slow receiver; it is SIGKILLed with attempts in flight and worker 2 is let go (SIGCONT) to finish the
    queue. Exactly the deliveries in flight at the kill are received twice, and only once their lease ran out."""
    key = pro_team_key(install_db, "hookfault")
    first, second = running.workers
    second.freeze()
    reports = 12
    slow = threading.Event()
    slow.set()

    def answer(_: Received) -> Reply:
        return Reply(200, delay=1.2 if slow.is_set() else 0.0)

    with receiver(default=answer) as hook, \
            httpx.Client(base_url=running.nodes[1].url, headers=bearer(key), timeout=30) as b:
        created = b.post("/api/v1/webhooks", json={"url": hook.url, "events": ["incident.created"]})
        assert created.status_code == 201, created.text
        webhook_id = int(created.json()["id"])
        _, token = enrol(b, key, machine_id="m-hookfault", hostname="hookfault")
        for number in range(reports):
            sent = b.post("/api/v1/agent/incidents", headers=bearer(token),
                          json={"key": f"crash-{number}", "service": "app", "title": f"app crash {number}"})
            assert sent.status_code in (200, 201), sent.text
        hook.wait_for(3, timeout=30)
        first.kill()
        killed_at = time.monotonic()
        slow.clear()
        with hook.lock:
            before_kill = [orjson.loads(request.body)["delivery_id"] for request in hook.requests]
        done_at_kill = {delivery for delivery, status in _delivery_rows(install_db, webhook_id).items()
                        if status == DeliveryStatus.SUCCEEDED.value}
        second.thaw()

        def all_succeeded() -> bool:
            rows = _delivery_rows(install_db, webhook_id)
            return len(rows) == reports and set(rows.values()) == {DeliveryStatus.SUCCEEDED.value}

        wait_until(all_succeeded, timeout=60, interval=0.2, what=f"all {reports} deliveries to succeed")
        time.sleep(1.0)
        with hook.lock:
            received = [(orjson.loads(request.body), request.at) for request in hook.requests]
        details = b.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"per_page": 100}).json()["data"]

    times = Counter(body["delivery_id"] for body, _ in received)
    in_flight_at_kill = set(before_kill) - done_at_kill
    twice = {delivery for delivery, seen in times.items() if seen > 1}
    report_fault("worker-sigkilled", f"nothing (webhooks: the receiver got {len(before_kill)} requests before the "
                 f"kill, {len(received)} in all)",
                 count(set(times), times.elements()),
                 f"{reports} deliveries, {len(in_flight_at_kill)} in flight at the kill, each sent again by the "
                 f"other worker once its {LEASE_SECONDS} s lease ran out: the duplicates the lease promises "
                 f"(same delivery_id), no others")

    assert len(times) == reports and max(times.values()) <= 2, times
    assert in_flight_at_kill, "the kill found no attempt in flight: nothing was tested"
    assert twice == in_flight_at_kill, (twice, in_flight_at_kill)
    receipts: dict[str, list[float]] = {}
    for body, at in received:
        receipts.setdefault(body["delivery_id"], []).append(at)
    for delivery in twice:
        sent_first, sent_again = receipts[delivery]
        # The lease was taken before the first attempt, which starts only with half the lease left at least
        # (dispatcher.py): the second attempt cannot come sooner than that after the first.
        assert sent_first < killed_at < sent_again and sent_again - sent_first >= LEASE_SECONDS / 2 - 0.2, (
            delivery, sent_first - killed_at, sent_again - killed_at)
    assert {item["status"] for item in details} == {"succeeded"}
    titles = Counter(body["data"]["title"] for body, _ in received)
    assert set(titles) == {f"app crash {number}" for number in range(reports)}
