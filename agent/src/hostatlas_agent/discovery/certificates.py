"""Certificates on disk (PEM or DER; the first certificate of a chain file is the leaf) and their facts."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.certificates")

MAX_CERTIFICATES = 2000
MAX_FILE_BYTES = 1024 * 1024
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


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


def facts_of(certificate: x509.Certificate) -> CertificateFacts:
    return CertificateFacts(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        domains=_domains(certificate),
        not_after=_iso(_not_after(certificate)),
        fingerprint_sha256=hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
    )


def facts_of_der(der: bytes) -> CertificateFacts | None:
    try:
        return facts_of(x509.load_der_x509_certificate(der))
    except ValueError as exc:
        log.debug("unparseable certificate: %s", exc)
        return None


def read_certificate(path: str) -> CertificateFacts | None:
    """The leaf certificate of the file at ``path``; None for keys, other files, unreadable or large ones."""
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            log.debug("skipping %s: larger than %d bytes", path, MAX_FILE_BYTES)
            return None
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    start = data.find(_PEM_BEGIN)
    try:
        if start >= 0:
            end = data.find(_PEM_END, start)
            if end < 0:
                return None
            certificate = x509.load_pem_x509_certificate(data[start:end + len(_PEM_END)])
        elif data[:1] == b"\x30":  # a DER SEQUENCE; anything else (a PEM key, text) is not a certificate
            certificate = x509.load_der_x509_certificate(data)
        else:
            return None
        return facts_of(certificate)
    except ValueError as exc:
        log.debug("%s is not a certificate: %s", path, exc)
        return None


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


def read_certificates(paths: Iterable[str]) -> dict[str, CertificateFacts]:
    found: dict[str, CertificateFacts] = {}
    for path in paths:
        facts = read_certificate(path)
        if facts is not None:
            found[path] = facts
    return found


def _domains(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except (x509.ExtensionNotFound, ValueError):
        names = []
    if not names:
        names = [str(attr.value) for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return sorted(dict.fromkeys(name.lower() for name in names))


def _not_after(certificate: x509.Certificate) -> datetime:
    # not_valid_after_utc appeared in cryptography 42; hosts may carry an older one.
    value = getattr(certificate, "not_valid_after_utc", None)
    if isinstance(value, datetime):
        return value
    return certificate.not_valid_after.replace(tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
