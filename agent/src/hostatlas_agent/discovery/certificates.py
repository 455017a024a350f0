"""Certificates on disk (PEM or DER; the first certificate of a chain file is the leaf) and their facts.

The agent itself never parses one: ``CertificateParser`` remembers what it has parsed (a file by its size,
mtime and inode; a served certificate by the SHA-256 of its DER) and hands only what is new to a child process
(certparse.py says why), all of a snapshot's new certificates in one go."""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.certificates")

MAX_CERTIFICATES = 2000
MAX_FILE_BYTES = 1024 * 1024
PARSE_TIMEOUT_S = 30.0
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class CertificateFacts:
    subject: str
    issuer: str
    domains: list[str]
    not_after: str  # ISO-8601, UTC, "Z"
    fingerprint_sha256: str  # lowercase hex of the DER encoding

    @property
    def expiry_date(self) -> str:
        return self.not_after[:10]

    @classmethod
    def from_json(cls, raw: Any) -> CertificateFacts | None:
        if not isinstance(raw, dict):
            return None
        return cls(subject=str(raw["subject"]), issuer=str(raw["issuer"]), domains=[str(d) for d in raw["domains"]],
                   not_after=str(raw["not_after"]), fingerprint_sha256=str(raw["fingerprint_sha256"]))


def _file_identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _may_hold_a_certificate(path: str) -> bool:
    """Cheap: a PEM certificate block or a DER sequence, not too large. Keys and text never reach the parser."""
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return False
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES)
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return False
    return _PEM_BEGIN in data or data[:1] == b"\x30"


class CertificateParser:
    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command or [sys.executable, "-m", "hostatlas_agent.discovery.certparse"])
        self._files: dict[str, tuple[tuple[int, int, int, int], CertificateFacts | None]] = {}
        self._der: dict[str, CertificateFacts | None] = {}
        self._lock = threading.Lock()
        self.runs = 0  # child processes started, for tests and for status

    def files(self, paths: Iterable[str]) -> dict[str, CertificateFacts]:
        """The certificate in each file that holds one; files unchanged since the last call are not read again."""
        wanted = {path: identity for path in paths if (identity := _file_identity(path)) is not None}
        with self._lock:
            new = [path for path, identity in wanted.items()
                   if path not in self._files or self._files[path][0] != identity]
            to_parse = [path for path in new if _may_hold_a_certificate(path)]
            parsed = self._parse(files=to_parse).get("files", {}) if to_parse else {}
            for path in new:
                self._files[path] = (wanted[path], CertificateFacts.from_json(parsed.get(path)))
            for path in [p for p in self._files if p not in wanted]:
                del self._files[path]
            return {path: facts for path, (_, facts) in self._files.items() if facts is not None}

    def ders(self, ders: Sequence[bytes]) -> list[CertificateFacts | None]:
        """Facts of DER-encoded certificates (what TLS servers sent), in order."""
        keys = [hashlib.sha256(der).hexdigest() for der in ders]
        with self._lock:
            new = {key: der for key, der in zip(keys, ders) if key not in self._der}
            if new:
                parsed = self._parse(der=list(new.values())).get("der", [])
                for index, key in enumerate(new):
                    self._der[key] = CertificateFacts.from_json(parsed[index] if index < len(parsed) else None)
            return [self._der.get(key) for key in keys]

    def forget_served(self, keep: Iterable[bytes]) -> None:
        """Drop the served certificates no longer seen, so the cache stays the size of what is served."""
        keep_keys = {hashlib.sha256(der).hexdigest() for der in keep}
        with self._lock:
            self._der = {k: v for k, v in self._der.items() if k in keep_keys}

    def _parse(self, files: Sequence[str] = (), der: Sequence[bytes] = ()) -> dict[str, Any]:
        request = {"files": list(files), "der": [base64.b64encode(item).decode("ascii") for item in der]}
        self.runs += 1
        try:
            done = subprocess.run(self._command, input=json.dumps(request), capture_output=True, text=True,
                                  timeout=PARSE_TIMEOUT_S, check=True)
            answer = json.loads(done.stdout)
            return answer if isinstance(answer, dict) else {}
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            warn_once(log, "cannot parse certificates (%s); they are left out of this snapshot", exc)
            return {}


def certificate_payload(path: str, facts: CertificateFacts) -> dict[str, Any]:
    return {"path": path, "subject": facts.subject, "issuer": facts.issuer, "domains": facts.domains,
            "not_after": facts.not_after, "fingerprint_sha256": facts.fingerprint_sha256}


def expand_paths(patterns: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The files the globs match plus the ``extra`` paths, deduplicated, sorted, at most MAX_CERTIFICATES."""
    paths: set[str] = set()
    for pattern in patterns:
        try:
            matches = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
        except OSError:
            continue
        paths.update(path for path in matches if os.path.isfile(path))
    paths.update(path for path in extra if os.path.isfile(path))
    ordered = sorted(paths)
    if len(ordered) > MAX_CERTIFICATES:
        warn_once(log, "more than %d certificate files found; reading the first ones", MAX_CERTIFICATES)
    return ordered[:MAX_CERTIFICATES]
