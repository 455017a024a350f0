"""Every background job, in the order the worker runs them each tick, and the worker's long-running loops."""

from hostatlas.db.engine import Database
from hostatlas.outbound import Resolver, system_resolver
from hostatlas.servers.jobs import mark_offline
from hostatlas.settings import Settings
from hostatlas.telemetry.jobs import enforce_retention
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.jobs import prune_delivery_log
from hostatlas.worker import Job, Loop

ALL: list[tuple[str, Job]] = [
    ("servers.mark_offline", mark_offline),
    ("telemetry.retention", enforce_retention),
    ("webhooks.log_retention", prune_delivery_log),
]


def loops(db: Database, settings: Settings, resolver: Resolver = system_resolver) -> list[tuple[str, Loop]]:
    return [("webhooks", Dispatcher(db, settings, resolver=resolver).run_forever)]
