"""Parsing certificates with ``cryptography``, in a short-lived child process.

``cryptography`` costs the resident agent about 12 MB, a third of its memory budget, for work done once per
certificate: at the first snapshot, and again only when a file changes or a server starts serving another
certificate. So the agent never imports it; ``CertificateParser`` (certificates.py) sends what it has not
seen yet to ``python -m hostatlas_agent.discovery.certparse`` as JSON on stdin and reads the facts back.

Protocol: stdin ``{"files": [path, ...], "der": [base64, ...]}``; stdout ``{"files": {path: facts | null},
"der": [facts | null, ...]}`` where facts are CertificateFacts' fields."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

MAX_FILE_BYTES = 1024 * 1024
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"


def facts_of(certificate: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "domains": _domains(certificate),
        "not_after": _not_after(certificate).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint_sha256": hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest(),
    }


def parse_der(der: bytes) -> dict[str, Any] | None:
    try:
        return facts_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def parse_file(path: str) -> dict[str, Any] | None:
    """The leaf (first) certificate of a PEM file, or a DER file; None for keys, other files, unreadable ones."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_FILE_BYTES:
        return None
    start = data.find(_PEM_BEGIN)
    try:
        if start >= 0:
            end = data.find(_PEM_END, start)
            if end < 0:
                return None
            return facts_of(x509.load_pem_x509_certificate(data[start:end + len(_PEM_END)]))
        if data[:1] == b"\x30":  # a DER SEQUENCE; anything else (a PEM key, text) is not a certificate
            return facts_of(x509.load_der_x509_certificate(data))
    except ValueError:
        return None
    return None


def parse_request(request: dict[str, Any]) -> dict[str, Any]:
    return {"files": {path: parse_file(path) for path in request.get("files", [])},
            "der": [parse_der(base64.b64decode(item)) for item in request.get("der", [])]}


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


if __name__ == "__main__":
    json.dump(parse_request(json.load(sys.stdin)), sys.stdout)
