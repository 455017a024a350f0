"""The certificate a local TLS server actually serves for a name: what clients get, which differs from the file
on disk when a renewed certificate was never reloaded."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Callable

log = logging.getLogger("hostatlas_agent.discovery.served")

TIMEOUT_S = 3.0
CACHE_TTL_S = 600.0
MAX_HANDSHAKES = 200  # per snapshot: cached answers do not count

_Key = tuple[str, int, str]


class ServedCertificateProbe:
    """Handshakes with SNI, never verifying (an expired or mismatched certificate is exactly what we want to see),
    and remembers each answer, failures included, for ``ttl`` seconds."""

    def __init__(self, ttl: float = CACHE_TTL_S, timeout: float = TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[_Key, tuple[float, bytes | None]] = {}
        self._lock = threading.Lock()
        self._budget = MAX_HANDSHAKES
        self.handshakes = 0

    def start_snapshot(self) -> None:
        """Resets the per-snapshot handshake budget and forgets expired answers."""
        now = self._clock()
        with self._lock:
            self._budget = MAX_HANDSHAKES
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self._ttl}

    def served(self, address: str, port: int, server_name: str) -> bytes | None:
        """The DER certificate served for ``server_name`` (CertificateParser.ders reads it); None if none."""
        key = (address, port, server_name)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
            if self._budget <= 0:
                return None
            self._budget -= 1
        der = self._handshake(address, port, server_name)
        with self._lock:
            self._cache[key] = (now, der)
        return der

    def _handshake(self, address: str, port: int, server_name: str) -> bytes | None:
        self.handshakes += 1
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((address, port), timeout=self._timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; ValueError: a name SNI refuses
            log.debug("TLS handshake with %s:%d for %s failed: %s", address, port, server_name, exc)
            return None
        return der or None
