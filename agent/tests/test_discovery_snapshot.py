"""The snapshot as a whole: feature flags, fingerprints, log paths for the tailer."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from hostatlas_agent.config import AgentConfig, WatchSpec
from hostatlas_agent.discovery import Snapshot, take_snapshot


def test_the_fingerprint_follows_the_payload_not_its_key_order() -> None:
    one = Snapshot(payload={"services": [{"name": "a", "ports": [1]}], "domains": []})
    same = Snapshot(payload={"domains": [], "services": [{"ports": [1], "name": "a"}]})
    other = Snapshot(payload={"services": [{"name": "a", "ports": [2]}], "domains": []})
    assert one.fingerprint() == same.fingerprint()
    assert one.fingerprint() != other.fingerprint()
    assert len(one.fingerprint()) == 64


def test_feature_flags_switch_parts_off(tmp_path: Path) -> None:
    config = AgentConfig(nginx_configs=[], apache_configs=[], certificate_paths=[str(tmp_path / "*.pem")],
                         docker_socket=str(tmp_path / "docker.sock"),
                         features={"discovery": False, "certificates": False, "containers": False})
    snapshot = take_snapshot(config)
    assert (snapshot.payload, snapshot.services, snapshot.log_paths) == ({}, [], [])
    config.features["certificates"] = True
    assert take_snapshot(config).payload == {"certificates": []}
    config.features["discovery"] = True
    assert sorted(take_snapshot(config).payload) == ["certificates", "domains", "services"]


def test_an_unchanged_host_gives_an_unchanged_fingerprint(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("http { server { listen 80; server_name b.example.test a.example.test; } }\n")
    config = AgentConfig(nginx_configs=[str(conf)], apache_configs=[], certificate_paths=[],
                         docker_socket=str(tmp_path / "docker.sock"),
                         features={"discovery": False, "certificates": True, "containers": False})
    assert take_snapshot(config).fingerprint() == take_snapshot(config).fingerprint()
    config.features["discovery"] = True
    first = take_snapshot(config).payload["domains"]
    assert [d["name"] for d in first] == ["a.example.test", "b.example.test"]
    conf.write_text("http { server { listen 80; server_name a.example.test; } }\n")
    assert [d["name"] for d in take_snapshot(config).payload["domains"]] == ["a.example.test"]


def test_log_paths_of_services_are_handed_to_the_tailer(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    code = f"import time; f=open({str(log_file)!r}, 'a'); print('ready', flush=True); time.sleep(60)"
    marker = f"ha-log-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        watch = [WatchSpec(name="worker", process=marker, log_paths=[str(tmp_path / "x.log")])]
        config = AgentConfig(nginx_configs=[], apache_configs=[], certificate_paths=[], watch=watch,
                             docker_socket=str(tmp_path / "docker.sock"),
                             features={"discovery": True, "certificates": False, "containers": False})
        snapshot = take_snapshot(config)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    worker = [s for s in snapshot.services if s.name == "worker"]
    assert len(worker) == 1 and worker[0].pid == proc.pid
    assert worker[0].log_paths == sorted([str(log_file), str(tmp_path / "x.log")])  # its open file + the spec's
    assert {str(log_file), str(tmp_path / "x.log")} <= set(snapshot.log_paths)
    assert snapshot.log_paths == sorted(set(snapshot.log_paths))
