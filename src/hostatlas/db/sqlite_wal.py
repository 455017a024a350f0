"""Switching a SQLite file to WAL, safely when several processes open it at once."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

# Two processes opening a new file at once (two workers' first tick): the switch to WAL needs the file to
# itself, and SQLite answers "database is locked" at once rather than through the busy handler.
WAL_SWITCH_ATTEMPTS = 50
WAL_SWITCH_PAUSE_SECONDS = 0.02


def enable_wal(connection: Any) -> None:
    """``PRAGMA journal_mode=WAL`` on a DB-API connection (sqlite3's, or the cursor-owning one SQLAlchemy
    hands over), retried while another connection briefly holds the file."""
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(WAL_SWITCH_PAUSE_SECONDS * (attempt + 1) ** 0.5)
        finally:
            cursor.close()
