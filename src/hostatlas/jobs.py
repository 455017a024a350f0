"""Every background job, in the order the worker runs them each tick, and the worker's long-running loops."""

from dataclasses import replace
from functools import partial

from hostatlas.alerts.evaluate import RuleEvaluation
from hostatlas.apikeys import usage
from hostatlas.certwatch import jobs as certwatch_jobs
from hostatlas.certwatch.jobs import CertificateWatch
from hostatlas.db.engine import Database
from hostatlas.heartbeats import jobs as heartbeat_jobs
from hostatlas.heartbeats import pings
from hostatlas.incidents.outages import OutageIncidents
from hostatlas.inventory.service import server_views
from hostatlas.outbound import Resolver, system_resolver
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.pipelines.quarantine import Replayer
from hostatlas.servers import checkins
from hostatlas.servers.jobs import OFFLINE_EVENTS, mark_offline, replay_offline_event
from hostatlas.servers.views import ServerViews
from hostatlas.settings import Settings
from hostatlas.telemetry.ingest import quarantine as telemetry_quarantine
from hostatlas.telemetry.ingest.quarantine import FrameReplayer
from hostatlas.telemetry.storage.retention import RetentionJob
from hostatlas.webhooks import dispatcher, fanout
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.jobs import prune_delivery_log
from hostatlas.worker import Job, Loop


def composed_server_views() -> ServerViews:
    """How servers are shown and announced, for the app and the worker alike: with what the inventory found on
    them, and with their outages as incidents. Servers import neither, so both are handed in."""
    return replace(server_views(), listener=OutageIncidents())


SERVER_VIEWS = composed_server_views()


def periodic() -> list[tuple[str, Job]]:
    """Every periodic job, in the order the worker runs them each tick: new for each worker, as a job may
    keep state between ticks (the retention job's throttle)."""
    return [
        ("servers.mark_offline", partial(mark_offline, views=SERVER_VIEWS)),
        ("telemetry.retention", RetentionJob()),
        ("webhooks.log_retention", prune_delivery_log),
        ("heartbeats.deadlines", heartbeat_jobs.sweep_deadlines),
        ("heartbeats.ping_retention", heartbeat_jobs.PingLogRetention()),
        ("heartbeats.flip_retention", heartbeat_jobs.prune_flips),
        ("alerts.evaluate", RuleEvaluation()),
        ("certwatch.expiry", CertificateWatch()),
    ]


def loops(db: Database, settings: Settings, resolver: Resolver = system_resolver,
          health: PipelineHealth | None = None) -> list[tuple[str, Loop]]:
    return [("webhooks", Dispatcher(db, settings, resolver=resolver, health=health).run_forever)]


def replayers(db: Database, settings: Settings) -> dict[str, Replayer]:
    """How each pipeline tries one of its quarantined items again (``hostatlas quarantine replay``)."""
    return {checkins.PIPELINE: partial(checkins.replay, views=SERVER_VIEWS),
            OFFLINE_EVENTS: partial(replay_offline_event, views=SERVER_VIEWS),
            usage.PIPELINE: usage.replay, fanout.FAN_OUT: fanout.replay_fan_out,
            dispatcher.DELIVERY: dispatcher.replay_delivery,
            pings.PIPELINE: partial(pings.replay, public_url=settings.public_url),
            heartbeat_jobs.DEADLINES: partial(heartbeat_jobs.replay_deadline, settings=settings),
            certwatch_jobs.PIPELINE: certwatch_jobs.replay,
            **{pipeline: FrameReplayer(settings) for pipeline in telemetry_quarantine.PIPELINES.values()}}
