"""The crash watcher against real processes: started, SIGKILLed, replaced. Only the clock is injected."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from hostatlas_agent import systemd
from hostatlas_agent.config import AgentConfig, WatchSpec
from hostatlas_agent.crash import MAX_WATCHED, CrashWatcher, iso, kmsg_oom_line, oom_lines

Spawn = Callable[[str], "subprocess.Popen[bytes]"]


@dataclass
class Found:
    """Shaped like discovery's FoundService."""

    name: str
    pid: int | None
    process_pattern: str | None
    log_paths: list[str] = field(default_factory=list)
    unit: str | None = None
    status: str = "running"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def read_tail(path: str, lines: int) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()[-lines:]


def metrics() -> dict[str, float]:
    return {"cpu.percent": 12.5, "mem.used_percent": 71.2}


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[subprocess.Popen[bytes]] = []

    def start(marker: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def marker() -> str:
    return f"hostatlas-crash-test-{uuid.uuid4().hex}"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "service.log"
    path.write_text("".join(f"line {i}\n" for i in range(80)), encoding="utf-8")
    return path


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def test_crash_follow_up_and_recovery(spawn: Spawn, marker: str, log_file: Path) -> None:
    clock = Clock()
    watcher = CrashWatcher(AgentConfig(crash_followup_interval=300), read_tail, metrics, clock)
    first = spawn(marker)
    watcher.update([Found("web", first.pid, re.escape(marker), [str(log_file)])])
    assert watcher.check() == []

    kill(first)
    clock.now += 5
    [report] = watcher.check()
    assert report["key"] == "web-down" and report["service"] == "web" and report["title"] == "web stopped"
    assert report["severity"] == "critical" and report["resolved"] is False
    assert report["detected_at"] == iso(clock.now) and report["detected_at"].endswith("Z")
    assert report["logs"] == [f"line {i}" for i in range(30, 80)]
    assert report["metrics"] == metrics()
    state = report["state"]
    assert set(state["load"]) == {"1", "5", "15"}
    assert 0 <= state["memory_used_percent"] <= 100 and 0 <= state["disk_used_percent"] <= 100
    assert "swap_used_percent" in state and isinstance(state["oom"], list)
    assert state["process"]["pid"] == first.pid and marker in state["process"]["cmdline"]
    assert len(json.dumps(state)) <= 64 * 1024

    # Discovery no longer sees it: it stays watched until it is back.
    watcher.update([])
    clock.now += 100
    assert watcher.check() == []
    clock.now += 200
    [follow_up] = watcher.check()
    assert follow_up["key"] == "web-down" and follow_up["resolved"] is False
    assert follow_up["detected_at"] == iso(clock.now) and follow_up["logs"][-1] == "line 79"
    clock.now += 10
    assert watcher.check() == []

    second = spawn(marker)
    clock.now += 5
    [back] = watcher.check()
    assert back["key"] == "web-down" and back["service"] == "web" and back["resolved"] is True
    assert back["detected_at"] == iso(clock.now) and back["state"]["process"]["pid"] == second.pid
    assert watcher.check() == []

    # Re-armed on the new process: its death is a new report.
    kill(second)
    clock.now += 5
    [again] = watcher.check()
    assert again["resolved"] is False and again["state"]["process"]["pid"] == second.pid


def test_watch_spec_with_a_process_regex(spawn: Spawn, marker: str, log_file: Path) -> None:
    clock = Clock()
    config = AgentConfig(watch=[WatchSpec(name="worker", process=re.escape(marker), log_paths=[str(log_file)])])
    watcher = CrashWatcher(config, read_tail, metrics, clock)
    process = spawn(marker)
    # No update(): watches from the config work when discovery is off.
    assert watcher.check() == []
    assert watcher.watched["worker"].pid == process.pid

    kill(process)
    clock.now += 5
    [report] = watcher.check()
    assert report["key"] == "worker-down" and report["logs"][-1] == "line 79" and report["resolved"] is False
    watcher.update([])  # discovery's view does not drop a config watch
    replacement = spawn(marker)
    clock.now += 5
    [back] = watcher.check()
    assert back["resolved"] is True and back["state"]["process"]["pid"] == replacement.pid


def test_spec_not_running_yet_is_not_a_crash(spawn: Spawn, marker: str) -> None:
    clock = Clock()
    config = AgentConfig(watch=[WatchSpec(name="late", process=re.escape(marker))])
    watcher = CrashWatcher(config, read_tail, metrics, clock)
    watcher.update([])
    assert watcher.check() == [] and watcher.watched["late"].state == "pending"
    spawn(marker)
    clock.now += 61  # looked for again once a minute
    assert watcher.check() == [] and watcher.watched["late"].state == "up"


def test_recycled_pid_is_not_the_same_process(spawn: Spawn, marker: str) -> None:
    clock = Clock()
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, clock)
    process = spawn(marker)
    watcher.update([Found("db", process.pid, f"no-such-process-{uuid.uuid4().hex}")])
    assert watcher.check() == []
    # The pid we remember now belongs to a process started an hour after ours: ours is gone.
    watcher.watched["db"].create_time = psutil.Process(process.pid).create_time() - 3600
    clock.now += 5
    [report] = watcher.check()
    assert report["key"] == "db-down" and report["state"]["process"]["pid"] == process.pid


