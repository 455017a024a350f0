"""Services: the known ones (by process, or by systemd unit when stopped), the ones the config asks to watch,
and any other process listening on a TCP port."""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from re import Pattern

from ..config import WatchSpec
from .known import KNOWN_SERVICES, KnownService, match_known
from .model import FoundService
from .once import warn_once
from .ports import listening_ports
from .processes import ProcessTable, open_log_files
from .units import UnitState, systemd_units, unit_of_pid
from .versions import VersionProbe

log = logging.getLogger("hostatlas_agent.discovery.services")

MAX_SERVICES = 2000
MAX_LOGS_PER_PATTERN = 20


def discover_services(
    watch: Sequence[WatchSpec],
    versions: VersionProbe,
    config_logs: Mapping[str, Sequence[str]] | None = None,
    table: ProcessTable | None = None,
    units: Mapping[str, UnitState] | None = None,
) -> list[FoundService]:
    """Every service found, sorted by name. ``config_logs`` adds log files named by a service's own config
    (nginx, Apache) to that service."""
    table = table if table is not None else ProcessTable.scan()
    units = units if units is not None else systemd_units()
    ports = listening_ports()
    own = os.getpid()
    found: dict[str, FoundService] = {}
    claimed: set[int] = set()

    groups: dict[str, set[int]] = {}
    for info in table.by_pid.values():
        known = match_known(info.name, info.cmdline) if info.pid != own else None
        if known is not None:
            groups.setdefault(known.name, set()).add(info.pid)
    matched = {pid for pids in groups.values() for pid in pids}
    for known in KNOWN_SERVICES:
        pids = groups.get(known.name)
        if pids:
            service = _running(known.name, pids, table, ports, matched, claimed)
            service.unit = unit_of_pid(service.pid or 0) or _best_unit(known.units, units, only_running=True)
            service.process_pattern = known.process_pattern
            service.version = _version(known, table, service.pid, versions)
            service.log_paths += _existing(known.logs)
            found[known.name] = service
        else:
            stopped = _stopped_by_unit(known, units)
            if stopped is not None:
                found[known.name] = stopped

    for spec in watch:
        _add_watched(spec, table, ports, units, matched, claimed, found)

    _add_listeners(table, ports, claimed, found)

    for name, paths in (config_logs or {}).items():
        if name in found:
            found[name].log_paths += list(paths)
    services = sorted(found.values(), key=lambda s: s.name)
    for service in services:
        service.ports = sorted(set(service.ports))
        service.log_paths = sorted(set(service.log_paths))
    if len(services) > MAX_SERVICES:
        warn_once(log, "more than %d services found; reporting the first ones", MAX_SERVICES)
    return services[:MAX_SERVICES]


# The platform's own output holds an access-log line per agent request: tailing it (`hostatlas serve > x.log`,
# with the local agent) would send each batch's own echo back, a line every log poll, forever.
NO_OPEN_LOGS = frozenset({"hostatlas"})


def _running(name: str, pids: set[int], table: ProcessTable, ports: Mapping[int, set[int]], matched: set[int],
             claimed: set[int]) -> FoundService:
    """A running service from its processes: the master's pid, the ports of all of them and of the master's
    direct children (a dockerd's docker-proxy), its open .log files."""
    main = table.main_process(pids)
    assert main is not None  # pids is never empty here
    members = set(pids)
    members.update(kid for kid in table.children.get(main, []) if kid not in matched and kid != os.getpid())
    claimed.update(members)
    service = FoundService(name=name, status="running", pid=main)
    for pid in members:
        service.ports.extend(ports.get(pid, ()))
    if name not in NO_OPEN_LOGS:
        service.log_paths.extend(open_log_files(main))
    return service


def _version(known: KnownService, table: ProcessTable, pid: int | None, probe: VersionProbe) -> str | None:
    if known.version_args is None or pid is None:
        return None
    info = table.by_pid[pid]
    exe = info.exe or shutil.which(info.name) or ""
    if not exe or exe.endswith(" (deleted)"):
        return None
    return probe.version(exe, known.version_args)


