"""An API node (re)started while ClickHouse is down: it starts, acknowledges agents' batches into its spool, and
stores them once ClickHouse returns; the storer waits for the store instead of dying and being respawned.

A node restarted after a crash during a ClickHouse outage meets exactly this; before, its start-up migration
failed and the node (or its storer, every second, with a traceback) did not come up.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.engines import PrivateClickHouseCluster
from tests.fault_agents import Phase, count, describe_statuses, report_fault, statuses_by_phase
from tests.support import wait_until
from tests.test_fault_clickhouse import DATABASE, NODE_ENV, _enrolled_agents, _stored
from tests.topology import topology

pytestmark = [pytest.mark.long_running(45), pytest.mark.clickhouse, pytest.mark.postgres]


@pytest.mark.timeout(300)
def test_a_node_started_while_clickhouse_is_down_acknowledges_then_stores_everything_once(
        tmp_path: Path, private_cluster: PrivateClickHouseCluster, private_schema_url: str) -> None:
    cluster, database_url = private_cluster, private_schema_url
    cluster.stop_clickhouse()
    # The database does not even exist yet: the storer creates it ON CLUSTER once the servers answer.
    with topology(tmp_path / "topology", database_url=database_url, clickhouse_url=cluster.url(DATABASE),
                  clickhouse_cluster=cluster.name, nodes=1, workers=0, env=NODE_ENV) as running:
        node = running.nodes[0]
        assert httpx.get(f"{node.url}/healthz", timeout=10).status_code == 200
        phase = Phase()
        phase.name = "down"
        agents = _enrolled_agents(running, database_url, phase)[:2]
        for agent in agents:
            agent.start()
        time.sleep(8)
        for agent in agents:
            agent.halt.set()
        for agent in agents:
            agent.join(timeout=30)
        by_phase = statuses_by_phase(agents)
        assert all(status.startswith("2") for status in by_phase["down"]), by_phase
        restarted_at = time.monotonic()
        cluster.start()
        acknowledged = {(agent.server_id, n) for agent in agents for n in agent.tally.acknowledged_points}
        acknowledged_lines = {(agent.server_id, n) for agent in agents for n in agent.tally.acknowledged_lines}
        assert len(acknowledged) > 20 and len(acknowledged_lines) > 20, by_phase

        def stored_all() -> bool:
            try:
                stored_points, stored_lines = _stored(cluster, agents)
                return set(stored_points) >= acknowledged and set(stored_lines) >= acknowledged_lines
            except Exception:  # the database appears only once the storer has migrated
                return False

        wait_until(stored_all, timeout=90, interval=1.0, what="the spool to be stored once ClickHouse is back")
        drained_in = time.monotonic() - restarted_at
        time.sleep(2)
        stored_points, stored_lines = _stored(cluster, agents)
        points, lines = count(acknowledged, stored_points), count(acknowledged_lines, stored_lines)
        deaths = node.log_path.read_text(errors="replace").count("telemetry_storer_died")
        report_fault("node-started-while-clickhouse-down", describe_statuses(by_phase), points + lines,
                     f"stored {drained_in:.1f} s after ClickHouse returned; storer processes died: {deaths}")
        assert (points.lost, points.duplicated, lines.lost, lines.duplicated) == (0, 0, 0, 0), (points, lines)
        assert deaths == 0
