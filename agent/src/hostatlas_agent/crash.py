"""Crash reports: notice that a watched service went down, say so once with what the host looked like at
that moment (its last log lines, metrics, load, memory, disk, OOM-killer lines), follow up while it stays
down, and say when it is back. The bodies are ``POST /agent/incidents`` reports; the runner sends them.

Watched: what discovery last found running (``update``) and the config's ``watch`` specs. A check is meant
to run every few seconds, so it is cheap while everything is up: one ``psutil.Process`` per service. The
expensive look-ups (one scan of all processes, one ``systemctl show`` for all units concerned) happen only
when something looks down."""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import psutil

from hostatlas_agent import systemd

log = logging.getLogger("hostatlas_agent.crash")

MAX_WATCHED = 500
LOG_LINES_PER_FILE = 50
LOG_LINES_TOTAL = 200
LOG_LINE_BYTES = 8192
LOG_FILES_MAX = 20
# Watches not known to be running (a spec never seen yet, a unit stopped on purpose) are looked for this
# often even when nothing is down, so a config-only watch works when discovery is off.
SEARCH_INTERVAL = 60.0
# Two readings of one process's start time can differ a little when the wall clock was stepped (psutil
# derives it from the boot time). A recycled pid is a different process started much later.
CREATE_TIME_TOLERANCE = 1.0

ProcessRow = tuple[int, float, str, str]  # pid, create_time, name, cmdline
STATE_MAX_BYTES = 64 * 1024  # the platform's bound for `state`
OOM_LINES = 50
OOM_LINE_CHARS = 512
OOM_WINDOW = 3600.0  # kernel lines from longer before the crash say nothing about it
OOM_PATTERN = re.compile(r"Out of memory|oom-kill|Killed process", re.IGNORECASE)
KMSG_MAX_RECORDS = 200_000  # more than any kernel ring buffer holds: the read loop always ends


