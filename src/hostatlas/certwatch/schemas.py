"""The ``ssl.expiring`` event's data: the certificate or domain as the GET endpoints show it, and the threshold."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hostatlas.http.types import Id, Int64, Timestamp
from hostatlas.inventory.schemas import CertificateOut, DomainOut
from hostatlas.servers.schemas import ServerRef


class SslExpiringData(BaseModel):
    """One of ``certificate`` and ``domain`` is set: a discovered certificate (``GET /api/v1/certificates``), or
    a domain with an ``ssl_expiry`` that no discovered certificate on its server covers, or whose web server
    serves another certificate than the one on disk (``GET /api/v1/domains``: ``served_certificate``,
    ``reload_needed``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "certificate": {"id": 3, "server": {"id": 47, "hostname": "web-prod-01"},
                        "first_seen_at": "2026-03-01T14:35:00Z", "updated_at": "2026-03-01T14:35:00Z",
                        "path": "/etc/letsencrypt/live/app.example.com/fullchain.pem",
                        "subject": "CN=app.example.com", "issuer": "CN=R3, O=Let's Encrypt",
                        "domains": ["app.example.com"], "not_after": "2026-04-20T12:00:00Z",
                        "days_until_expiry": 30,
                        "fingerprint_sha256": "5f1b0c3e8a4d2f6b9c7e1a0d3b5f8e2c4a6d9b1e3f5a7c9e0b2d4f6a8c1e3b5d"},
        "domain": None, "server": {"id": 47, "hostname": "web-prod-01"}, "not_after": "2026-04-20T12:00:00Z",
        "days_left": 30, "threshold_days": 30, "incident_id": None,
    }]})

    certificate: CertificateOut | None
    domain: DomainOut | None
    server: ServerRef
    not_after: Timestamp = Field(description="When it expires (a domain's ssl_expiry is taken at 00:00 UTC)")
    days_left: Int64 = Field(description="Whole days from the check to not_after; negative once expired")
    threshold_days: Literal[30, 14, 7, 1] = Field(description="The threshold crossed; when several were crossed "
                                                              "at once, the tightest")
    incident_id: Id | None = Field(description="The incident it is part of (opened 7 days before expiry), if any")
