"""One pass over the host's processes, kept as a small immutable table the service matchers share."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.processes")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    name: str
    exe: str  # empty when not permitted
    cmdline: str  # space-joined
    create_time: float
    username: str


class ProcessTable:
    def __init__(self, processes: dict[int, ProcessInfo]) -> None:
        self.by_pid = processes
        self.children: dict[int, list[int]] = {}
        for info in processes.values():
            self.children.setdefault(info.ppid, []).append(info.pid)
        for kids in self.children.values():
            kids.sort()

    @classmethod
    def scan(cls) -> ProcessTable:
        found: dict[int, ProcessInfo] = {}
        attrs = ["pid", "ppid", "name", "exe", "cmdline", "create_time", "username", "status"]
        try:
            for proc in psutil.process_iter(attrs, ad_value=None):
                info = proc.info
                if info.get("status") == psutil.STATUS_ZOMBIE or info.get("pid") is None:
                    continue
                found[info["pid"]] = ProcessInfo(
                    pid=info["pid"], ppid=info.get("ppid") or 0, name=info.get("name") or "",
                    exe=info.get("exe") or "", cmdline=" ".join(info.get("cmdline") or []),
                    create_time=float(info.get("create_time") or 0.0), username=info.get("username") or "")
        except (psutil.Error, OSError) as exc:
            warn_once(log, "cannot list processes: %s", exc)
        return cls(found)

    def main_process(self, pids: set[int]) -> int | None:
        """Of a service's processes, the oldest one whose parent is not itself one of them (the master)."""
        roots = [pid for pid in pids if self.by_pid[pid].ppid not in pids] or list(pids)
        if not roots:
            return None
        return min(roots, key=lambda pid: (self.by_pid[pid].create_time, pid))

    def family_root(self, pid: int, stop: set[int]) -> int:
        """The highest ancestor of ``pid`` carrying the same process name (pre-fork servers fork themselves),
        never climbing into ``stop`` (the agent itself, processes other services claimed)."""
        name = self.by_pid[pid].name
        seen = {pid}
        while True:
            parent = self.by_pid.get(self.by_pid[pid].ppid)
            if parent is None or parent.name != name or parent.pid in seen or parent.pid in stop:
                return pid
            pid = parent.pid
            seen.add(pid)


# Data directories hold engine files named *.log that are no text logs (MariaDB's ddl_recovery.log, Kafka segments).
_DATA_DIRS = ("/var/lib/", "/proc/", "/sys/", "/dev/")


def open_log_files(pid: int) -> list[str]:
    """The ``.log`` files a process holds open (empty when not permitted: other users' processes need root)."""
    try:
        files = psutil.Process(pid).open_files()
    except (psutil.Error, OSError) as exc:
        log.debug("cannot list open files of %d: %s", pid, exc)
        return []
    return sorted({f.path for f in files if f.path.endswith(".log") and not f.path.startswith(_DATA_DIRS)})

