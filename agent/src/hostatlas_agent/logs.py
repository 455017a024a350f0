"""Log tailing: new lines of the configured files, in bounded batches, resumable across restarts.

`LogTailer.poll(now)` returns a `LogBatch`; `LogBatch.commit()` (called once the batch is delivered or spooled)
persists how far each file was read, so a restart resumes after the last committed batch: an uncommitted batch is
read again, a committed one never is.

Each path is followed across its replacements:
- rename rotation (logrotate's default): the old file stays open and is read to its end before the new one. It
  stays open while the new file is empty, because writers keep appending to the old inode until they reopen;
- copytruncate and plain truncation: when the file shrank or its first bytes changed, the lines written between
  our last read and the truncation are taken from the rotated copy (a sibling `path*` with the same first bytes),
  then the truncated file is read from its start;
- both may also have happened while the agent was stopped: the stored inode or first bytes are looked up among
  the path's uncompressed siblings (path.1, path-20240101, ...).

Where a file starts: a file already present when its pattern is first expanded starts at its end (no flood of
history); one appearing later (new file, the new file after a rotation, a file recreated after deletion) starts
at 0. A line is at most 8,192 bytes of UTF-8, the platform's limit: longer lines are split into several entries,
cut at character boundaries. Empty lines are skipped. A last line without its newline waits for it up to
`PARTIAL_LINE_WAIT` seconds.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Union

log = logging.getLogger("hostatlas_agent.logs")

LINE_MAX_BYTES = 8192
HEAD_BYTES = 1024
CHUNK_BYTES = 64 * 1024
PARTIAL_LINE_WAIT = 5.0
RESCAN_INTERVAL = 10.0

_COMPRESSED = re.compile(r"\.(gz|bz2|xz|zst|lz4|z|zip)$", re.IGNORECASE)
# Names logrotate gives old files; a broad glob (/var/log/app/*) must not tail them as sources of their own.
_ROTATED = re.compile(r"(\.\d+|[-_.]\d{8,10})(\.(gz|bz2|xz|zst|lz4|z|zip))?$", re.IGNORECASE)

# O_NONBLOCK: a FIFO put where a log file was must not block the agent in open(); regular files ignore it.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

LogEntry = dict[str, Union[float, str]]
StoredState = dict[str, Union[int, str]]


def _text(content: bytes) -> str:
    """Text the platform accepts: valid UTF-8, no NUL, at most LINE_MAX_BYTES once encoded."""
    text = content.decode("utf-8", "replace").replace("\x00", "\ufffd")
    encoded = text.encode("utf-8")
    if len(encoded) > LINE_MAX_BYTES:  # replacement characters take 3 bytes where the bad byte took 1
        text = encoded[:LINE_MAX_BYTES].decode("utf-8", "ignore")
    return text


def _cut(data: bytes, start: int) -> int:
    """End of a LINE_MAX_BYTES piece of data[start:], moved back so that it does not split a UTF-8 character."""
    end = start + LINE_MAX_BYTES
    back = end
    while back > end - 4 and back < len(data) and data[back] & 0xC0 == 0x80:
        back -= 1
    return end if back == end - 4 else back


def _head_matches(fd: int, length: int, digest: str) -> bool:
    data = os.pread(fd, length, 0)
    return len(data) == length and hashlib.sha256(data).hexdigest() == digest


class _Budget:
    def __init__(self, lines: int, size: int) -> None:
        self.lines = lines
        self.size = size

    @property
    def exhausted(self) -> bool:
        return self.lines <= 0 or self.size <= 0


class _Reader:
    """One open file and the offset just after the last line taken from it."""

    def __init__(self, fd: int, offset: int | None) -> None:
        info = os.fstat(fd)
        self.fd, self.dev, self.ino = fd, info.st_dev, info.st_ino
        self.offset = info.st_size if offset is None else offset
        self.head = os.pread(fd, HEAD_BYTES, 0)
        self.partial_at: int | None = None  # offset of a newline-less last line, and since when it waits
        self.partial_since = 0.0

    @classmethod
    def open(cls, path: str, offset: int | None) -> _Reader:
        """Opens path at offset (None: at its end)."""
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IsADirectoryError(path)
            return cls(fd, offset)
        except BaseException:
            os.close(fd)
            raise

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def deleted(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0

    def truncated(self) -> bool:
        return self.size() < self.offset or (bool(self.head) and os.pread(self.fd, len(self.head), 0) != self.head)

    def restart(self) -> None:
        self.offset, self.partial_at = 0, None
        self.head = os.pread(self.fd, HEAD_BYTES, 0)

    def refresh_head(self) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head = os.pread(self.fd, HEAD_BYTES, 0)

    def state(self) -> StoredState:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset,
                "head": hashlib.sha256(self.head).hexdigest(), "head_len": len(self.head)}

    def close(self) -> None:
        os.close(self.fd)

    def read(self, source: str, budget: _Budget, now: float, out: list[LogEntry], final: bool = False) -> bool:
        """Appends the lines after offset to out; True when every line was taken (a partial one may wait)."""
        while not budget.exhausted:
            data = os.pread(self.fd, CHUNK_BYTES, self.offset)
            at_eof = len(data) < CHUNK_BYTES
            pos = 0
            while not budget.exhausted:
                newline = data.find(b"\n", pos, pos + LINE_MAX_BYTES + 1)
                if newline >= 0:
                    end, resume = newline, newline + 1
                elif len(data) - pos > LINE_MAX_BYTES:
                    end = resume = _cut(data, pos)
                elif not at_eof:
                    break  # the chunk ended inside a line: read again from its start
                elif pos == len(data) or not (final or self._partial_due(now)):
                    return True
                else:
                    end = resume = len(data)
                content = data[pos:end]
                if content.endswith(b"\r"):
                    content = content[:-1]
                if content:
                    out.append({"ts": now, "source": source, "line": _text(content)})
                    budget.lines -= 1
                    budget.size -= len(content)
                self.offset += resume - pos
                pos = resume
        return False

    def _partial_due(self, now: float) -> bool:
        if self.partial_at != self.offset:
            self.partial_at, self.partial_since = self.offset, now
        return now - self.partial_since > PARTIAL_LINE_WAIT


class _Source:
    """One configured path: the file now at that path, and the files it replaced that are still being read."""

    def __init__(self, path: str, current: _Reader | None, rotated: list[_Reader]) -> None:
        self.path, self.current, self.rotated = path, current, rotated

    def state(self) -> StoredState | None:
        """Where a restart must resume: the oldest file not read to its end yet."""
        first = self.rotated[0] if self.rotated else self.current
        return first.state() if first else None

    def readers(self) -> list[_Reader]:
        return [*self.rotated, *([self.current] if self.current else [])]

    def close(self) -> None:
        for reader in self.readers():
            reader.close()
        self.rotated, self.current = [], None


def _siblings(path: str) -> list[str]:
    """Rotated copies of path (path.1, path-20240101, ...); compressed ones cannot be read as they were."""
    return sorted(p for p in glob.glob(glob.escape(path) + "*") if p != path and not _COMPRESSED.search(p))


def _find_sibling(path: str, match: Callable[[int, os.stat_result], bool]) -> _Reader | None:
    for candidate in _siblings(path):
        try:
            fd = os.open(candidate, _OPEN_FLAGS)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and match(fd, info):
                return _Reader(fd, 0)
        except OSError:
            pass
        os.close(fd)
    return None


def _expand(pattern: str) -> list[str]:
    if not any(char in pattern for char in "*?["):
        return [pattern] if os.path.isfile(pattern) else []
    return sorted(p for p in glob.glob(pattern) if not _ROTATED.search(p) and os.path.isfile(p))


class LogBatch:
    def __init__(self, entries: list[LogEntry], commit: Callable[[], None]) -> None:
        self.entries = entries
        self._commit = commit

    def commit(self) -> None:
        """Persists the offsets reached by this batch (and by every batch before it)."""
        self._commit()


class LogTailer:
    """Follows the files matching `set_paths` patterns; offsets live in `offsets_path` (JSON).

    `poll` is called from one thread; `LogBatch.commit` may be called from another (the sender's)."""

    def __init__(self, offsets_path: Path, max_lines: int = 1000, max_bytes: int = 512 * 1024,
                 rescan_interval: float = RESCAN_INTERVAL) -> None:
        self._offsets_path = Path(offsets_path)
        self._max_lines, self._max_bytes = max_lines, max_bytes
        self._rescan_interval = rescan_interval
        self._stored = _load_offsets(self._offsets_path)  # offsets of paths not (yet) followed
        self._durable = dict(self._stored)  # what the offsets file holds
        self._started_after: dict[str, int] = {}  # path -> number of the last batch made before it was started
        self._patterns: list[str] = []
        self._expanded: set[str] = set()  # patterns expanded at least once: files they find later are new
        self._sources: dict[str, _Source] = {}
        self._next_scan: float | None = None
        self._warned: set[str] = set()
        self._batches = self._committed = 0
        self._saving = threading.Lock()  # commits come from the sender thread, new files' starts from poll
        self._turn = 0

    def set_paths(self, globs: Sequence[str]) -> None:
        patterns = list(dict.fromkeys(globs))
        if patterns != self._patterns:
            self._patterns, self._next_scan = patterns, None

    def poll(self, now: float) -> LogBatch | None:
        """New lines, at most max_lines and about max_bytes; `now` (wall clock) is each entry's `ts`."""
        if self._next_scan is None or now >= self._next_scan:
            self._scan()
            self._next_scan = now + self._rescan_interval
        budget = _Budget(self._max_lines, self._max_bytes)
        entries: list[LogEntry] = []
        paths = sorted(self._sources)
        # Start one file further each poll so that a flooding file cannot starve the others.
        self._turn = (self._turn + 1) % max(len(paths), 1)
        for path in paths[self._turn:] + paths[:self._turn]:
            if budget.exhausted:
                break
            self._poll_source(self._sources[path], budget, now, entries)
        if not entries:
            return None
        self._batches += 1
        number, snapshot = self._batches, self._snapshot()
        return LogBatch(entries, lambda: self._commit(number, snapshot))

    def followed(self) -> list[str]:
        """The files being read now (what the patterns matched at the last scan and could be opened)."""
        return sorted(self._sources)

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()

    def _scan(self) -> None:
        found: dict[str, bool] = {}  # path -> appeared after its pattern was first expanded
        for pattern in self._patterns:
            for path in _expand(pattern):
                found[path] = found.get(path, False) or pattern in self._expanded
            self._expanded.add(pattern)
        for path in [p for p in self._sources if p not in found and not self._configured(p)]:
            source = self._sources.pop(path)
            state = source.state()
            if state is not None:
                self._stored[path] = state  # kept, should the path be configured again
            source.close()
        started = [path for path, appeared in found.items() if path not in self._sources and self._follow_new(
            path, appeared)]
        if started:
            self._save_starts(started)

    def _configured(self, path: str) -> bool:
        """Whether a followed path still matches a pattern, even while it is missing (between rename and create)."""
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self._patterns)

    def _save_starts(self, paths: list[str]) -> None:
        """Makes where new files start durable at once: a restart must not take them for files found at start."""
        with self._saving:
            for path in paths:
                state = self._sources[path].state()
                if state is not None:
                    self._durable[path] = state
                    self._started_after[path] = self._batches
            self._save(self._durable)

    def _follow_new(self, path: str, appeared: bool) -> bool:
        """Starts following path; True when it starts without a stored offset."""
        stored = self._stored.pop(path, None)
        try:
            source = _resume(path, stored) if stored else self._start(path, appeared)
        except OSError:
            if stored:
                self._stored[path] = stored
            self._warn_once(path, "cannot read %s", path)
            return False
        self._warned.discard(path)
        if source is not None:
            self._sources[path] = source
        return source is not None and stored is None

    def _start(self, path: str, appeared: bool) -> _Source:
        reader = _Reader.open(path, 0 if appeared else None)
        # A file we already follow under another name (a rotated copy a broad glob matched) is not new.
        if any((r.dev, r.ino) == (reader.dev, reader.ino) for s in self._sources.values() for r in s.readers()):
            reader.offset = reader.size()
        return _Source(path, reader, [])

    def _poll_source(self, source: _Source, budget: _Budget, now: float, entries: list[LogEntry]) -> None:
        try:
            self._follow_path(source)
            if self._read_rotated(source, budget, now, entries):
                self._read_current(source, budget, now, entries)
        except OSError:
            self._warn_once(source.path, "cannot read %s", source.path)
        if source.current is None and not source.rotated:
            del self._sources[source.path]

    def _follow_path(self, source: _Source) -> None:
        """Notices that the path now names another file, or that its file was truncated."""
        try:
            info = os.stat(source.path)
        except FileNotFoundError:
            return  # renamed or deleted: what is open is still read to its end
        current = source.current
        if current is None or (info.st_dev, info.st_ino) != (current.dev, current.ino):
            try:
                replacement = _Reader.open(source.path, 0)
            except OSError:  # e.g. created with a mode we may not read: keep reading the old file meanwhile
                self._warn_once(source.path, "cannot read %s", source.path)
                return
            if current is not None:
                source.rotated.append(current)
            source.current = replacement
        elif current.truncated():
            head, offset = current.head, current.offset
            copy = _find_sibling(source.path, lambda fd, sibling: sibling.st_size > offset and os.pread(
                fd, len(head), 0) == head)
            if copy is not None:
                copy.offset = offset
                source.rotated.append(copy)
            current.restart()

    def _read_rotated(self, source: _Source, budget: _Budget, now: float, entries: list[LogEntry]) -> bool:
        """Reads the replaced files in order; True once none is left."""
        while source.rotated:
            old = source.rotated[0]
            # Writers append to the old file until they reopen the path, which the new file's first line shows.
            finished = len(source.rotated) > 1 or old.deleted() or (
                source.current is not None and source.current.size() > 0)
            if not old.read(source.path, budget, now, entries, final=finished) or not finished:
                return False
            source.rotated.pop(0).close()
        return True

    def _read_current(self, source: _Source, budget: _Budget, now: float, entries: list[LogEntry]) -> None:
        current = source.current
        if current is None:
            return
        deleted = current.deleted()
        if current.read(source.path, budget, now, entries, final=deleted) and deleted:
            current.close()
            source.current = None
            return
        current.refresh_head()

    def _snapshot(self) -> dict[str, StoredState]:
        snapshot = dict(self._stored)
        for path, source in self._sources.items():
            state = source.state()
            if state is not None:
                snapshot[path] = state
        return snapshot

    def _commit(self, number: int, snapshot: dict[str, StoredState]) -> None:
        with self._saving:
            if number <= self._committed:
                return  # a later batch was committed already and its offsets include this one's
            durable = dict(snapshot)
            for path, state in self._durable.items():
                if path not in snapshot and self._started_after.get(path, -1) >= number:
                    durable[path] = state  # started after this batch was made: keep its starting point
            if self._save(durable):
                self._durable, self._committed = durable, number

    def _save(self, offsets: dict[str, StoredState]) -> bool:
        try:
            _write_atomically(self._offsets_path, json.dumps(offsets, sort_keys=True))
        except OSError:
            self._warn_once("offsets", "cannot save log offsets to %s", self._offsets_path)
            return False
        self._warned.discard("offsets")
        return True

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args, exc_info=True)


