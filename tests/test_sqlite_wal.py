"""Switching to WAL while another connection briefly holds the file: retried, not failed."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from hostatlas.db import sqlite_wal
from hostatlas.db.sqlite_wal import enable_wal


def _holding_reader(path: Path) -> sqlite3.Connection:
    """A connection inside a read transaction on a rollback-journal file: nobody may switch it to WAL."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM t").fetchall()
    return holder


def test_the_switch_waits_for_a_connection_that_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    holder = _holding_reader(path)
    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    # A busy handler shorter than the hold: without the retries this fails with "database is locked".
    switching = sqlite3.connect(path, isolation_level=None, timeout=0.01)
    enable_wal(switching)
    assert switching.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_held_for_good_still_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_wal, "WAL_SWITCH_ATTEMPTS", 3)
    path = tmp_path / "held.db"
    holder = _holding_reader(path)
    switching = sqlite3.connect(path, isolation_level=None, timeout=0.01)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        enable_wal(switching)
    holder.close()
