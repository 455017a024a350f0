"""The agent's state directory: its credentials (mode 0600), log offsets, the spool and its last status.

Everything is written atomically (a temporary file, then ``os.replace``), so a crash or a full disk never
leaves a half-written file that would stop the next start."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Credentials:
    url: str
    server_id: int
    agent_token: str
    machine_id: str


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def credentials_path(self) -> Path:
        return self.path / "credentials.json"

    @property
    def offsets_path(self) -> Path:
        return self.path / "offsets.json"

    @property
    def spool_path(self) -> Path:
        return self.path / "spool"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save_credentials(self, credentials: Credentials) -> None:
        self.ensure()
        write_atomically(self.credentials_path, json.dumps(asdict(credentials), indent=2).encode(), 0o600)

    def load_credentials(self) -> Credentials | None:
        try:
            raw = json.loads(self.credentials_path.read_text(encoding="utf-8"))
            return Credentials(url=str(raw["url"]), server_id=int(raw["server_id"]),
                               agent_token=str(raw["agent_token"]), machine_id=str(raw["machine_id"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.credentials_path} is unreadable ({exc}); enrol again") from exc

    def save_status(self, status: dict[str, Any]) -> None:
        write_atomically(self.status_path, json.dumps(status, indent=2, sort_keys=True).encode(), 0o644)

    def load_status(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.status_path.read_text(encoding="utf-8"))
            return loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            return {}
