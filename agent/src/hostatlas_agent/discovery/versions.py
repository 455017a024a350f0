"""A service's version, from its binary's version command. Each binary is asked once: the answer is cached by
(path, modification time), so an upgrade is noticed and an unchanged binary is never run again."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections.abc import Sequence

log = logging.getLogger("hostatlas_agent.discovery.versions")

TIMEOUT_S = 3.0
MAX_CACHE = 256
# The first dotted number, with the suffixes versions carry (OpenSSH's "9.6p1"); "OpenSSH_9.6p1" has no word
# boundary before the 9, hence the lookbehind rather than \b.
_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*(?:p\d+)?)|(?<=[_/=])(\d+\.\d+(?:\.\d+)*(?:p\d+)?)")


def parse_version(text: str) -> str | None:
    for line in text.splitlines():
        found = _VERSION_RE.search(line)
        if found:
            return found.group(1) or found.group(2)
    return None


class VersionProbe:
    """Runs version commands with a timeout; thread-safe; remembers answers and failures alike."""

    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self._timeout = timeout
        self._cache: dict[tuple[str, float, tuple[str, ...]], str | None] = {}
        self._lock = threading.Lock()
        self.runs = 0  # how many commands were actually started (tells a cache hit from a miss)

    def version(self, exe: str, args: Sequence[str]) -> str | None:
        try:
            mtime = os.stat(exe).st_mtime
        except OSError as exc:
            log.debug("cannot stat %s: %s", exe, exc)
            return None
        key = (exe, mtime, tuple(args))
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = self._run(exe, args)
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _run(self, exe: str, args: Sequence[str]) -> str | None:
        self.runs += 1
        try:
            done = subprocess.run([exe, *args], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self._timeout, env={**os.environ, "LC_ALL": "C"}, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("%s %s failed: %s", exe, " ".join(args), exc)
            return None
        # nginx and sshd answer on stderr; most others on stdout.
        text = (done.stdout + b"\n" + done.stderr).decode("utf-8", "replace")
        found = parse_version(text)
        if found is None:
            log.debug("no version in the output of %s %s", exe, " ".join(args))
        return found
