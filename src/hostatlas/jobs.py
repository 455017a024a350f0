"""Every background job, in the order the worker runs them each tick."""

from hostatlas.servers.jobs import mark_offline
from hostatlas.telemetry.jobs import enforce_retention
from hostatlas.worker import Job

ALL: list[tuple[str, Job]] = [
    ("servers.mark_offline", mark_offline),
    ("telemetry.retention", enforce_retention),
]