def test_zombie_counts_as_dead(spawn: Spawn, marker: str) -> None:
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("zombie", process.pid, re.escape(marker))])
    process.kill()  # not reaped yet: a zombie
    deadline = time.monotonic() + 5
    while psutil.Process(process.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r["key"] for r in watcher.check()] == ["zombie-down"]
    process.wait()


def test_replacement_before_the_check_is_not_a_crash(spawn: Spawn, marker: str) -> None:
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    first = spawn(marker)
    watcher.update([Found("api", first.pid, re.escape(marker))])
    kill(first)
    second = spawn(marker)
    assert watcher.check() == []
    assert watcher.watched["api"].pid == second.pid


def test_crash_seen_first_by_discovery_is_still_reported(spawn: Spawn, marker: str) -> None:
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("cache", process.pid, re.escape(marker))])
    kill(process)
    watcher.update([Found("cache", None, re.escape(marker), status="stopped")])
    assert [r["key"] for r in watcher.check()] == ["cache-down"]


def test_service_that_stops_being_discovered_while_up_is_dropped(spawn: Spawn, marker: str) -> None:
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("gone", process.pid, re.escape(marker))])
    watcher.update([])
    assert "gone" not in watcher.watched


def test_feature_off_reports_nothing(spawn: Spawn, marker: str) -> None:
    config = AgentConfig()
    watcher = CrashWatcher(config, read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("quiet", process.pid, re.escape(marker))])
    config.features["crash_reports"] = False
    kill(process)
    assert watcher.check() == []
    config.features["crash_reports"] = True
    assert [r["key"] for r in watcher.check()] == ["quiet-down"]


def test_logs_are_bounded_and_clean(spawn: Spawn, marker: str, tmp_path: Path) -> None:
    paths = []
    for n in range(5):
        path = tmp_path / f"{n}.log"
        path.write_text("".join(f"{n}:{i}\n" for i in range(60)), encoding="utf-8")
        paths.append(str(path))
    (tmp_path / "0.log").write_text("nul\x00here\n" + "x" * 20_000 + "\n", encoding="utf-8")
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("big", process.pid, re.escape(marker), paths)])
    kill(process)
    [report] = watcher.check()
    logs: list[str] = report["logs"]
    assert len(logs) == 200
    assert logs[:3] == [f"==> {paths[0]} <==", "nulhere", "x" * 8192]
    # 3 lines for the short file, 51 for each of the next three, then 44 are left: a header and 43 lines.
    assert logs[-44:] == [f"==> {paths[4]} <=="] + [f"4:{i}" for i in range(17, 60)]
    assert all(len(line.encode()) <= 8192 for line in logs)


