"""Webhook deliveries against a real receiver on loopback: signing, retries, routing, the delivery log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
import time_machine
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.settings import Settings
from hostatlas.webhooks import service
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.jobs import prune_delivery_log
from hostatlas.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery
from tests.receiver import Received, Reply, closed_port_url, receiver
from tests.support import Story, wait_until

pytestmark = pytest.mark.long_running(50)

# The receivers listen on loopback; names the tests make up resolve there when a webhook is saved (what they
# resolve to at delivery is each test's own resolver).
LOOPBACK_ALLOWED = service.Destinations(allow_private=True, resolver=lambda host, port: ["127.0.0.1"])
OFFLINE_DATA = {"server": {"id": 47, "hostname": "web-prod-01", "ip_address": "10.0.1.12", "status": "offline",
                           "last_seen_at": "2026-03-21T14:32:01Z"},
                "previous_status": "online", "offline_since": "2026-03-21T14:37:22Z"}


class Clock:
    def __init__(self) -> None:
        self.now = utcnow().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_read_timeout": 2.0})


def _webhook(db: Database, team_id: int, url: str, events_: list[str] | None = None, *, at: datetime) -> Webhook:
    with db.session(write=True) as session:
        webhook = service.create_webhook(session, team_id=team_id, url=url, events_=events_, description="t", now=at,
                                         destinations=LOOPBACK_ALLOWED)
        session.expunge(webhook)
        return webhook


def _event(db: Database, team_id: int, type_: str, at: datetime, data: dict[str, object] | None = None) -> None:
    with db.session(write=True) as session:
        events.record(session, team_id=team_id, type=type_, resource_type="server", resource_id=47,
                      payload=data or OFFLINE_DATA, at=at, server_id=47)


def _deliveries(db: Database, webhook_id: int) -> list[WebhookDelivery]:
    with db.session(write=False) as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                    .order_by(WebhookDelivery.id)))


def _attempts(db: Database, delivery: WebhookDelivery) -> list[WebhookAttempt]:
    with db.session(write=False) as session:
        return list(session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id)
                                    .order_by(WebhookAttempt.number)))


def _pass(dispatcher: Dispatcher, clock: Clock) -> int:
    return asyncio.run(dispatcher.run_once(clock()))


def test_both_signatures_verify_and_a_tampered_body_fails_both(db: Database, story: Story,
                                                               hook_settings: Settings) -> None:
    clock = Clock()
    with receiver() as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        assert _pass(Dispatcher(db, hook_settings, clock=clock), clock) == 1
        [request] = hook.wait_for(1)
    body = orjson.loads(request.body)
    assert body["event"] == "server.offline" and body["data"] == OFFLINE_DATA
    assert body["delivery_id"].startswith("del_") and body["timestamp"].endswith("Z")
    assert request.headers["x-hostatlas-delivery"] == body["delivery_id"] == request.headers["webhook-id"]
    assert request.headers["x-hostatlas-event"] == "server.offline"
    assert request.headers["content-type"] == "application/json"

    def seed_recipe_ok(raw: bytes) -> bool:  # the seed's recipe, verbatim
        expected = "sha256=" + hmac.new(webhook.secret.encode(), raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, request.headers["x-hostatlas-signature"])

    standard = StandardWebhook(webhook.secret)
    assert seed_recipe_ok(request.body)
    assert standard.verify(request.body, request.headers) == body
    tampered = request.body.replace(b"web-prod-01", b"web-prod-02")
    assert not seed_recipe_ok(tampered)
    with pytest.raises(WebhookVerificationError):
        standard.verify(tampered, request.headers)


def test_500_500_200_is_three_attempts_on_schedule_then_succeeded(db: Database, story: Story,
                                                                  hook_settings: Settings) -> None:
    clock = Clock()
    settings = hook_settings.model_copy(update={"webhook_retry_schedule": "60,300,1800,10800,73440"})
    dispatcher = Dispatcher(db, settings, clock=clock, rng=lambda: 0.5)  # jitter 0
    with receiver(Reply(500, b"boom"), Reply(500, b"boom again"), Reply(200, b"thanks")) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        started = clock()
        assert _pass(dispatcher, clock) == 1
        clock.advance(59)
        assert _pass(dispatcher, clock) == 0  # not due yet
        clock.advance(1)
        assert _pass(dispatcher, clock) == 1
        clock.advance(299)
        assert _pass(dispatcher, clock) == 0
        clock.advance(1)
        assert _pass(dispatcher, clock) == 1
        requests = hook.wait_for(3)
    [delivery] = _deliveries(db, webhook.id)
    attempts = _attempts(db, delivery)
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert [a.response_status for a in attempts] == [500, 500, 200]
    assert [a.error for a in attempts] == ["http_status", "http_status", None]
    assert [a.response_body for a in attempts] == ["boom", "boom again", "thanks"]
    assert [(a.started_at - started).total_seconds() for a in attempts] == [0, 60, 360]
    # Every attempt is the same delivery, with the same body.
    assert len({r.headers["x-hostatlas-delivery"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1


def test_jitter_stays_within_ten_percent(db: Database, story: Story, hook_settings: Settings) -> None:
    clock = Clock()
    for rng, factor in ((0.0, 0.9), (1.0, 1.1)):
        with receiver(default=Reply(500)) as hook:
            webhook = _webhook(db, story.team_a, hook.url, at=clock())
            with db.session(write=True) as session:
                service.send_test(session, session.get_one(Webhook, webhook.id), clock())
            _pass(Dispatcher(db, hook_settings, clock=clock, rng=lambda value=rng: value), clock)
        [delivery] = _deliveries(db, webhook.id)
        assert delivery.next_attempt_at == clock() + timedelta(seconds=60 * factor)


def test_receiver_down_is_six_attempts_then_failed(db: Database, story: Story, hook_settings: Settings) -> None:
    clock = Clock()
    dispatcher = Dispatcher(db, hook_settings, clock=clock, rng=lambda: 0.5)
    webhook = _webhook(db, story.team_a, closed_port_url(), at=clock())
    _event(db, story.team_a, events.SERVER_OFFLINE, clock())
    delays = hook_settings.retry_schedule
    assert len(delays) == 5 and sum(delays) == 86_400  # five retries, the last a day after the first try
    for delay in [*delays, None]:
        assert _pass(dispatcher, clock) == 1
        if delay is not None:
            clock.advance(delay)
    clock.advance(10 * 86_400)
    assert _pass(dispatcher, clock) == 0
    [delivery] = _deliveries(db, webhook.id)
    attempts = _attempts(db, delivery)
    assert delivery.status == "failed" and delivery.completed_at is not None
    assert len(attempts) == 6
    assert {a.error for a in attempts} == {"connection_refused"}
    assert all(a.response_status is None and a.error_detail for a in attempts)


def test_only_subscribed_events_reach_a_webhook_and_never_another_teams(db: Database, story: Story,
                                                                        hook_settings: Settings) -> None:
    clock = Clock()
    with receiver() as only_offline, receiver() as everything, receiver() as disabled, receiver() as team_b:
        _webhook(db, story.team_a, only_offline.url, [events.SERVER_OFFLINE], at=clock())
        _webhook(db, story.team_a, everything.url, None, at=clock())
        off = _webhook(db, story.team_a, disabled.url, None, at=clock())
        outsider = _webhook(db, story.team_b, team_b.url, None, at=clock())
        with db.session(write=True) as session:
            service.update_webhook(session, session.get_one(Webhook, off.id), {"enabled": False}, clock(),
                                   LOOPBACK_ALLOWED)
        _event(db, story.team_a, events.SERVER_ONLINE, clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        dispatcher = Dispatcher(db, hook_settings, clock=clock)
        assert _pass(dispatcher, clock) == 3
        assert [orjson.loads(r.body)["event"] for r in only_offline.wait_for(1)] == ["server.offline"]
        assert sorted(orjson.loads(r.body)["event"] for r in everything.wait_for(2)) == [
            "server.offline", "server.online"]
        # The pass is over (every attempt it made was answered and recorded): the other two got no delivery.
        assert _deliveries(db, off.id) == [] and _deliveries(db, outsider.id) == []
        assert disabled.requests == [] and team_b.requests == []
        # Re-enabled: events from then on arrive, the ones it missed do not.
        clock.advance(5)
        with db.session(write=True) as session:
            service.update_webhook(session, session.get_one(Webhook, off.id), {"enabled": True}, clock(),
                                   LOOPBACK_ALLOWED)
        _event(db, story.team_a, events.SERVER_ONLINE, clock())
        assert _pass(dispatcher, clock) == 2
        [request] = disabled.wait_for(1)
        assert orjson.loads(request.body)["event"] == "server.online"
        assert team_b.requests == []


def test_events_committed_out_of_id_order_are_all_delivered(db: Database, story: Story,
                                                            hook_settings: Settings) -> None:
    """An event whose transaction commits after a later id was fanned out is still delivered."""
    clock = Clock()
    with receiver() as hook:
        _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        dispatcher = Dispatcher(db, hook_settings, clock=clock)
        assert dispatcher.fan_out(clock()) == 1
        # A slow transaction's event shows up only now, with any id: it is still undispatched.
        _event(db, story.team_a, events.SERVER_ONLINE, clock())
        assert dispatcher.fan_out(clock()) == 1
        assert dispatcher.fan_out(clock()) == 0
        _pass(dispatcher, clock)
        assert len(hook.wait_for(2)) == 2


def test_410_fails_the_delivery_and_disables_the_webhook(db: Database, story: Story,
                                                         hook_settings: Settings) -> None:
    clock = Clock()
    with receiver(default=Reply(410, b"gone")) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        _pass(Dispatcher(db, hook_settings, clock=clock), clock)
    [delivery] = _deliveries(db, webhook.id)
    with db.session(write=False) as session:
        stored = session.get_one(Webhook, webhook.id)
        assert not stored.enabled and stored.disabled_reason and "410" in stored.disabled_reason
    assert delivery.status == "failed" and delivery.attempts == 1


def test_a_disabled_webhooks_backlog_is_parked_until_it_is_re_enabled(db: Database, story: Story,
                                                                      hook_settings: Settings) -> None:
    clock = Clock()
    settings = hook_settings.model_copy(update={"webhook_per_endpoint": 1, "webhook_concurrency": 1})
    with receiver(Reply(410), default=Reply(200)) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        for _ in range(3):
            _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        dispatcher = Dispatcher(db, settings, clock=clock)
        assert _pass(dispatcher, clock) == 1  # 410: that delivery fails, the webhook is disabled
        parked = [d for d in _deliveries(db, webhook.id) if d.status == "pending"]
        assert len(parked) == 2 and all(d.next_attempt_at is None for d in parked)
        with db.session(write=True) as session:  # a test delivery still goes to a disabled webhook
            test = service.send_test(session, session.get_one(Webhook, webhook.id), clock())
            test_id = test.id
        clock.advance(3600)
        assert _pass(dispatcher, clock) == 1 and _pass(dispatcher, clock) == 0
        assert [d.status for d in _deliveries(db, webhook.id) if d.id == test_id] == ["succeeded"]

        with db.session(write=True) as session:
            service.update_webhook(session, session.get_one(Webhook, webhook.id), {"enabled": True}, clock(),
                                   LOOPBACK_ALLOWED)
        assert all(d.next_attempt_at == clock() for d in _deliveries(db, webhook.id) if d.status == "pending")
        assert _pass(dispatcher, clock) == 1 and _pass(dispatcher, clock) == 1
        assert len(hook.wait_for(4)) == 4
    assert sorted(d.status for d in _deliveries(db, webhook.id)) == ["failed", "succeeded", "succeeded",
                                                                     "succeeded"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(db: Database, story: Story, hook_settings: Settings, status: int) -> None:
    clock = Clock()
    with receiver(Reply(status, headers={"Retry-After": "7"}), Reply(200)) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        dispatcher = Dispatcher(db, hook_settings, clock=clock, rng=lambda: 0.5)
        _pass(dispatcher, clock)
        [delivery] = _deliveries(db, webhook.id)
        assert delivery.next_attempt_at == clock() + timedelta(seconds=7)
        clock.advance(7)
        assert _pass(dispatcher, clock) == 1
        hook.wait_for(2)
    assert _deliveries(db, webhook.id)[0].status == "succeeded"


def test_a_slow_read_is_a_timeout_and_a_big_answer_is_cut(db: Database, story: Story,
                                                          hook_settings: Settings) -> None:
    clock = Clock()
    settings = hook_settings.model_copy(update={"webhook_read_timeout": 0.3})
    with receiver(Reply(200, delay=1.0), Reply(500, b"x" * 200_000)) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        _event(db, story.team_a, events.SERVER_ONLINE, clock())
        assert _pass(Dispatcher(db, settings, clock=clock), clock) == 2
        hook.wait_for(2)
    attempts = sorted((_attempts(db, d)[0] for d in _deliveries(db, webhook.id)), key=lambda a: a.error or "")
    assert [a.error for a in attempts] == ["http_status", "timeout"]
    assert attempts[0].response_status == 500 and attempts[0].response_body == "x" * 2048
    assert attempts[1].response_status is None and attempts[1].error_detail


def test_secret_rotation_signs_with_both_during_grace_then_only_the_new(db: Database, story: Story,
                                                                        hook_settings: Settings) -> None:
    clock = Clock()
    with receiver() as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        old_secret = webhook.secret
        with db.session(write=True) as session:
            rotated = service.rotate_secret(session.get_one(Webhook, webhook.id), grace=timedelta(hours=1),
                                            now=clock())
            new_secret = rotated.secret
        dispatcher = Dispatcher(db, hook_settings, clock=clock)
        with db.session(write=True) as session:
            service.send_test(session, session.get_one(Webhook, webhook.id), clock())
        _pass(dispatcher, clock)
        clock.advance(3601)
        with db.session(write=True) as session:
            service.send_test(session, session.get_one(Webhook, webhook.id), clock())
        _pass(dispatcher, clock)
        during, after = hook.wait_for(2)
    assert new_secret != old_secret
    for secret in (old_secret, new_secret):
        StandardWebhook(secret).verify(during.body, during.headers)
        expected = "sha256=" + hmac.new(secret.encode(), during.body, hashlib.sha256).hexdigest()
        assert expected in during.headers["x-hostatlas-signature"].split(", ")
    # The receiver checks webhook-timestamp against its own clock: be there an hour later too.
    with time_machine.travel(clock.now, tick=False):
        StandardWebhook(new_secret).verify(after.body, after.headers)
        with pytest.raises(WebhookVerificationError):
            StandardWebhook(old_secret).verify(after.body, after.headers)
    assert after.headers["x-hostatlas-signature"] == (
        "sha256=" + hmac.new(new_secret.encode(), after.body, hashlib.sha256).hexdigest())


@pytest.mark.parametrize("same_host", [False, True], ids=["own-hosts", "one-host"])
def test_a_dead_endpoint_never_delays_the_others(db: Database, story: Story, hook_settings: Settings,
                                                 same_host: bool) -> None:
    settings = hook_settings.model_copy(update={"webhook_concurrency": 16, "webhook_per_endpoint": 4,
                                                "webhook_read_timeout": 5.0})
    now = utcnow()

    def by_path(request: Received) -> Reply:
        return Reply(200, delay=3.0) if request.path == "/slow" else Reply(200)

    with receiver(default=by_path) as one, receiver(default=by_path) as other:
        # Two webhooks on one host (another team's endpoint on a shared service, say) or on two.
        slow_url, fast_url = one.url.replace("/hook", "/slow"), (one if same_host else other).url.replace(
            "/hook", "/fast")
        for url in (slow_url, fast_url):
            _webhook(db, story.team_a, url, at=now - timedelta(seconds=1))
        for _ in range(20):
            _event(db, story.team_a, events.SERVER_OFFLINE, now)

        def seen(path: str) -> int:
            return sum(request.path == path for request in [*one.requests, *other.requests])

        stopping = threading.Event()
        dispatcher = Dispatcher(db, settings)
        runner = threading.Thread(target=dispatcher.run_forever, args=(stopping,))
        began = time.monotonic()
        runner.start()
        try:
            wait_until(lambda: seen("/fast") >= 20, timeout=10, interval=0.01, what="20 fast deliveries")
            fast_done = time.monotonic() - began
            # The slow endpoint holds at most 4 attempts at a time, each 3 s: it is still at its first ones.
            assert fast_done < 2.5, fast_done
            assert seen("/slow") <= 4
        finally:
            stopping.set()
            runner.join(timeout=30)


def test_an_untrusted_certificate_is_a_tls_error(db: Database, story: Story, hook_settings: Settings,
                                                 tmp_path: Path) -> None:
    clock = Clock()
    with receiver(tls_dir=tmp_path) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        assert _pass(Dispatcher(db, hook_settings, clock=clock), clock) == 1
        assert hook.requests == []  # the handshake failed: nothing was sent
    [attempt] = _attempts(db, _deliveries(db, webhook.id)[0])
    assert attempt.error == "tls" and "certificate" in (attempt.error_detail or "").lower()
    assert _deliveries(db, webhook.id)[0].status == "pending"  # retried later, like any failure


def test_a_host_name_is_resolved_by_the_guard_and_kept_in_the_host_header(db: Database, story: Story,
                                                                          hook_settings: Settings) -> None:
    clock = Clock()
    looked_up: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"] if host == "hooks.example.test" else []

    with receiver() as hook:
        port = hook.url.split(":")[2].split("/")[0]
        webhook = _webhook(db, story.team_a, f"http://hooks.example.test:{port}/hook", at=clock())
        missing = _webhook(db, story.team_a, "http://nowhere.example.test/hook", at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        assert _pass(Dispatcher(db, hook_settings, clock=clock, resolver=resolver), clock) == 2
        [request] = hook.wait_for(1)
    assert request.headers["host"] == f"hooks.example.test:{port}"
    assert set(looked_up) == {"hooks.example.test", "nowhere.example.test"}
    assert _deliveries(db, webhook.id)[0].status == "succeeded"
    [attempt] = _attempts(db, _deliveries(db, missing.id)[0])
    assert attempt.error == "dns" and "nowhere.example.test" in (attempt.error_detail or "")


def test_finished_deliveries_leave_the_log_after_the_retention_pending_ones_never(
        db: Database, story: Story, hook_settings: Settings) -> None:
    clock = Clock()
    settings = hook_settings.model_copy(update={"webhook_log_retention": 30 * 86_400})
    with receiver(Reply(200), Reply(500)) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        _event(db, story.team_a, events.SERVER_ONLINE, clock())
        assert _pass(Dispatcher(db, settings, clock=clock), clock) == 2
    done, retrying = sorted(_deliveries(db, webhook.id), key=lambda d: d.status, reverse=True)
    assert (done.status, retrying.status) == ("succeeded", "pending")

    assert prune_delivery_log(db, settings, clock.now + timedelta(days=29)) == 0
    assert prune_delivery_log(db, settings, clock.now + timedelta(days=31)) == 1
    assert [d.id for d in _deliveries(db, webhook.id)] == [retrying.id]  # pending: kept, however old
    assert _attempts(db, done) == [] and len(_attempts(db, retrying)) == 1


def test_a_redirect_is_not_followed(db: Database, story: Story, hook_settings: Settings) -> None:
    clock = Clock()
    with receiver() as elsewhere, receiver(Reply(302, headers={"Location": "PLACEHOLDER"})) as hook:
        hook.replies[0].headers["Location"] = elsewhere.url
        webhook = _webhook(db, story.team_a, hook.url, at=clock())
        _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        assert _pass(Dispatcher(db, hook_settings, clock=clock), clock) == 1
        assert len(hook.requests) == 1 and elsewhere.requests == []
    [attempt] = _attempts(db, _deliveries(db, webhook.id)[0])
    assert (attempt.response_status, attempt.error) == (302, "http_status")


def test_a_webhook_deleted_mid_delivery_loses_nothing_of_the_others(db: Database, story: Story,
                                                                    hook_settings: Settings) -> None:
    clock = Clock()
    doomed: list[int] = []

    def delete_doomed_then_answer(request: Received) -> Reply:
        if request.path == "/doomed" and doomed:
            with db.session(write=True) as session:
                service.delete_webhook(session, session.get_one(Webhook, doomed.pop()))
        return Reply(200)

    with receiver(default=delete_doomed_then_answer) as hook:
        kept = _webhook(db, story.team_a, hook.url, at=clock())
        doomed.append(_webhook(db, story.team_a, hook.url.replace("/hook", "/doomed"), at=clock()).id)
        for _ in range(3):
            _event(db, story.team_a, events.SERVER_OFFLINE, clock())
        # One pass: six attempts, recorded together, three of them for deliveries deleted meanwhile.
        assert _pass(Dispatcher(db, hook_settings, clock=clock), clock) == 6
    assert [d.status for d in _deliveries(db, kept.id)] == ["succeeded"] * 3
    assert all(len(_attempts(db, d)) == 1 for d in _deliveries(db, kept.id))
    with db.session(write=False) as session:
        assert session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id != kept.id)).all() == []


def test_one_webhooks_backlog_never_holds_up_another(db: Database, story: Story, hook_settings: Settings) -> None:
    settings = hook_settings.model_copy(update={"webhook_concurrency": 16, "webhook_per_endpoint": 4,
                                                "webhook_read_timeout": 5.0})
    now = utcnow()
    with receiver(default=Reply(200, delay=2.0)) as slow, receiver() as fast:
        _webhook(db, story.team_a, slow.url, at=now - timedelta(seconds=60))
        for _ in range(200):
            _event(db, story.team_a, events.SERVER_OFFLINE, now - timedelta(seconds=30))
        dispatcher = Dispatcher(db, settings)
        dispatcher.fan_out(now - timedelta(seconds=30))  # 200 due for the slow endpoint, older than the rest
        _webhook(db, story.team_a, fast.url, at=now)
        for _ in range(5):
            _event(db, story.team_a, events.SERVER_ONLINE, utcnow())
        stopping = threading.Event()
        runner = threading.Thread(target=dispatcher.run_forever, args=(stopping,))
        began = time.monotonic()
        runner.start()
        try:
            fast.wait_for(5, timeout=10)
            # 200 at 4 at a time and 2 s each would take the slow endpoint 100 s.
            assert time.monotonic() - began < 2.5
            assert len(slow.requests) <= 8
        finally:
            stopping.set()
            runner.join(timeout=30)


def test_a_stopping_dispatcher_gives_back_what_it_claimed_but_did_not_send(db: Database, story: Story,
                                                                            hook_settings: Settings) -> None:
    settings = hook_settings.model_copy(update={"webhook_per_endpoint": 1})
    with receiver(default=Reply(200, delay=0.5)) as hook:
        webhook = _webhook(db, story.team_a, hook.url, at=utcnow() - timedelta(seconds=1))
        for _ in range(4):
            _event(db, story.team_a, events.SERVER_OFFLINE, utcnow())
        stopping = threading.Event()
        runner = threading.Thread(target=Dispatcher(db, settings).run_forever, args=(stopping,))
        runner.start()
        try:
            hook.wait_for(1)  # one in flight, three claimed and queued behind it
        finally:
            stopping.set()
            runner.join(timeout=30)
        assert len(hook.requests) == 1
    deliveries = _deliveries(db, webhook.id)
    assert sorted(d.status for d in deliveries) == ["pending", "pending", "pending", "succeeded"]
    assert all(d.lease_owner is None and d.attempts == 0 for d in deliveries if d.status == "pending")
