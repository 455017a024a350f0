"""Keep only the latest value per key until someone drains it.

Bookkeeping that changes on every request (a key's last use, an agent's last check-in) goes through
here, so the database sees one write per key per flush instead of one per request.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LatestValues(Generic[K, V]):
    def __init__(self) -> None:
        self._values: dict[K, V] = {}
        self._lock = threading.Lock()

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = value

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._values.get(key)

    def drain(self) -> dict[K, V]:
        with self._lock:
            values, self._values = self._values, {}
        return values

    def drain_key(self, key: K) -> V | None:
        with self._lock:
            return self._values.pop(key, None)

    def restore(self, values: dict[K, V]) -> None:
        """Put back what a failed flush drained, without overwriting anything newer."""
        with self._lock:
            for key, value in values.items():
                self._values.setdefault(key, value)

    def __len__(self) -> int:
        return len(self._values)