def test_broken_collaborators_never_raise(spawn: Spawn, marker: str) -> None:
    def bad_tail(path: str, lines: int) -> list[str]:
        raise OSError("unreadable")

    def bad_metrics() -> dict[str, float]:
        raise RuntimeError("no metrics")

    config = AgentConfig(watch=[WatchSpec(name="bad-regex", process="(unclosed")])
    watcher = CrashWatcher(config, bad_tail, bad_metrics, Clock())
    process = spawn(marker)
    watcher.update([Found("svc", process.pid, re.escape(marker), ["/nonexistent/x.log"]),
                    Found("weird", process.pid, "[bad")])
    kill(process)
    reports = {r["key"]: r for r in watcher.check()}
    assert reports["svc-down"]["logs"] == [] and reports["svc-down"]["metrics"] == {}


def test_watches_are_bounded() -> None:
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    watcher.update([Found(f"s{i}", None, None) for i in range(MAX_WATCHED + 100)])
    assert len(watcher.watched) == MAX_WATCHED
    assert watcher.check() == []


def test_long_names_fit_the_platform_bounds(spawn: Spawn, marker: str) -> None:
    name = "n" * 300
    watcher = CrashWatcher(AgentConfig(), read_tail, metrics, Clock())
    process = spawn(marker)
    watcher.update([Found(name, process.pid, re.escape(marker))])
    kill(process)
    [report] = watcher.check()
    assert len(report["key"]) <= 128 and len(report["service"]) <= 255 and len(report["title"]) <= 200


def test_oom_lines_from_kernel_records() -> None:
    boot = 1_700_000_000.0
    oom = "6,1234,5000000,-;Out of memory: Killed process 4242 (java) total-vm:1024kB\n SUBSYSTEM=x\n"
    assert kmsg_oom_line(oom, boot, boot) == f"[{iso(boot + 5)}] Out of memory: Killed process 4242 (java) " \
                                            "total-vm:1024kB"
    assert kmsg_oom_line("4,1235,6000000,-;oom-kill:constraint=CONSTRAINT_NONE", boot, boot) is not None
    assert kmsg_oom_line("6,1236,7000000,-;EXT4-fs (vda): mounted", boot, boot) is None
    assert kmsg_oom_line(oom, boot, boot + 3600) is None  # from before the window


def test_oom_lines_read_what_this_host_allows() -> None:
    """Whatever the privileges (kmsg, kern.log, dmesg or none), a bounded list comes back at once."""
    started = time.monotonic()
    lines = oom_lines(time.time(), read_tail)
    assert isinstance(lines, list) and len(lines) <= 50 and all(len(line) <= 512 for line in lines)
    assert time.monotonic() - started < 5


@pytest.mark.skipif(not systemd.systemd_running(), reason="systemd is not running here")
def test_failed_unit_and_deliberate_stop(marker: str) -> None:
    unit = f"{marker}.service"
    clock = Clock()
    config = AgentConfig(watch=[WatchSpec(name="unit-test", unit=unit)])
    watcher = CrashWatcher(config, read_tail, metrics, clock)

    def start() -> list[dict[str, Any]]:
        subprocess.run(["systemd-run", f"--unit={unit}", sys.executable, "-c", "import time; time.sleep(600)"],
                       check=True, capture_output=True)
        clock.now += 61
        reports = watcher.check()
        assert watcher.watched["unit-test"].state == "up"
        return reports

    try:
        assert start() == []
        pid = watcher.watched["unit-test"].pid
        assert pid is not None
        os.kill(pid, 9)
        deadline = time.monotonic() + 5
        while systemd.query_units([unit])[unit].state != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
        clock.now += 5
        [report] = watcher.check()
        assert report["title"] == "unit-test failed" and report["state"]["unit"] == "failed"
        subprocess.run(["systemctl", "reset-failed", unit], check=False, capture_output=True)
        [back] = start()
        assert back["resolved"] is True
        subprocess.run(["systemctl", "stop", unit], check=True)
        clock.now += 5
        assert watcher.check() == [] and watcher.watched["unit-test"].state == "stopped"
    finally:
        subprocess.run(["systemctl", "stop", unit], check=False, capture_output=True)
        subprocess.run(["systemctl", "reset-failed", unit], check=False, capture_output=True)
