"""The agent, as installed, against a real ``hostatlas serve``: enrol, check in, metrics, logs (rotation and
truncation included), the remote config applied live, and ``status``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent_harness import create_key, running_agent
from tests.support import bearer, running_server

SERVE_ENV = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2", "HOSTATLAS_FLUSH_INTERVAL": "0.2",
             "HOSTATLAS_WORKER_TICK": "0.5", "HOSTATLAS_LOCAL_AGENT": "false"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("platform")
    key = create_key(root)
    with running_server(root, SERVE_ENV) as base:
        yield base, key, root


def _lines(agent: object, source: Path, word: str) -> list[str]:
    found = agent.api("/api/v1/logs", q=word, source=str(source), per_page=100, **{"from": "-1h"})  # type: ignore[attr-defined]
    return sorted(entry["line"] for entry in found["data"])


def test_enrol_check_in_and_metrics_with_the_contract_names(platform: tuple[str, str, Path],
                                                           tmp_path: Path) -> None:
    base, key, _ = platform
    with running_agent(tmp_path, base, key) as agent:
        credentials = tmp_path / "state" / "credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        server = agent.eventually(lambda: (s := agent.api(f"/api/v1/servers/{agent.server_id}"))["last_seen_at"]
                                  and s, "the server")
        assert server["status"] == "online" and server["agent_version"] == "0.1.0"

        def series(metric: str) -> list[dict[str, object]]:
            return [s for s in agent.api(f"/api/v1/servers/{agent.server_id}/metrics", metric=metric,
                                         **{"from": "-5m"})["data"] if s["points"]]

        cpu = agent.eventually(lambda: series("cpu.percent"), "cpu.percent points")
        assert all(0 <= value <= 100 for _, value in cpu[0]["points"])
        memory = agent.eventually(lambda: series("mem.used_percent"), "mem.used_percent")
        assert 0 < memory[0]["points"][-1][1] < 100
        disks = agent.eventually(lambda: series("disk.used_percent"), "disk.used_percent")
        assert any(s["labels"].get("mount") == "/" for s in disks)
        network = agent.eventually(lambda: series("net.rx_bytes"), "net.rx_bytes (a rate: needs two samples)")
        assert all("iface" in s["labels"] and s["labels"]["iface"] != "lo" for s in network)
        assert all(value >= 0 for s in network for _, value in s["points"])
        for metric in ("load.1", "load.5", "load.15", "mem.used_bytes", "swap.used_percent"):
            assert agent.eventually(lambda metric=metric: series(metric), metric)

        status = agent.eventually(lambda: "last metrics:" in (out := agent.cli("status").stdout) and out,
                                  "status with a metrics success")
        assert f"server {agent.server_id}" in status and "spool:" in status and "running:    yes" in status


def test_log_lines_arrive_and_rotation_and_truncation_lose_nothing(platform: tuple[str, str, Path],
                                                                  tmp_path: Path) -> None:
    base, key, _ = platform
    log = tmp_path / "app.log"
    log.write_text("history line that predates the agent\n")
    with running_agent(tmp_path, base, key, log_paths=[str(log)]) as agent:
        agent.eventually(lambda: agent.status().get("tailed_files"), "the agent's first status")
        with log.open("a") as handle:
            handle.write("rotwordalpha first line\n")
        agent.eventually(lambda: _lines(agent, log, "rotwordalpha"), "an appended line, searchable")
        # logrotate's default: written to, renamed, a new file created; lines on both sides of the rename.
        with log.open("a") as handle:
            handle.write("rotwordalpha second line, written just before the rotation\n")
        os.rename(log, tmp_path / "app.log.1")
        log.write_text("rotwordalpha third line, in the new file\n")
        # copytruncate: copied, then truncated in place, then written again.
        with log.open("a") as handle:
            handle.write("rotwordalpha fourth line, before the truncation\n")
        agent.eventually(lambda: len(_lines(agent, log, "rotwordalpha")) == 4, "the rotated file's lines")
        with log.open("r+") as handle:
            handle.truncate(0)
        with log.open("a") as handle:
            handle.write("rotwordalpha fifth line, after the truncation\n")
        found = agent.eventually(lambda: len(lines := _lines(agent, log, "rotwordalpha")) >= 5 and lines,
                                 "the line after the truncation")
        assert len(found) == 5, found  # none lost, none twice
        assert not _lines(agent, log, "predates")  # a file first seen at start is tailed from its end


def test_a_remote_config_change_applies_without_a_restart(platform: tuple[str, str, Path], tmp_path: Path) -> None:
    base, key, _ = platform
    later = tmp_path / "later.log"
    later.write_text("")
    with running_agent(tmp_path, base, key) as agent:
        pid = agent.process.pid if agent.process else None
        agent.eventually(lambda: agent.api(f"/api/v1/servers/{agent.server_id}")["last_seen_at"], "a check-in")
        answer = httpx.put(f"{base}/api/v1/servers/{agent.server_id}/agent-config", headers=bearer(key),
                           json={"log_paths": [str(later)]})
        assert answer.status_code == 200, answer.text
        # The file is added while the agent runs: a file that appears in the config is read from its start.
        agent.eventually(lambda: str(later) in agent.status().get("tailed_files", []),
                         "the new path in the agent's status")
        with later.open("a") as handle:
            handle.write("remotewordbeta configured from the platform\n")
        agent.eventually(lambda: _lines(agent, later, "remotewordbeta"), "a line from the remotely added file")
        assert agent.process is not None and agent.process.pid == pid and agent.process.poll() is None


def test_status_says_so_when_not_enrolled(tmp_path: Path) -> None:
    from tests.agent_harness import AgentUnderTest, write_config

    config = write_config(tmp_path / "agent.toml", {"state_dir": tmp_path / "state"})
    agent = AgentUnderTest(tmp_path, config, "http://127.0.0.1:9", "sk_live_x")
    done = agent.cli("status", check=False)
    assert done.returncode == 2 and "not enrolled" in done.stderr
    ran = agent.cli("run", check=False)
    assert ran.returncode == 2 and "enrol" in ran.stderr
    refused = agent.cli("enrol", "--url", "http://127.0.0.1:9", "--key", "sk_live_x", check=False)
    assert refused.returncode == 1 and "enrolment failed" in refused.stderr
