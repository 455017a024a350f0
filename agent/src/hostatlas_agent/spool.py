"""The disk spool: every batch for the platform is written here first and sent from here, oldest first.

Writing first makes a batch durable the moment it is produced: an outage, a 5xx, a 429 or a restart of the
agent changes when it arrives, never whether it does or in which order. The spool is bounded by size and by
age (the platform refuses telemetry older than 7 days anyway); what the bounds push out is counted, never
silent. A batch the platform refuses for good (a 4xx other than 401/408/429), or a file that cannot be read,
is set aside under ``rejected/`` with its reason, so one bad batch never blocks the ones behind it and can
be looked at and replayed (``hostatlas-agent replay``)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

log = logging.getLogger("hostatlas_agent.spool")

SUFFIX = ".zst"
KEEP_REJECTED = 200  # the newest rejected batches kept for inspection; older ones are deleted


@dataclass(frozen=True)
class SpoolItem:
    path: Path
    endpoint: str
    created: float
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()


def _parse_name(name: str) -> tuple[int, float, str] | None:
    """``<seq>-<created_ms>-<endpoint>.zst``; anything else in the directory is not ours."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    parts = name[: -len(SUFFIX)].split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[2]:
        return None
    return int(parts[0]), int(parts[1]) / 1000.0, parts[2]


class Spool:
    def __init__(self, path: Path, *, max_bytes: int, max_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.rejected_path = self.path / "rejected"
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._compressor = zstandard.ZstdCompressor(level=3)
        self.dropped = 0  # batches the size or age bound pushed out, since this process started
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.rejected_path.mkdir(exist_ok=True, mode=0o700)
        self._items: deque[SpoolItem] = deque(self._scan())
        self._bytes = sum(item.size for item in self._items)
        self._seq = (max((_parse_name(i.path.name) or (0, 0.0, ""))[0] for i in self._items)
                     if self._items else 0)

    def _scan(self) -> list[SpoolItem]:
        found = []
        for entry in os.scandir(self.path):
            parsed = _parse_name(entry.name)
            if parsed is None or not entry.is_file():
                continue
            found.append((parsed[0], SpoolItem(Path(entry.path), parsed[2], parsed[1], entry.stat().st_size)))
        return [item for _, item in sorted(found, key=lambda pair: pair[0])]

    def append(self, endpoint: str, body: bytes) -> None:
        """Compress and write one batch (atomically: a reader never sees half of it)."""
        data = self._compressor.compress(body)
        with self._lock:
            self._seq += 1
            created = self._clock()
            name = f"{self._seq:012d}-{int(created * 1000)}-{endpoint}{SUFFIX}"
            target = self.path / name
            tmp = self.path / f".{name}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
            self._items.append(SpoolItem(target, endpoint, created, len(data)))
            self._bytes += len(data)
            self._enforce_bounds()

    def _enforce_bounds(self) -> None:
        cutoff = self._clock() - self.max_age
        before = self.dropped
        while self._items and (self._bytes > self.max_bytes or self._items[0].created < cutoff):
            oldest = self._items.popleft()
            self._bytes -= oldest.size
            self.dropped += 1
            with contextlib.suppress(OSError):
                oldest.path.unlink()
        if self.dropped // 100 != before // 100 or (before == 0 and self.dropped):  # the first, then every 100th
            log.warning("spool bound reached: %d batches dropped so far (max %d bytes, %d s)",
                        self.dropped, self.max_bytes, self.max_age)

    def oldest(self) -> SpoolItem | None:
        with self._lock:
            self._enforce_bounds()
            return self._items[0] if self._items else None

    def head(self, limit: int) -> list[SpoolItem]:
        """The ``limit`` oldest batches, oldest first."""
        with self._lock:
            self._enforce_bounds()
            return [self._items[i] for i in range(min(limit, len(self._items)))]

    def remove(self, item: SpoolItem) -> None:
        with self._lock:
            self._forget(item)
            with contextlib.suppress(OSError):
                item.path.unlink()

    def set_aside(self, item: SpoolItem, reason: str) -> None:
        """Move a batch the platform will never take out of the line, with why, so the line goes on."""
        with self._lock:
            self._forget(item)
            try:
                os.replace(item.path, self.rejected_path / item.path.name)
                (self.rejected_path / (item.path.name + ".reason")).write_text(reason + "\n", encoding="utf-8")
            except OSError as exc:
                log.warning("could not set aside %s (%s); deleting it", item.path.name, exc)
                with contextlib.suppress(OSError):
                    item.path.unlink()
            self._prune_rejected()
        log.warning("batch %s set aside: %s", item.path.name, reason)

    def _forget(self, item: SpoolItem) -> None:
        with contextlib.suppress(ValueError):
            self._items.remove(item)
            self._bytes -= item.size

    def _prune_rejected(self) -> None:
        batches = sorted(p for p in self.rejected_path.iterdir() if p.name.endswith(SUFFIX))
        for old in batches[:-KEEP_REJECTED]:
            for path in (old, old.with_name(old.name + ".reason")):
                with contextlib.suppress(OSError):
                    path.unlink()

    def rejected(self) -> list[tuple[str, str]]:
        """(file name, reason) of every batch set aside, oldest first."""
        out = []
        for batch in sorted(p for p in self.rejected_path.iterdir() if p.name.endswith(SUFFIX)):
            try:
                reason = batch.with_name(batch.name + ".reason").read_text(encoding="utf-8").strip()
            except OSError:
                reason = "(no reason recorded)"
            out.append((batch.name, reason))
        return out

    def replay_rejected(self) -> int:
        """Put every set-aside batch back at the end of the line (after, say, a platform upgrade)."""
        count = 0
        dctx = zstandard.ZstdDecompressor()
        for name, _ in self.rejected():
            batch = self.rejected_path / name
            parsed = _parse_name(name)
            if parsed is None:
                continue
            try:
                self.append(parsed[2], dctx.decompress(batch.read_bytes(), max_output_size=64 << 20))
            except (OSError, zstandard.ZstdError) as exc:
                log.warning("cannot replay %s: %s", name, exc)
                continue
            for path in (batch, batch.with_name(name + ".reason")):
                with contextlib.suppress(OSError):
                    path.unlink()
            count += 1
        return count

    def stats(self) -> dict[str, float]:
        with self._lock:
            oldest = self._items[0].created if self._items else None
            return {"batches": len(self._items), "bytes": self._bytes,
                    "oldest_age_s": round(self._clock() - oldest, 1) if oldest else 0.0,
                    "dropped": self.dropped,
                    "rejected": sum(1 for p in self.rejected_path.iterdir() if p.name.endswith(SUFFIX))}
