"""The telemetry spool: acknowledged batches on local disk, the queue between HTTP and the store.

Why it exists: a ClickHouse INSERT costs mostly a fixed amount (here ~50 ms for a metric INSERT,
which writes the raw table and both rollups, whether it carries 3,000 rows or 20,000), so the store
wants few, large INSERTs, while an agent wants its answer in milliseconds. And parsing log lines costs
more CPU than serving the requests that carry them. So a request is answered once its batch is
appended here and fdatasync'd (a fraction of a millisecond, shared by every request of the group);
the storer (telemetry/ingest/storer.py, its own process by default) decodes, parses and stores the closed
segments in large batches, and deletes them. A crash loses nothing acknowledged.

Layout: ``<root>/<process>/`` holds one serving process's segments. The process writes to
``<kind>-<n>.open`` and renames it to ``<kind>-<n>.seg`` when closing it; the storer takes only
``.seg`` files, in order. A segment is a run of frames, each a header (body length, kind, team,
server, time received), the request body as decompressed, and a CRC32. A frame cut short by a crash
fails its length or CRC check and ends the segment: it was never acknowledged.

The serving process holds an exclusive flock on ``lock``, its storer one on ``storer.lock``. A storer
whose serving process is gone seals the open segments, stores everything and exits. Every few seconds a
storer adopts sibling directories where both locks are free (both are gone), moving their segments
into its own directory.

Every serving process of an install shares the root, so a read can wait for what any of them
acknowledged (``wait_until_stored``): a segment leaves the spool only once the storer has stored it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from hostatlas.clock import now_unix


class Kind(IntEnum):
    METRICS = 1
    LOGS = 2


_HEADER = struct.Struct("<IBIId")  # body length, kind, team_id, server_id, received_at
_CRC = struct.Struct("<I")
SEGMENT_SUFFIX = ".seg"
OPEN_SUFFIX = ".open"
PROCESS_LOCK, STORER_LOCK = "lock", "storer.lock"
# A frame that failed alone waits in a segment of its own, named so (telemetry/ingest/storer.py).
SUSPECT = re.compile(r"-suspect-(\d+)-")


@dataclass(frozen=True)
class Frame:
    kind: Kind
    team_id: int
    server_id: int
    received_at: float
    body: bytes

    def encode(self) -> bytes:
        head = _HEADER.pack(len(self.body), self.kind, self.team_id, self.server_id, self.received_at)
        return head + self.body + _CRC.pack(zlib.crc32(self.body, zlib.crc32(head)))


def read_frames(path: Path) -> Iterator[Frame]:
    """The segment's complete frames, in order; a torn or damaged frame ends it."""
    return frames_of(path.read_bytes())


def frames_of(data: bytes) -> Iterator[Frame]:
    """The complete frames encoded in ``data``, in order; a torn or damaged frame ends them."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, team_id, server_id, received_at = _HEADER.unpack_from(data, offset)
        body_end = offset + _HEADER.size + length
        if body_end + _CRC.size > len(data) or kind not in Kind.__members__.values():
            return
        head, body = data[offset:offset + _HEADER.size], data[offset + _HEADER.size:body_end]
        if _CRC.unpack_from(data, body_end)[0] != zlib.crc32(body, zlib.crc32(head)):
            return
        yield Frame(Kind(kind), team_id, server_id, received_at, body)
        offset = body_end + _CRC.size


class SegmentLog:
    """One kind's segments: frames go to the open segment; ``rotate`` closes it for the storer."""

    def __init__(self, directory: Path, prefix: str, *, fsync: bool) -> None:
        self._directory = directory
        self._prefix = prefix
        self._fsync = fsync
        self._number = 0
        self._fd = -1
        self._path = directory
        self.frames = 0  # in the open segment
        self.opened_at = 0.0  # monotonic time of the open segment's first frame
        self._open_next()

    def _open_next(self) -> None:
        self._number += 1
        self._path = self._directory / f"{self._prefix}-{self._number:010d}{OPEN_SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.frames = 0

    def append(self, frames: Sequence[bytes]) -> None:
        """Durable once this returns: one write and one fdatasync for the whole group."""
        view = memoryview(b"".join(frames))
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while view:
                view = view[os.write(self._fd, view):]
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            # Cut the partial group off, so that frames appended later are not hidden behind a torn one.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise
        if not self.frames:
            self.opened_at = time.monotonic()
        self.frames += len(frames)

    def rotate(self) -> Path | None:
        """Close the open segment if it holds anything and start the next; return the closed segment."""
        if not self.frames:
            return None
        os.close(self._fd)
        closed = self._path.with_suffix(SEGMENT_SUFFIX)
        os.rename(self._path, closed)
        self._open_next()
        return closed

    def close(self) -> Path | None:
        """Close for good; return the last segment, if it held anything."""
        closed = self.rotate()
        os.close(self._fd)
        self._path.unlink(missing_ok=True)
        return closed


def closed_segments(directory: Path) -> list[Path]:
    """The segments ready for the storer, oldest first within each kind."""
    return sorted(directory.glob(f"*{SEGMENT_SUFFIX}"))


@dataclass(frozen=True)
class BacklogStatus:
    """Acknowledged telemetry not yet stored: the closed segments of one spool directory.

    Ages are measured from a segment's last write (when it was closed, within the batch delay of its
    first frame). The storer takes segments oldest first, so ``storer_lag_seconds``, the age of the
    oldest segment it has not stored, is the same figure as ``oldest_age_seconds``.
    """

    bytes: int
    segments: int
    oldest_age_seconds: float  # 0 when empty
    storer_lag_seconds: float


