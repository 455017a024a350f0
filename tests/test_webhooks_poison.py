"""The webhook dispatcher: an event or an attempt that cannot be written never stops the other teams' deliveries."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
from sqlalchemy import select, text, update

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.events.models import Event
from hostatlas.jobs import replayers
from hostatlas.outbound import Answer
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.settings import Settings
from hostatlas.webhooks import service
from hostatlas.webhooks.dispatcher import AttemptResult, Dispatcher
from hostatlas.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from tests.receiver import Reply, receiver
from tests.support import Story

# orjson (which writes delivery bodies) refuses integers past 64 bits; the JSON column stores them.
TOO_BIG = 2**70


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_read_timeout": 2.0})


def _webhook(db: Database, team_id: int, url: str) -> Webhook:
    with db.session(write=True) as session:
        webhook = service.create_webhook(session, team_id=team_id, url=url, events_=None, description="t",
                                         now=utcnow(), destinations=service.Destinations(allow_private=True))
        session.expunge(webhook)
        return webhook


def _event(db: Database, team_id: int, data: dict[str, object]) -> int:
    with db.session(write=True) as session:
        event = events.record(session, team_id=team_id, type=events.SERVER_OFFLINE, resource_type="server",
                              resource_id=1, payload=data, at=utcnow(), server_id=1)
        session.flush()
        return event.id


def _quarantined(db: Database, pipeline: str) -> list[QuarantinedItem]:
    with db.session(write=False) as session:
        return quarantine.listing(session, pipeline=pipeline)


def _deliveries(db: Database, webhook_id: int) -> list[WebhookDelivery]:
    with db.session(write=False) as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                    .order_by(WebhookDelivery.id)))


@contextmanager
def _running(dispatcher: Dispatcher) -> Iterator[None]:
    stopping = threading.Event()
    thread = threading.Thread(target=dispatcher.run_forever, args=(stopping,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join(timeout=30)


def test_an_event_that_cannot_be_fanned_out_is_set_aside_and_the_others_are_delivered(
        db: Database, story: Story, hook_settings: Settings) -> None:
    health = PipelineHealth()
    with receiver() as hook_a, receiver() as hook_b:
        _webhook(db, story.team_a, hook_a.url)
        webhook_b = _webhook(db, story.team_b, hook_b.url)
        poison = _event(db, story.team_b, {"count": TOO_BIG})
        with _running(Dispatcher(db, hook_settings, health=health)):
            _event(db, story.team_a, {"team": "a"})
            _event(db, story.team_b, {"team": "b"})
            assert orjson.loads(hook_a.wait_for(1, timeout=5)[0].body)["data"] == {"team": "a"}
            assert orjson.loads(hook_b.wait_for(1, timeout=5)[0].body)["data"] == {"team": "b"}
    [item] = _quarantined(db, "webhooks.fanout")
    assert item.team_id == story.team_b and "64-bit" in item.reason
    assert health.stuck(0) == []
    with db.session(write=False) as session:
        assert session.get_one(Event, poison).dispatched_at is not None  # not claimed again

    assert quarantine.replay(db, item.id, replayers(db, hook_settings), now=utcnow()) is False
    with db.session(write=True) as session:
        session.execute(update(Event).where(Event.id == poison).values(payload={"count": 1}))
    assert quarantine.replay(db, item.id, replayers(db, hook_settings), now=utcnow()) is True
    assert [orjson.loads(d.body)["data"] for d in _deliveries(db, webhook_b.id)] == [{"team": "b"}, {"count": 1}]
    assert _quarantined(db, "webhooks.fanout") == []


def test_an_attempt_that_cannot_be_recorded_sets_its_delivery_aside_and_the_others_are_recorded(
        db: Database, story: Story, hook_settings: Settings) -> None:
    health = PipelineHealth()
    dispatcher = Dispatcher(db, hook_settings, health=health)
    webhook_a = _webhook(db, story.team_a, "http://127.0.0.1:9/a")
    webhook_b = _webhook(db, story.team_b, "http://127.0.0.1:9/b")
    _event(db, story.team_a, {"team": "a"})
    _event(db, story.team_b, {"team": "b"})
    assert dispatcher.fan_out() == 2
    claims = sorted(dispatcher.claim(10), key=lambda claimed: claimed.webhook_id != webhook_a.id)
    now = utcnow()
    # A duration no INTEGER column holds: a stand-in for any attempt the database refuses to log.
    dispatcher.record([AttemptResult(claims[0], now, 3, {}, Answer(200, b"thanks", 3), None),
                       AttemptResult(claims[1], now, TOO_BIG, {}, Answer(200, b"thanks", 3), None)], now)

    [recorded] = _deliveries(db, webhook_a.id)
    assert recorded.status == "succeeded" and recorded.attempts == 1
    [aside] = _deliveries(db, webhook_b.id)
    assert aside.status == "failed" and aside.lease_owner is None
    [item] = _quarantined(db, "webhooks.delivery")
    assert item.team_id == story.team_b and ("OverflowError" in item.reason or "DataError" in item.reason)
    assert health.stuck(0) == []

    assert quarantine.replay(db, item.id, replayers(db, hook_settings), now=utcnow()) is True
    with receiver() as hook:
        with db.session(write=True) as session:
            session.execute(update(Webhook).where(Webhook.id == webhook_b.id).values(url=hook.url))
        assert asyncio.run(Dispatcher(db, hook_settings).run_once()) == 1
        assert orjson.loads(hook.wait_for(1)[0].body)["delivery_id"] == aside.delivery_id
    [delivered] = _deliveries(db, webhook_b.id)
    assert delivered.status == "succeeded" and delivered.attempts == 1


def test_a_receiver_answering_with_a_nul_byte_is_recorded(db: Database, story: Story,
                                                          hook_settings: Settings) -> None:
    with receiver(default=Reply(200, b"ok\x00then")) as hook:
        webhook = _webhook(db, story.team_a, hook.url)
        _event(db, story.team_a, {"team": "a"})
        assert asyncio.run(Dispatcher(db, hook_settings).run_once()) == 1
    [delivery] = _deliveries(db, webhook.id)
    with db.session(write=False) as session:
        [attempt] = session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id))
    assert delivery.status == "succeeded" and attempt.response_body == "ok\ufffdthen"


def test_a_webhook_whose_secret_cannot_be_read_never_stops_the_others(db: Database, story: Story,
                                                                     hook_settings: Settings) -> None:
    with receiver() as hook_a, receiver() as hook_b:
        _webhook(db, story.team_a, hook_a.url)
        unreadable = _webhook(db, story.team_b, hook_b.url)
        # Sealed with a platform key the install no longer has (a botched key rotation).
        with db.session(write=True) as session:
            session.execute(text("UPDATE webhooks SET secret = 'gAAAAAnot-a-token' WHERE id = :id"),
                            {"id": unreadable.id})
        _event(db, story.team_a, {"team": "a"})
        _event(db, story.team_b, {"team": "b"})
        assert asyncio.run(Dispatcher(db, hook_settings).run_once()) == 1
        assert orjson.loads(hook_a.wait_for(1)[0].body)["data"] == {"team": "a"}
    assert hook_b.requests == []
    [aside] = _deliveries(db, unreadable.id)
    assert aside.status == "failed" and aside.lease_owner is None
    [item] = _quarantined(db, "webhooks.delivery")
    assert item.team_id == story.team_b and "UnreadableSecret" in item.reason
