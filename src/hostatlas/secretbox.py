"""Secrets at rest (webhook signing secrets): sealed with the platform key, opened only in memory.

A secret the platform must read back (to sign with) cannot be hashed like API keys. It is sealed with
Fernet (AES-128-CBC + HMAC-SHA256, ``cryptography``) under the platform key, so a copy of the database,
a backup or a database error quoting a row shows only ciphertext.

The key: ``HOSTATLAS_SECRET_KEY`` (Fernet keys, comma-separated), else ``<data_dir>/secret.key`` (one key
a line), made on first start with mode 0600. The first key seals; every key opens, so a new key goes
first and the old one stays until ``hostatlas secrets rotate`` has resealed everything (docs/webhooks.md).
Every process sharing a database must hold the same keys.

Columns of type ``Sealed`` seal on write and open on read, for the ORM and Core queries alike: no caller
can store a secret in clear by mistake. A column type gets no context but the dialect, so the keyring is
process configuration, like logging: ``install``ed at start (``create_app``, the CLI) from the settings,
or loaded from ``get_settings()`` on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import String, Table, and_, select, type_coerce, update
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from hostatlas.db.engine import Database
from hostatlas.settings import Settings, get_settings

log = structlog.get_logger(__name__)

KEY_FILE_NAME = "secret.key"
RESEAL_BATCH = 500


class UnreadableSecret(ValueError):
    """A sealed value that none of the platform keys opens (a key missing, or the value damaged)."""


class Keyring:
    def __init__(self, keys: Sequence[str]) -> None:
        try:
            fernets = [Fernet(key.strip().encode()) for key in keys]
        except ValueError:
            raise ValueError("HOSTATLAS_SECRET_KEY (or the key file) must hold Fernet keys, comma-separated: "
                             "generate one with `hostatlas secrets new-key`") from None
        if not fernets:
            raise ValueError("HOSTATLAS_SECRET_KEY (or the key file) holds no key")
        self._fernet = MultiFernet(fernets)
        self._keys = [key.strip().encode() for key in keys]

    def derived(self, purpose: str) -> list[bytes]:
        """One key per platform key for ``purpose`` (e.g. signing dashboard cookies), the first from the sealing
        key: what one purpose signs cannot be replayed for another, and rotating keys keeps older ones valid."""
        return [hmac.new(key, purpose.encode(), hashlib.sha256).digest() for key in self._keys]

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret("a sealed secret opens with none of the platform keys") from None

    def reseal(self, sealed: str) -> str:
        """The same secret sealed with the first key."""
        try:
            return self._fernet.rotate(sealed.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret("a sealed secret opens with none of the platform keys") from None


def load(settings: Settings) -> Keyring:
    if settings.secret_key is not None:
        return Keyring(settings.secret_key.get_secret_value().split(","))
    return Keyring(_key_file(settings.data_dir).read_text().split())


def _key_file(data_dir: Path) -> Path:
    """The data directory's key file, made (mode 0600) by the first process that needs it."""
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("secret_key_file_readable_by_others", path=str(path))
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(Keyring.new_key() + "\n")
    try:
        # A link never replaces: of two processes starting at once, the first one's key is the key.
        os.link(draft, path)
        log.info("secret_key_file_created", path=str(path))
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path


_lock = threading.Lock()
_installed: Keyring | None = None


def install(keyring: Keyring | None) -> Keyring | None:
    """Make ``keyring`` the process's keyring; returns the one it replaces."""
    global _installed
    with _lock:
        previous, _installed = _installed, keyring
    return previous


def current() -> Keyring:
    global _installed
    with _lock:
        if _installed is None:
            _installed = load(get_settings())
        return _installed


class Sealed(TypeDecorator[str]):
    """A string column stored sealed. Sealing is randomised: such a column cannot be compared in SQL."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else current().seal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else current().open(value)


def reseal_all(db: Database, tables: Sequence[Table]) -> int:
    """Reseal every ``Sealed`` value of ``tables`` with the first key; returns how many were resealed."""
    keyring = current()
    count = 0
    for table in tables:
        for column in (column for column in table.columns if isinstance(column.type, Sealed)):
            count += _reseal_column(db, table, column.name, keyring)
    return count


def _reseal_column(db: Database, table: Table, name: str, keyring: Keyring) -> int:
    [key] = table.primary_key.columns
    raw = type_coerce(table.c[name], String())  # the stored ciphertext, not opened
    count, after = 0, None
    while True:
        with db.session(write=True) as session:
            query = select(key, raw).where(raw.is_not(None)).order_by(key).limit(RESEAL_BATCH)
            rows = session.execute(query if after is None else query.where(key > after)).all()
            for row_key, sealed in rows:
                # Compare-and-set: a secret rotated meanwhile is left as its rotation wrote it.
                session.execute(update(table).where(and_(key == row_key, raw == sealed))
                                .values({name: type_coerce(keyring.reseal(sealed), String())}))
        if not rows:
            return count
        count += len(rows)
        after = rows[-1][0]
