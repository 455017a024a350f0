"""What the nginx and Apache readers share: their result, and the small rules both apply."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .model import VirtualHost
from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.webconfig")

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_WILDCARD_ADDRESSES = ("", "*", "0.0.0.0", "::", "_default_")


@dataclass
class WebConfig:
    vhosts: list[VirtualHost] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)  # every log file the server's config names

    def extend(self, other: WebConfig) -> None:
        self.vhosts.extend(other.vhosts)
        self.log_paths.extend(other.log_paths)


def read_config_file(path: str) -> str | None:
    """A config file's text, or None (logged) when it is unreadable or implausibly large."""
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            warn_once(log, "skipping %s: larger than %d bytes", path, MAX_CONFIG_BYTES)
            return None
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None


def handshake_address(listen_host: str) -> str:
    """Where a local TLS handshake reaches a server listening on ``listen_host``."""
    return "127.0.0.1" if listen_host in _WILDCARD_ADDRESSES else listen_host


def is_loggable_path(path: str) -> bool:
    """A file path the tailer can follow: no variables left in it, not a device or a pipe."""
    return "$" not in path and not path.startswith(("/dev/", "/proc/")) and "|" not in path