class ServiceLike(Protocol):
    """What the watcher needs of discovery's FoundService."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def log_paths(self) -> Sequence[str]: ...
    @property
    def process_pattern(self) -> str | None: ...


class WatchSpecLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def process(self) -> str | None: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def log_paths(self) -> Sequence[str]: ...


class ConfigLike(Protocol):
    @property
    def crash_followup_interval(self) -> float: ...
    @property
    def watch(self) -> Sequence[WatchSpecLike]: ...
    @property
    def features(self) -> Mapping[str, bool]: ...


def _compile(pattern: str | None, name: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        log.warning("watch %s: bad process pattern %r: %s", name, pattern, exc)
        return None


@dataclass
class Watch:
    """One watched service. ``state``: ``pending`` (not seen running yet), ``up``, ``down`` (reported),
    ``stopped`` (stopped on purpose; not watched until it runs again); ``lost`` only during a check."""

    name: str
    state: str = "pending"
    pid: int | None = None
    create_time: float | None = None
    process_name: str | None = None
    cmdline: str = ""
    hint_pid: int | None = None  # what discovery saw, tried first when looking for the service
    incident_open: bool = False
    failed: bool = False
    down_since: float | None = None
    last_report: float = 0.0
    unit_info: dict[str, Any] = field(default_factory=dict)
    from_discovery: bool = False
    from_spec: bool = False
    found_unit: str | None = None
    found_pattern: re.Pattern[str] | None = None
    found_logs: list[str] = field(default_factory=list)
    spec_unit: str | None = None
    spec_pattern: re.Pattern[str] | None = None
    spec_logs: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str | None:
        return self.spec_unit or self.found_unit

    @property
    def pattern(self) -> re.Pattern[str] | None:
        return self.spec_pattern or self.found_pattern

    @property
    def log_paths(self) -> list[str]:
        return list(dict.fromkeys(self.spec_logs + self.found_logs))

    def matches(self, name: str, cmdline: str) -> bool:
        pattern = self.pattern
        if pattern is not None:
            return bool(pattern.search(name) or pattern.search(cmdline))
        return self.process_name is not None and name == self.process_name


def _process_alive(pid: int | None, create_time: float | None) -> bool:
    """The process we armed on still runs: same pid, same start time (not a recycled pid), not a zombie."""
    if pid is None or create_time is None:
        return False
    try:
        process = psutil.Process(pid)
        return (abs(process.create_time() - create_time) < CREATE_TIME_TOLERANCE
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _scan_processes() -> list[ProcessRow]:
    """Every live process, once: the only full scan a check may make."""
    rows: list[ProcessRow] = []
    own = os.getpid()
    for process in psutil.process_iter(["pid", "name", "cmdline", "create_time", "status"]):
        info = process.info
        if info["pid"] == own or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        rows.append((info["pid"], info["create_time"] or 0.0, info["name"] or "", " ".join(info["cmdline"] or [])))
    return rows


class CrashWatcher:
    """``update(services)`` after each discovery, ``check(now)`` every ``crash_interval``; never raises."""

    def __init__(self, config: ConfigLike, tail: Callable[[str, int], list[str]],
                 metrics: Callable[[], Mapping[str, float]], clock: Callable[[], float] = time.time) -> None:
        self.config = config  # the runner may swap in a reloaded config
        self._tail = tail
        self._metrics = metrics
        self._clock = clock
        self.watched: dict[str, Watch] = {}
        self._last_search = -math.inf
        self._full_warned = False

    # --- what to watch ---------------------------------------------------------------------------------

    def _enabled(self) -> bool:
        features = getattr(self.config, "features", None) or {}
        return bool(features.get("crash_reports", True))

    def _add(self, name: str) -> Watch | None:
        watch = self.watched.get(name)
        if watch is None:
            if len(self.watched) >= MAX_WATCHED:
                if not self._full_warned:
                    log.warning("watching %d services already; not watching %s (and others)", MAX_WATCHED, name)
                    self._full_warned = True
                return None
            watch = self.watched[name] = Watch(name)
        return watch

    def _sync_specs(self) -> None:
        wanted = set()
        for spec in list(getattr(self.config, "watch", None) or []):
            watch = self._add(spec.name)
            if watch is None:
                continue
            wanted.add(spec.name)
            watch.from_spec = True
            watch.spec_unit = spec.unit
            watch.spec_pattern = _compile(spec.process, spec.name)
            watch.spec_logs = [str(p) for p in spec.log_paths]
        for watch in self.watched.values():
            if watch.name not in wanted:
                watch.from_spec = False

    def update(self, services: Sequence[ServiceLike]) -> None:
        """Discovery's latest view: the services it found running become (or stay) watched."""
        try:
            self._update(services)
        except Exception:
            log.exception("crash watcher update failed")

    def _update(self, services: Sequence[ServiceLike]) -> None:
        running: dict[str, ServiceLike] = {}
        for service in services:
            if str(getattr(service, "status", "running") or "running").lower() == "running":
                running[service.name] = service
        for name, service in running.items():
            watch = self._add(name)
            if watch is None:
                continue
            watch.from_discovery = True
            watch.found_unit = service.unit
            watch.found_pattern = _compile(service.process_pattern, name)
            watch.found_logs = [str(p) for p in service.log_paths]
            if watch.state == "up" and not _process_alive(watch.pid, watch.create_time) and service.pid:
                self._arm(watch, service.pid)  # restarted between two checks: running, so nothing to report
            elif watch.state != "up":
                watch.hint_pid = service.pid
                if not watch.incident_open and watch.hint_pid:
                    self._arm(watch, watch.hint_pid)  # else the next check arms it and sends `resolved`
        for watch in list(self.watched.values()):
            if watch.name in running:
                continue
            watch.from_discovery = False
            dead = watch.state == "up" and not _process_alive(watch.pid, watch.create_time)
            if not (watch.from_spec or watch.incident_open or dead):
                del self.watched[watch.name]  # a crash discovery saw first still gets its report
        self._sync_specs()
        # Only those without an open incident: finding the others must send `resolved`, which check() does.
        idle = [w for w in self.watched.values() if w.state in ("pending", "stopped") and not w.incident_open]
        if self._enabled() and idle:
            self._search(idle, self._clock())

    def _arm(self, watch: Watch, pid: int) -> bool:
        """Watch this process from now on. False when it is not (or no longer) running."""
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                if process.status() == psutil.STATUS_ZOMBIE:
                    return False
                create_time, name = process.create_time(), process.name()
                try:
                    cmdline = " ".join(process.cmdline())
                except psutil.AccessDenied:
                    cmdline = ""
        except psutil.Error:
            return False
        watch.pid, watch.create_time, watch.process_name, watch.cmdline = pid, create_time, name, cmdline[:1024]
        watch.state, watch.hint_pid, watch.failed, watch.down_since, watch.unit_info = "up", None, False, None, {}
        return True

    # --- the check -------------------------------------------------------------------------------------

    def check(self, now: float | None = None) -> list[dict[str, Any]]:
        """Report bodies for what went down, is still down (a follow-up), or is back."""
        if not self._enabled():
            return []
        when = self._clock() if now is None else now
        try:
            return self._check(when)
        except Exception:
            log.exception("crash check failed")
            return []

    def _check(self, now: float) -> list[dict[str, Any]]:
        self._sync_specs()
        up = [w for w in self.watched.values() if w.state == "up"]
        lost = [w for w in up if w.pid is not None and not _process_alive(w.pid, w.create_time)]
        unit_only = [w for w in up if w.pid is None]  # a unit whose main pid systemd does not know: ask it
        down = [w for w in self.watched.values() if w.state == "down"]
        waiting = [w for w in self.watched.values() if w.state in ("pending", "stopped")]
        if not (lost or down) and now - self._last_search < SEARCH_INTERVAL:
            waiting = [w for w in waiting if w.hint_pid]
        suspects = lost + unit_only + down + waiting
        if not suspects:
            return []
        previous = {w.name: w.state for w in suspects}
        for watch in lost + unit_only:
            watch.state = "lost"  # until the search below finds it running again
        reports: list[dict[str, Any]] = []
        try:
            unit_states = self._search(suspects, now)
            for watch in suspects:
                try:
                    report = self._outcome(watch, previous[watch.name], unit_states.get(watch.name), now)
                except Exception:
                    log.exception("crash check of %s failed", watch.name)
                    continue
                if report is not None:
                    reports.append(report)
        finally:
            for watch in suspects:
                if watch.state == "lost":  # a failure above: look again next time
                    watch.state = previous[watch.name]
        for watch in list(self.watched.values()):
            if watch.state in ("pending", "stopped") and not (watch.from_discovery or watch.from_spec
                                                              or watch.incident_open):
                del self.watched[watch.name]
        return reports

    def _search(self, suspects: list[Watch], now: float) -> dict[str, systemd.UnitStatus]:
        """Arm every suspect found running (its hint, its unit's main pid, else a matching process). Returns
        what systemd said about the units of those still not found."""
        if any(w.state in ("pending", "stopped") for w in suspects):
            self._last_search = now
        missing: list[Watch] = []
        for watch in suspects:
            if not (watch.hint_pid and self._arm(watch, watch.hint_pid)):
                missing.append(watch)
        units: dict[str, systemd.UnitStatus] = {}
        with_unit = [w for w in missing if w.unit]
        if with_unit and systemd.systemd_running():
            answers = systemd.query_units(list(dict.fromkeys(str(w.unit) for w in with_unit)))
            for watch in with_unit:
                status = answers.get(str(watch.unit))
                if status is None:
                    continue
                units[watch.name] = status
                if status.state == "up" and not (status.main_pid and self._arm(watch, status.main_pid)):
                    watch.state, watch.pid, watch.create_time = "up", None, None  # up, main pid unknown
        # Units systemd answered for are settled by it; the rest are looked for among all processes.
        missing = [w for w in missing if w.state != "up" and w.name not in units]
        if missing:
            rows = _scan_processes()
            for watch in missing:
                matching = sorted((r for r in rows if watch.matches(r[2], r[3])), key=lambda r: r[1])
                for row in matching:  # the oldest first: the main process, not a worker
                    if self._arm(watch, row[0]):
                        break
        return units

    def _outcome(self, watch: Watch, before: str, unit: systemd.UnitStatus | None,
                 now: float) -> dict[str, Any] | None:
        if watch.state == "up":  # found running again
            if watch.incident_open:
                watch.incident_open = False
                return self._resolved_report(watch, now)
            return None
        if watch.state == "lost" and watch.pid is None and unit is None:
            watch.state = "up"  # a unit without a main pid, and systemd did not answer: nothing known
            return None
        if unit is not None:
            watch.unit_info = {"unit": unit.properties.get("ActiveState"), "unit_name": watch.unit,
                               "result": unit.properties.get("Result"),
                               "exit_status": _int_or_none(unit.properties.get("ExecMainStatus")),
                               "exit_code": unit.properties.get("ExecMainCode")}
            if unit.state == "stopped":  # `systemctl stop`: on purpose, not a crash
                watch.state = "stopped"
                return None
        if watch.state == "lost":
            watch.state, watch.incident_open, watch.down_since = "down", True, now
            watch.failed = unit is not None and unit.state == "failed"
            watch.last_report = now
            return self._down_report(watch, now)
        if before == "down" and now - watch.last_report >= float(self.config.crash_followup_interval):
            watch.last_report = now
            return self._down_report(watch, now)
        return None

    # --- report bodies ---------------------------------------------------------------------------------

    def _down_report(self, watch: Watch, now: float) -> dict[str, Any]:
        name = clean_text(watch.name, 192)
        return {"key": _key(watch.name), "service": clean_text(watch.name, 255),
                "title": f"{name} failed" if watch.failed else f"{name} stopped", "severity": "critical",
                "detected_at": iso(now), "logs": self._logs(watch), "metrics": self._metrics_snapshot(),
                "state": self._state(watch, now), "resolved": False}

    def _resolved_report(self, watch: Watch, now: float) -> dict[str, Any]:
        return {"key": _key(watch.name), "service": clean_text(watch.name, 255), "resolved": True,
                "detected_at": iso(now), "state": self._state(watch, now)}

    def _state(self, watch: Watch, now: float) -> dict[str, Any]:
        process: dict[str, Any] = {"pid": watch.pid, "name": watch.process_name, "cmdline": watch.cmdline}
        if watch.create_time:
            process["started_at"] = iso(watch.create_time)
        extra: dict[str, Any] = {"process": process, **watch.unit_info}
        if watch.down_since is not None:
            extra["down_since"] = iso(watch.down_since)
        return system_state(extra, now, self._tail)

    def _logs(self, watch: Watch) -> list[str]:
        paths: list[str] = []
        for pattern in watch.log_paths:
            paths.extend(sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern])
        paths = list(dict.fromkeys(paths))[:LOG_FILES_MAX]
        lines: list[str] = []
        for path in paths:
            room = LOG_LINES_TOTAL - len(lines) - (1 if len(paths) > 1 else 0)
            if room <= 0:
                break
            want = min(LOG_LINES_PER_FILE, room)
            try:
                got = list(self._tail(path, want))[-want:]
            except Exception as exc:
                log.warning("crash report for %s: cannot read %s: %s", watch.name, path, exc)
                continue
            if got and len(paths) > 1:
                lines.append(clean_text(f"==> {path} <==", LOG_LINE_BYTES))  # as `tail` marks several files
            lines.extend(clean_text(str(line).rstrip("\r\n"), LOG_LINE_BYTES) for line in got)
        return lines

    def _metrics_snapshot(self) -> dict[str, float]:
        try:
            raw = dict(self._metrics())
        except Exception as exc:
            log.warning("crash report: no metrics: %s", exc)
            return {}
        snapshot: dict[str, float] = {}
        for key, value in raw.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                snapshot[clean_text(str(key), 100)] = float(value)
            if len(snapshot) >= 300:  # ~40 KiB at most, under the platform's 64 KiB
                break
        return snapshot


