"""Which TCP ports each process listens on, as far as psutil may see (other users' sockets need root)."""

from __future__ import annotations

import logging

import psutil

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.ports")


def listening_ports() -> dict[int, set[int]]:
    """pid -> the TCP ports it listens on. Sockets shared by several processes (pre-fork workers) count for each."""
    found: dict[int, set[int]] = {}
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError) as exc:
        warn_once(log, "cannot list listening sockets (%s); services are reported without ports", exc)
        return found
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or conn.pid is None or not conn.laddr:
            continue
        found.setdefault(conn.pid, set()).add(conn.laddr.port)
    return found
