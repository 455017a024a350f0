"""Facts about this host: its stable machine id and what ``register`` sends."""

from __future__ import annotations

import platform
import socket
import uuid
from pathlib import Path
from typing import Any

import psutil

from hostatlas_agent import __version__

MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_id(state_dir: Path | None = None) -> str:
    """The OS's machine id, so re-enrolling (or a reinstalled agent) is the same server; else one the agent
    made up once and kept in its state directory."""
    for candidate in MACHINE_ID_FILES:
        try:
            value = candidate.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    if state_dir is None:
        return str(uuid.uuid4())
    kept = Path(state_dir) / "machine-id"
    try:
        return kept.read_text(encoding="ascii").strip()
    except OSError:
        value = str(uuid.uuid4())
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(value + "\n", encoding="ascii")
        return value


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def uptime_s() -> int:
    import time

    return max(0, int(time.time() - psutil.boot_time()))


def primary_ip() -> str | None:
    """The address the default route leaves from (no packet is sent: UDP connect only picks a route)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            address = probe.getsockname()[0]
            return str(address)
    except OSError:
        return None


def os_name() -> str:
    try:
        release = platform.freedesktop_os_release()  # type: ignore[attr-defined,unused-ignore]
        return str(release.get("PRETTY_NAME") or release.get("NAME"))
    except (OSError, AttributeError):
        return f"{platform.system()} {platform.release()}"


def facts(state_dir: Path | None = None) -> dict[str, Any]:
    return {
        "machine_id": machine_id(state_dir),
        "hostname": socket.gethostname() or platform.node() or "unknown",
        "ip_address": primary_ip(),
        "os": os_name(),
        "kernel": platform.release(),
        "cpu_cores": psutil.cpu_count() or 1,
        "ram_total_mb": psutil.virtual_memory().total // (1024 * 1024),
        "agent_version": __version__,
    }