def _key(name: str) -> str:
    return clean_text(name, 123) + "-down"  # the platform takes keys of up to 128 characters


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


# --- the host at the moment of a report --------------------------------------------------------------------

def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean_text(text: str, max_bytes: int) -> str:
    """Text the platform accepts: no NUL, no lone surrogate, at most ``max_bytes`` of UTF-8."""
    data = text.replace("\x00", "").encode("utf-8", "replace")[:max_bytes]
    return data.decode("utf-8", "ignore")


def system_state(extra: dict[str, Any], now: float, tail: Callable[[str, int], list[str]]) -> dict[str, Any]:
    """Load, memory, swap, disk of /, OOM-killer lines, plus ``extra``; each part skipped if unreadable."""
    state: dict[str, Any] = {}
    readers: list[tuple[str, Callable[[], Any]]] = [
        ("load", lambda: dict(zip(("1", "5", "15"), (round(x, 2) for x in os.getloadavg())))),
        ("memory_used_percent", lambda: psutil.virtual_memory().percent),
        ("swap_used_percent", lambda: psutil.swap_memory().percent),
        ("disk_used_percent", lambda: psutil.disk_usage("/").percent),
        ("oom", lambda: oom_lines(now, tail)),
    ]
    for key, read in readers:
        try:
            state[key] = read()
        except Exception as exc:
            log.warning("crash report: cannot read %s: %s", key, exc)
    state.update(extra)
    oom = state.get("oom") or []
    while len(json.dumps(state, default=str)) > STATE_MAX_BYTES and oom:
        oom.pop(0)
    if len(json.dumps(state, default=str)) > STATE_MAX_BYTES:
        state = {k: v for k, v in state.items() if k not in ("process", "oom")}
    return state


