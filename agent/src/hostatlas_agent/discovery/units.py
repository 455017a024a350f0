"""systemd units: their states from ``systemctl list-units``, and the unit a process runs in from its cgroup."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.units")

TIMEOUT_S = 5.0
_CGROUP_UNIT_RE = re.compile(r"/([^/]+\.service)(?=/|$)")


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str  # loaded, not-found, masked...
    active: str  # active, inactive, failed, activating...
    sub: str  # running, exited, dead, failed...

    @property
    def status(self) -> str:
        """The service status this unit implies when no process of it is seen."""
        if self.active == "failed" or self.sub == "failed":
            return "failed"
        if self.active in ("active", "reloading", "activating") and self.sub not in ("exited", "dead"):
            return "running"
        return "stopped"


def parse_list_units(text: str) -> dict[str, UnitState]:
    """Parses ``systemctl list-units --type=service --all --no-legend --plain`` output."""
    units: dict[str, UnitState] = {}
    for line in text.splitlines():
        fields = line.split()
        # Failed or missing units may be flagged with a leading bullet, even in --plain mode.
        while fields and not fields[0][0].isalnum() and fields[0][0] not in "_-@":
            fields.pop(0)
        if len(fields) < 4 or not fields[0].endswith(".service"):
            continue
        units[fields[0]] = UnitState(fields[0], fields[1], fields[2], fields[3])
    return units


def systemd_units() -> dict[str, UnitState]:
    """The host's service units, or nothing when systemd is not running the host (containers, other inits)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return {}
    try:
        done = subprocess.run(
            [systemctl, "list-units", "--type=service", "--all", "--no-legend", "--plain", "--no-pager"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=TIMEOUT_S,
            check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        warn_once(log, "systemctl list-units failed: %s", exc)
        return {}
    return parse_list_units(done.stdout.decode("utf-8", "replace"))


def parse_cgroup(text: str) -> str | None:
    """The .service a /proc/<pid>/cgroup file places the process in; None outside one (or in a user manager)."""
    found: str | None = None
    for line in text.splitlines():
        for unit in _CGROUP_UNIT_RE.findall(line.split(":", 2)[-1]):
            found = unit
    if found is None or found.startswith("user@"):
        return None
    return found


def unit_of_pid(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return parse_cgroup(handle.read())
    except OSError:
        return None