def _resume(path: str, stored: StoredState) -> _Source | None:
    """Follows path from a stored offset, looking for the stored file among its siblings if it was replaced."""
    dev, ino, offset = int(stored["dev"]), int(stored["ino"]), int(stored["offset"])
    head_len, digest = int(stored["head_len"]), str(stored["head"])
    try:
        info: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        info = None
    current: _Reader | None = None
    if info is not None and (info.st_dev, info.st_ino) == (dev, ino):
        current = _Reader.open(path, offset)
        if current.size() >= offset and _head_matches(current.fd, head_len, digest):
            return _Source(path, current, [])
        current.restart()  # truncated while we were away: its old content may survive in a copy
        old = _find_sibling(path, lambda fd, sib: sib.st_size > offset and _head_matches(fd, head_len, digest))
    else:
        old = _find_sibling(path, lambda fd, sib: (sib.st_dev, sib.st_ino) == (dev, ino) and _head_matches(
            fd, head_len, digest))
        if info is not None:
            current = _Reader.open(path, 0)
    rotated: list[_Reader] = []
    if old is not None:
        old.offset = offset
        rotated.append(old)
    return _Source(path, current, rotated) if current or rotated else None


def _load_offsets(path: Path) -> dict[str, StoredState]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable log offsets %s", path, exc_info=True)
        return {}
    offsets: dict[str, StoredState] = {}
    for name, state in (raw.items() if isinstance(raw, dict) else []):
        if isinstance(state, dict) and all(isinstance(state.get(key), int) for key in (
                "dev", "ino", "offset", "head_len")) and isinstance(state.get("head"), str):
            offsets[name] = {key: state[key] for key in ("dev", "ino", "offset", "head", "head_len")}
    return offsets


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def tail(path: str, lines: int) -> list[str]:
    """The last `lines` non-empty lines of a file, read backwards in blocks; [] when it cannot be read."""
    if lines <= 0:
        return []
    limit = lines * LINE_MAX_BYTES + CHUNK_BYTES  # bounded memory, however long the lines are
    try:
        with open(os.open(path, _OPEN_FLAGS), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return []
            position = handle.seek(0, os.SEEK_END)
            data = b""
            while position > 0 and data.count(b"\n") <= lines and len(data) < limit:
                step = min(CHUNK_BYTES, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except OSError:
        return []
    pieces = data.split(b"\n")
    if position > 0:
        pieces = pieces[1:]  # the first piece may start in the middle of a line
    texts = [_text(piece[:-1] if piece.endswith(b"\r") else piece) for piece in pieces]
    return [text for text in texts if text][-lines:]
