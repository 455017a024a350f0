"""Every background job, in the order the worker runs them each tick, and the worker's long-running loops."""

from hostatlas.apikeys import usage
from hostatlas.db.engine import Database
from hostatlas.outbound import Resolver, system_resolver
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.pipelines.quarantine import Replayer
from hostatlas.servers import checkins
from hostatlas.servers.jobs import OFFLINE_EVENTS, mark_offline, replay_offline_event
from hostatlas.settings import Settings
from hostatlas.telemetry import quarantine as telemetry_quarantine
from hostatlas.telemetry.jobs import enforce_retention
from hostatlas.telemetry.quarantine import FrameReplayer
from hostatlas.webhooks import dispatcher, fanout
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.jobs import prune_delivery_log
from hostatlas.worker import Job, Loop

ALL: list[tuple[str, Job]] = [
    ("servers.mark_offline", mark_offline),
    ("telemetry.retention", enforce_retention),
    ("webhooks.log_retention", prune_delivery_log),
]


def loops(db: Database, settings: Settings, resolver: Resolver = system_resolver,
          health: PipelineHealth | None = None) -> list[tuple[str, Loop]]:
    return [("webhooks", Dispatcher(db, settings, resolver=resolver, health=health).run_forever)]


def replayers(db: Database, settings: Settings) -> dict[str, Replayer]:
    """How each pipeline tries one of its quarantined items again (``hostatlas quarantine replay``)."""
    return {checkins.PIPELINE: checkins.replay, OFFLINE_EVENTS: replay_offline_event,
            usage.PIPELINE: usage.replay, fanout.FAN_OUT: fanout.replay_fan_out,
            dispatcher.DELIVERY: dispatcher.replay_delivery,
            **{pipeline: FrameReplayer(settings) for pipeline in telemetry_quarantine.PIPELINES.values()}}
