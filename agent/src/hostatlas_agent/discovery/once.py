"""Warnings that would repeat at every snapshot (a broken config, a silent daemon) are logged once; later
occurrences go to debug."""

from __future__ import annotations

import logging
import threading
from typing import Any

_seen: set[str] = set()
_lock = threading.Lock()
_MAX_KEYS = 1000


def warn_once(logger: logging.Logger, message: str, *args: Any) -> None:
    key = f"{logger.name}:{message % args if args else message}"
    with _lock:
        first = key not in _seen
        if first and len(_seen) < _MAX_KEYS:
            _seen.add(key)
    logger.log(logging.WARNING if first else logging.DEBUG, message, *args)
