"""Renewed but not reloaded: a web server still serving another certificate than the one its configuration
names on disk. Typically the certificate was renewed (certbot wrote the new one) and the server never reloaded,
so it keeps serving the old one until that expires. Domain code: one rule, used wherever it matters.

The rule is applied once, when discovery stores a domain (``Domain.reload_needed``, indexed so that
``GET /api/v1/domains?reload_needed=true`` is a plain filter); readers (the API, the SSL expiry watch) read the
stored flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def reload_needed(certificate: Mapping[str, Any] | None, served_certificate: Mapping[str, Any] | None) -> bool:
    """True exactly when both the certificate on disk and the served one are known and their SHA-256
    fingerprints differ. Either unknown (an older agent, no HTTPS, a failed handshake) is not a difference."""
    if not certificate or not served_certificate:
        return False
    on_disk, served = certificate.get("fingerprint_sha256"), served_certificate.get("fingerprint_sha256")
    if not isinstance(on_disk, str) or not isinstance(served, str):
        return False
    return on_disk.lower() != served.lower()
