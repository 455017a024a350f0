"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

SQLite allows one writer at a time. Deferred transactions that later try to write fail at once with
"database is locked" when another connection wrote in between, whatever the busy timeout, so write
sessions start with ``BEGIN IMMEDIATE`` and, within this process, queue on a lock before asking
SQLite. Read sessions stay deferred and run in parallel under WAL.

Every engine hides statement parameters from its error messages (``hide_parameters``): they hold what
a request sent, secrets included, and an error message ends up in the log.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from hostatlas.db.sqlite_wal import enable_wal

SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Leave transaction control to the "begin" hook below instead of pysqlite's own guesswork.
        dbapi_connection.isolation_level = None
        enable_wal(dbapi_connection)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get("hostatlas_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One per process: the engine, a session factory, and the SQLite write queue."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                self.url, hide_parameters=True,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(self.url, hide_parameters=True, pool_size=10, max_overflow=30,
                                        pool_pre_ping=True)
        self._write_engine = self.engine.execution_options(hostatlas_write=True)
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self._sqlite_write_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        """A session that commits when the block ends cleanly and rolls back otherwise."""
        guard = self._sqlite_write_lock if (write and self.is_sqlite) else nullcontext()
        with guard:
            session = (self._write_sessions if write else self._read_sessions)()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def dispose(self) -> None:
        self.engine.dispose()