def oom_lines(now: float, tail: Callable[[str, int], list[str]]) -> list[str]:
    """The kernel's recent OOM-killer lines: from /dev/kmsg (needs privileges), else kern.log, else dmesg."""
    found = _kmsg_oom(now - OOM_WINDOW)
    if found is None and os.access("/var/log/kern.log", os.R_OK):
        found = [line for line in tail("/var/log/kern.log", 2000) if OOM_PATTERN.search(line)]
    if found is None:
        found = _dmesg_oom()
    return [clean_text(line, OOM_LINE_CHARS) for line in (found or [])[-OOM_LINES:]]


def _kmsg_oom(since: float) -> list[str] | None:
    """What /dev/kmsg holds, read without blocking (O_NONBLOCK: EAGAIN once the buffer is read). None when
    the device cannot be read at all."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    found: deque[str] = deque(maxlen=OOM_LINES)
    boot = psutil.boot_time()
    try:
        for index in range(KMSG_MAX_RECORDS):
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")  # one record per read
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue  # the record was overwritten while we read; the next read goes on
            except OSError:
                return None if index == 0 else list(found)
            line = kmsg_oom_line(record, boot, since)
            if line is not None:
                found.append(line)
    finally:
        os.close(fd)
    return list(found)


def kmsg_oom_line(record: str, boot: float, since: float) -> str | None:
    """One /dev/kmsg record (``priority,sequence,usec_since_boot,flags;text`` then `` KEY=value`` lines) as
    ``[ISO time] text`` when it is an OOM-killer line from ``since`` on, else None."""
    header, _, message = record.partition(";")
    message = message.split("\n", 1)[0]
    if not OOM_PATTERN.search(message):
        return None
    try:
        when = boot + int(header.split(",")[2]) / 1e6
    except (IndexError, ValueError):
        when = since  # no usable time: keep it, it is in the buffer
    return f"[{iso(when)}] {message}" if when >= since else None


def _dmesg_oom() -> list[str]:
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in done.stdout.splitlines() if OOM_PATTERN.search(line)] if done.returncode == 0 else []
