"""Domains: the names the web servers' virtual hosts answer to, with the certificate each names on disk and the
one a local handshake is actually served (they differ when a renewal was not followed by a reload)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .certificates import CertificateFacts, CertificateParser
from .model import VirtualHost
from .once import warn_once
from .served import ServedCertificateProbe

log = logging.getLogger("hostatlas_agent.discovery.domains")

MAX_DOMAINS = 5000
_NOT_DOMAINS = ("", "_", "localhost", "localhost.localdomain")


def domain_names(vhost: VirtualHost) -> Iterator[str]:
    """The names worth reporting. nginx's ``.example.com`` means both the domain and its subdomains; regex
    names (``~...``) and names built from variables say nothing about a domain."""
    for raw in vhost.server_names:
        name = raw.strip().lower().rstrip(".")
        if name in _NOT_DOMAINS or name.startswith("~") or "$" in name or "/" in name or _is_ip(name):
            continue
        if name.startswith("."):
            yield name[1:]
            yield "*" + name
        else:
            yield name


def build_domains(vhosts: Sequence[VirtualHost], disk: Mapping[str, CertificateFacts],
                  probe: ServedCertificateProbe | None, parser: CertificateParser) -> list[dict[str, Any]]:
    """One item per name, sorted; a name served over HTTPS by one vhost and plain HTTP by another is the HTTPS
    one. ``probe`` None skips the handshakes; what they bring back is parsed in one go."""
    chosen: dict[str, VirtualHost] = {}
    for vhost in vhosts:
        for name in domain_names(vhost):
            current = chosen.get(name)
            if current is None or (vhost.is_https and not current.is_https):
                chosen[name] = vhost
    names = sorted(chosen)
    if len(names) > MAX_DOMAINS:
        warn_once(log, "more than %d domains found; reporting the first ones", MAX_DOMAINS)
    names = names[:MAX_DOMAINS]
    served_der: dict[str, bytes] = {}
    for name in names:
        vhost = chosen[name]
        if probe is not None and vhost.is_https and "*" not in name:
            address, port = min(vhost.ssl_endpoints, key=lambda e: (e[1] != 443, e[1], e[0]))
            der = probe.served(address, port, name)
            if der:
                served_der[name] = der
    parsed = parser.ders(list(served_der.values())) if served_der else []
    parser.forget_served(served_der.values())
    served = {name: facts for name, facts in zip(served_der, parsed) if facts is not None}
    return [_domain(name, chosen[name], disk, served.get(name)) for name in names]


def _domain(name: str, vhost: VirtualHost, disk: Mapping[str, CertificateFacts],
            served: CertificateFacts | None) -> dict[str, Any]:
    on_disk = disk.get(vhost.certificate_path) if vhost.is_https and vhost.certificate_path else None
    expiry = served or on_disk
    return {
        "name": name,
        "source": vhost.source,
        "ssl_expiry": expiry.expiry_date if expiry else None,
        "certificate": None if on_disk is None else {
            "path": vhost.certificate_path, "not_after": on_disk.not_after,
            "fingerprint_sha256": on_disk.fingerprint_sha256},
        "served_certificate": None if served is None else {
            "not_after": served.not_after, "fingerprint_sha256": served.fingerprint_sha256,
            "issuer": served.issuer, "subject": served.subject},
    }


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True
