"""One discovery snapshot: everything the collectors found, as the platform's discovery body."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from ..config import AgentConfig
from .apache import read_apache
from .certificates import CertificateFacts, CertificateParser, certificate_payload, expand_paths
from .docker import list_containers
from .domains import build_domains
from .model import FoundService
from .nginx import read_nginx
from .served import ServedCertificateProbe
from .services import discover_services
from .versions import VersionProbe
from .webconfig import WebConfig

log = logging.getLogger("hostatlas_agent.discovery.snapshot")

T = TypeVar("T")

# Shared across snapshots: versions are asked once per binary, served certificates once per 10 minutes.
_VERSIONS = VersionProbe()
_SERVED = ServedCertificateProbe()
_PARSER = CertificateParser()  # shared across snapshots: a certificate is parsed once


@dataclass
class Snapshot:
    payload: dict[str, Any]
    services: list[FoundService] = field(default_factory=list)
    log_paths: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of the payload: equal fingerprints mean there is nothing new to send."""
        text = json.dumps(self.payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def take_snapshot(config: AgentConfig, versions: VersionProbe | None = None,
                  served: ServedCertificateProbe | None = None, parser: CertificateParser | None = None) -> Snapshot:
    """Never raises: a part that fails is left out of the payload, so the platform keeps what it had for it."""
    features = config.features
    discovery = features.get("discovery", True)
    want_certificates = features.get("certificates", True)
    payload: dict[str, Any] = {}
    services: list[FoundService] = []

    nginx = _guard("nginx config", lambda: read_nginx(config.nginx_configs), WebConfig()) \
        if discovery or want_certificates else WebConfig()
    apache = _guard("Apache config", lambda: read_apache(config.apache_configs), WebConfig()) \
        if discovery or want_certificates else WebConfig()
    vhosts = nginx.vhosts + apache.vhosts
    vhost_certificates = sorted({v.certificate_path for v in vhosts if v.certificate_path})
    disk: dict[str, CertificateFacts] = _guard(
        "certificates", lambda: (parser or _PARSER).files(
            expand_paths(config.certificate_paths if want_certificates else [], vhost_certificates)), {})

    if discovery:
        config_logs = {"nginx": nginx.log_paths, "apache2": apache.log_paths, "httpd": apache.log_paths}
        found = _guard("services", lambda: discover_services(
            config.watch, versions or _VERSIONS, config_logs=config_logs), None)
        if found is not None:
            services = found
            payload["services"] = [s.to_payload() for s in services]
        probe = (served or _SERVED) if config.served_certificates else None
        if probe is not None:
            probe.start_snapshot()
        domains = _guard("domains", lambda: build_domains(vhosts, disk, probe, parser or _PARSER), None)
        if domains is not None:
            payload["domains"] = domains
    if want_certificates:
        payload["certificates"] = [certificate_payload(path, facts) for path, facts in sorted(disk.items())]
    if features.get("containers", True):
        containers = _guard("containers", lambda: list_containers(config.docker_socket), None)
        if containers is not None:
            payload["containers"] = containers
    log_paths = sorted({path for service in services for path in service.log_paths})
    return Snapshot(payload=payload, services=services, log_paths=log_paths)


def _guard(what: str, collect: Callable[[], T], fallback: T) -> T:
    try:
        return collect()
    except Exception:  # a collector's bug must not stop the others, nor the agent
        log.exception("discovery of %s failed", what)
        return fallback
