"""The agent's unit file, its install and uninstall into a temporary unit directory, and the reading of
``systemctl show`` output (from literal text: systemd does not run in every test environment)."""

from __future__ import annotations

import configparser
import grp
import os
import shlex
import stat
from pathlib import Path

import pytest

from hostatlas_agent import systemd
from hostatlas_agent.systemd import UNIT_NAME, install, parse_show, uninstall, unit_status, unit_text

EXE = "/usr/local/bin/hostatlas-agent"


def parse_unit(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # unit keys are case-sensitive
    parser.read_string(text)
    return parser


def test_unit_runs_the_agent_hardened_and_bounded() -> None:
    unit = parse_unit(unit_text(EXE, "/etc/hostatlas/agent.toml", "nobody"))
    service = unit["Service"]
    assert service["ExecStart"] == f"{EXE} run --config /etc/hostatlas/agent.toml"
    assert (service["Type"], service["Restart"], service["RestartSec"]) == ("simple", "always", "5")
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
                "ReadWritePaths": "/var/lib/hostatlas-agent", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
                "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
                "MemoryMax": "128M", "CPUQuota": "20%", "Nice": "10", "StateDirectory": "hostatlas-agent",
                "User": "nobody"}
    assert {key: service.get(key) for key in expected} == expected
    readers = [g for g in ("adm", "systemd-journal") if g in {entry.gr_name for entry in grp.getgrall()}]
    assert service.get("SupplementaryGroups", "").split() == readers
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_runs_as_root_without_the_account() -> None:
    text = unit_text(EXE, "/etc/hostatlas/agent.toml", "hostatlas-no-such-user")
    service = parse_unit(text)["Service"]
    assert "User" not in service and "SupplementaryGroups" not in service
    assert "runs as root" in text


def test_exec_start_quotes_what_systemd_would_split_or_expand() -> None:
    exe, config = "/opt/host atlas/bin/hostatlas-agent", "/etc/agent 100%.toml"
    service = parse_unit(unit_text(shlex.quote(exe), config, "root"))["Service"]  # a command line, in shell words
    assert shlex.split(service["ExecStart"]) == [exe, "run", "--config", config.replace("%", "%%")]
    assert "SupplementaryGroups" not in service  # root reads everything already


def install_here(tmp_path: Path) -> systemd.InstallResult:
    return install(unit_dir=tmp_path / "units", executable=EXE, config_path=tmp_path / "agent.toml",
                   create_user=False, run_systemctl=False, state_dir=tmp_path / "state")


def test_install_writes_the_unit_atomically_and_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "units").mkdir()
    unit_path = tmp_path / "units" / UNIT_NAME
    unit_path.write_text("[Service]\nExecStart=/bin/false\n", encoding="utf-8")  # an older, other unit
    result = install_here(tmp_path)
    assert result.ok and result.unit_path == unit_path
    assert stat.S_IMODE(unit_path.stat().st_mode) == 0o644
    assert unit_path.read_text(encoding="utf-8") == unit_text(EXE, str(tmp_path / "agent.toml"),
                                                              systemd.AGENT_USER)
    assert os.listdir(tmp_path / "units") == [UNIT_NAME]  # no temporary file left behind
    assert (tmp_path / "state").is_dir()
    assert result.to_run[:2] == ["systemctl daemon-reload", f"systemctl enable --now {UNIT_NAME}"]
    assert f"wrote {unit_path}" in result.report()


def test_install_again_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "units").mkdir()
    first = install_here(tmp_path)
    written = (tmp_path / "units" / UNIT_NAME).stat()
    again = install_here(tmp_path)
    assert first.ok and again.ok
    assert (tmp_path / "units" / UNIT_NAME).stat().st_mtime_ns == written.st_mtime_ns
    assert any("up to date" in line for line in again.done)
    assert os.listdir(tmp_path / "units") == [UNIT_NAME]


def test_install_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    result = install_here(tmp_path)  # tmp_path/units does not exist
    assert not result.ok and "writing" in result.errors[0]
    assert not (tmp_path / "units").exists()


def test_uninstall_removes_the_unit_and_keeps_the_state(tmp_path: Path) -> None:
    (tmp_path / "units").mkdir()
    install_here(tmp_path)
    (tmp_path / "state" / "credentials.json").write_text("{}", encoding="utf-8")
    result = uninstall(unit_dir=tmp_path / "units", run_systemctl=False, state_dir=tmp_path / "state")
    assert result.ok and not (tmp_path / "units" / UNIT_NAME).exists()
    assert (tmp_path / "state" / "credentials.json").exists()
    assert any(f"kept {tmp_path / 'state'}" in line for line in result.done)
    assert "systemctl daemon-reload" in result.to_run
    twice = uninstall(unit_dir=tmp_path / "units", run_systemctl=False, state_dir=tmp_path / "state")
    assert twice.ok and any("was not installed" in line for line in twice.done)


@pytest.mark.skipif(systemd.systemd_running(), reason="would talk to the real systemd")
def test_without_systemd_nothing_is_run_and_nothing_is_queried(tmp_path: Path) -> None:
    (tmp_path / "units").mkdir()
    result = install(unit_dir=tmp_path / "units", executable=EXE, config_path=tmp_path / "agent.toml",
                     create_user=False, run_systemctl=True, state_dir=tmp_path / "state")
    assert result.ok and f"systemctl enable --now {UNIT_NAME}" in result.to_run
    assert systemd.query_units(["nginx.service"]) == {}


SHOW = """\
LoadState=loaded
ActiveState=failed
SubState=failed
Result=exit-code
ExecMainCode=1
ExecMainStatus=1
MainPID=0

LoadState=loaded
ActiveState=inactive
SubState=dead
Result=success
ExecMainStatus=0
MainPID=0

LoadState=loaded
ActiveState=active
SubState=running
Result=success
MainPID=812

LoadState=loaded
ActiveState=activating
SubState=auto-restart
Result=signal
ExecMainCode=2
ExecMainStatus=9
MainPID=0

LoadState=not-found
ActiveState=inactive
SubState=dead
Result=success
MainPID=0
"""


def test_systemctl_show_blocks_and_what_they_mean() -> None:
    blocks = parse_show(SHOW)
    assert len(blocks) == 5 and blocks[0]["Result"] == "exit-code" and blocks[2]["MainPID"] == "812"
    states = [unit_status(block) for block in blocks]
    assert [s.state for s in states] == ["failed", "stopped", "up", "failed", "stopped"]
    assert [s.main_pid for s in states] == [None, None, 812, None, None]
    assert unit_status({"ActiveState": "activating", "SubState": "start", "Result": "success"}).state == "up"
    assert unit_status({"ActiveState": "inactive", "Result": "exit-code"}).state == "failed"
    assert unit_status({}).state == "down"
    assert parse_show("") == [] and parse_show("garbage\n\n\n") == []