def _best_unit(patterns: Iterable[str], units: Mapping[str, UnitState], only_running: bool) -> str | None:
    """The unit among those matching ``patterns`` that says most: a running one, then a failed one."""
    candidates = [u for name, u in units.items() if u.load == "loaded" and
                  any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)]
    if only_running:
        candidates = [u for u in candidates if u.status == "running"]
    rank = {"running": 0, "failed": 1, "stopped": 2}
    candidates.sort(key=lambda u: (rank[u.status], u.name))
    return candidates[0].name if candidates else None


def _stopped_by_unit(known: KnownService, units: Mapping[str, UnitState]) -> FoundService | None:
    unit = _best_unit(known.units, units, only_running=False)
    if unit is None:
        return None
    return FoundService(name=known.name, status=units[unit].status, unit=unit,
                        log_paths=_existing(known.logs), process_pattern=known.process_pattern)


def _add_watched(spec: WatchSpec, table: ProcessTable, ports: Mapping[int, set[int]],
                 units: Mapping[str, UnitState], matched: set[int], claimed: set[int],
                 found: dict[str, FoundService]) -> None:
    pattern = _compile(spec)
    unit_name = spec.unit if not spec.unit or "." in spec.unit else f"{spec.unit}.service"
    own = os.getpid()
    pids: set[int] = set()
    if pattern is not None:
        pids = {info.pid for info in table.by_pid.values() if info.pid != own
                and (pattern.search(info.name) or pattern.search(info.cmdline))}
    elif unit_name:
        pids = {info.pid for info in table.by_pid.values() if info.pid != own and unit_of_pid(info.pid) == unit_name}
    if pids:
        service = _running(spec.name, pids, table, ports, matched, claimed)
        service.unit = unit_name or unit_of_pid(service.pid or 0)
    else:
        state = units.get(unit_name) if unit_name else None
        service = FoundService(name=spec.name, status=state.status if state else "stopped", unit=unit_name)
    service.process_pattern = spec.process
    service.log_paths += list(spec.log_paths)
    existing = found.get(spec.name)
    if existing is None:
        found[spec.name] = service
    else:  # the config adds to a service that is also known: keep the known facts, add what it names
        existing.log_paths += service.log_paths
        existing.unit = existing.unit or service.unit
        existing.process_pattern = existing.process_pattern or service.process_pattern


def _compile(spec: WatchSpec) -> Pattern[str] | None:
    if not spec.process:
        return None
    try:
        return re.compile(spec.process)
    except re.error as exc:
        warn_once(log, "watch %r: invalid process regex %r: %s", spec.name, spec.process, exc)
        return None


def _add_listeners(table: ProcessTable, ports: Mapping[int, set[int]], claimed: set[int],
                   found: dict[str, FoundService]) -> None:
    """Processes listening on TCP that nothing above claimed, one service per process family. Nothing is ever
    run for them: their names come from the process table alone."""
    own = os.getpid()
    stop = claimed | {own}
    families: dict[str, dict[int, set[int]]] = {}  # name -> family root pid -> ports
    for pid, pid_ports in ports.items():
        if pid in claimed or pid == own or pid not in table.by_pid:
            continue
        info = table.by_pid[pid]
        root = table.family_root(pid, stop=stop)
        families.setdefault(info.name or str(pid), {}).setdefault(root, set()).update(pid_ports)
    for name, roots in sorted(families.items()):
        for root, root_ports in sorted(roots.items()):
            label = name if len(roots) == 1 else f"{name}:{min(root_ports)}"
            if label in found:
                label = f"{label}:{root}"
            info = table.by_pid[root]
            pattern = f"^{re.escape(name)}$" if len(roots) == 1 else re.escape(info.cmdline or name)
            found[label] = FoundService(
                name=label, status="running", unit=unit_of_pid(root), pid=root, ports=sorted(root_ports),
                log_paths=open_log_files(root), process_pattern=pattern)


def _existing(patterns: Iterable[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        try:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        except OSError:
            continue
        paths.extend(path for path in matches[:MAX_LOGS_PER_PATTERN] if os.path.isfile(path))
    return paths
