"""Discovery: what runs on the host (services, web server domains, certificates, Docker containers).

``take_snapshot(config)`` returns a ``Snapshot`` whose ``payload`` is the body of ``POST /agent/discovery``."""

from __future__ import annotations

from .model import FoundService
from .snapshot import Snapshot, take_snapshot

__all__ = ["FoundService", "Snapshot", "take_snapshot"]
