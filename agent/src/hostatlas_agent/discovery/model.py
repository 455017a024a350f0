"""What discovery found, in the shapes the rest of the agent and the platform use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FoundService:
    """One service on the host. ``process_pattern`` is a regex searched in a process name or its space-joined
    command line (the crash watcher uses it to find the process again); None when only a unit names it."""

    name: str
    status: str = "running"
    version: str | None = None
    unit: str | None = None
    pid: int | None = None
    ports: list[int] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)
    process_pattern: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "status": self.status, "unit": self.unit,
                "pid": self.pid, "ports": sorted(set(self.ports)), "log_paths": sorted(set(self.log_paths))}


@dataclass
class VirtualHost:
    """A server block (nginx) or <VirtualHost> (Apache). ``ssl_endpoints`` are the (address, port) pairs where it
    speaks TLS; the address is where a local handshake should go (127.0.0.1 for wildcard listens)."""

    source: str
    config_file: str
    server_names: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    ssl_endpoints: list[tuple[str, int]] = field(default_factory=list)
    certificate_path: str | None = None
    log_paths: list[str] = field(default_factory=list)

    @property
    def is_https(self) -> bool:
        return bool(self.ssl_endpoints)