def backlog_status(directory: Path, now: float | None = None) -> BacklogStatus:
    """One directory listing and a stat per closed segment: cheap enough for every probe and scrape."""
    moment = now_unix() if now is None else now
    total, count, oldest = 0, 0, moment
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.endswith(SEGMENT_SUFFIX):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:  # stored while we looked
                continue
            total, count, oldest = total + stat.st_size, count + 1, min(oldest, stat.st_mtime)
    age = max(0.0, moment - oldest)
    return BacklogStatus(bytes=total, segments=count, oldest_age_seconds=age, storer_lag_seconds=age)


def hold_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing): the fd, or None if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Spool:
    """This process's spool directory under ``root``, locked for the life of the process."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)
        self.directory = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.directory.mkdir()
        lock = hold_lock(self.directory / PROCESS_LOCK)
        assert lock is not None, "a fresh directory cannot be locked by anyone else"
        self._lock_fd = lock

    def segments(self, kind: Kind) -> SegmentLog:
        return SegmentLog(self.directory, kind.name.lower(), fsync=self.fsync)

    def close(self) -> None:
        """Release the directory; remove it when every segment was stored, else leave it for the next start."""
        if not any(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
            with contextlib.suppress(OSError):
                for name in (PROCESS_LOCK, STORER_LOCK):
                    (self.directory / name).unlink()
                self.directory.rmdir()
        os.close(self._lock_fd)


def seal_open_segments(directory: Path) -> None:
    """Close the open segments of a directory whose serving process is gone, for its storer to take."""
    for segment in directory.glob(f"*{OPEN_SUFFIX}"):
        with contextlib.suppress(OSError):
            os.replace(segment, segment.with_suffix(SEGMENT_SUFFIX))


def adopt_orphans(root: Path, into: Path) -> int:
    """Move the segments of spool directories whose process and storer are both gone into ``into``."""
    adopted = 0
    for other in sorted(root.iterdir()):
        if other == into or not other.is_dir():
            continue
        held = [hold_lock(other / name) for name in (PROCESS_LOCK, STORER_LOCK)]
        try:
            if None in held:  # alive, or being adopted by another process right now
                continue
            for segment in sorted([*other.glob(f"*{SEGMENT_SUFFIX}"), *other.glob(f"*{OPEN_SUFFIX}")]):
                # Sorts before the adopter's own segments of the same kind: older data first.
                kind, _, rest = segment.name.partition("-")
                os.replace(segment, (into / f"{kind}-0-{other.name}-{rest}").with_suffix(SEGMENT_SUFFIX))
                adopted += 1
            with contextlib.suppress(OSError):
                for name in (PROCESS_LOCK, STORER_LOCK):
                    (other / name).unlink()
                other.rmdir()
        finally:
            for fd in held:
                if fd is not None:
                    os.close(fd)
    return adopted


@dataclass(frozen=True)
class UnstoredSegment:
    directory: Path
    stem: str  # the segment's name without its suffix: the same whether it is open or closed


def unstored_segments(root: Path) -> list[UnstoredSegment]:
    """The segments under ``root`` holding acknowledged frames not stored yet, of every serving process.

    Open segments with frames and closed ones; not suspects, which wait seconds for their retry (what
    failed alone is no read's to wait for). A directory is listed in one getdents call (it holds a few
    files), under the directory's lock, so a segment renamed from open to closed meanwhile is not missed.
    """
    found = []
    for directory in sorted(root.iterdir()):
        try:
            with os.scandir(directory) as entries:
                names = [(entry.name, entry) for entry in entries]
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile: its process stopped, all stored
            continue
        for name, entry in names:
            if SUSPECT.search(name) or not (name.endswith(SEGMENT_SUFFIX) or name.endswith(OPEN_SUFFIX)):
                continue
            if name.endswith(OPEN_SUFFIX) and not _has_frames(entry):
                continue  # the next segment, opened empty: nothing acknowledged is in it
            found.append(UnstoredSegment(directory, name.rsplit(".", 1)[0]))
    return found


def _has_frames(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.stat().st_size > 0
    except FileNotFoundError:  # closed (renamed) since the listing: it held frames; it is followed as closed
        return True


def still_unstored(root: Path, segments: list[UnstoredSegment]) -> list[UnstoredSegment]:
    """Those of ``segments`` still in the spool, wherever a storer adopting them moved them."""
    return [segment for segment in segments if _in_spool(root, segment)]


def _in_spool(root: Path, segment: UnstoredSegment) -> bool:
    # Open before closed: the order a segment is renamed in, so a rename between the two looks is not missed.
    for suffix in (OPEN_SUFFIX, SEGMENT_SUFFIX):
        if (segment.directory / f"{segment.stem}{suffix}").exists():
            return True
    # Not in its directory: stored, or adopted by another storer (``adopt_orphans`` names it so).
    kind, _, rest = segment.stem.partition("-")
    return any(root.glob(f"*/{kind}-0-*{segment.directory.name}-{rest}{SEGMENT_SUFFIX}"))


def wait_until_stored(root: Path, timeout: float, *, poll: float = 0.01) -> bool:
    """Block until every frame acknowledged before the call, by any serving process under ``root``, is stored.

    Forces nothing: open segments are closed by their own writers (at the batch delay, or when full) and
    stored by their own storers; this only watches them leave. False once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    pending = unstored_segments(root)
    while pending:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
        pending = still_unstored(root, pending)
    return True
