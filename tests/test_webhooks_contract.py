"""The published webhook contract (``webhooks.payloads``): the platform really emits every catalogued event, through
the API, the agent API and the worker's jobs, to a receiver on loopback; each body and its headers must be what the
served OpenAPI document's ``webhooks`` section says, and nothing may be emitted that the document lacks."""

from __future__ import annotations

import ast
import asyncio
import copy
import hashlib
import hmac
import importlib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import orjson
import pytest
from fastapi.testclient import TestClient

import hostatlas
from hostatlas.app import create_app
from hostatlas.clock import isoformat_z, utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.http import runtime
from hostatlas.inventory.discovery import KINDS
from hostatlas.jobs import periodic
from hostatlas.servers.checkins import CheckinBuffer
from hostatlas.settings import Settings
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.webhooks.dispatcher import Dispatcher
from hostatlas.webhooks.payloads import CATALOGUE, InventoryKind
from hostatlas.webhooks.service import TEST_EVENT
from hostatlas.worker import Worker
from tests.heartbeat_rows import make_heartbeat, ping
from tests.receiver import Received, receiver
from tests.support import SEED_SNAPSHOT, Story, bearer, enrol


@pytest.fixture
def open_settings(settings: Settings) -> Settings:
    """Webhooks may target loopback, where the test receiver listens."""
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture
def open_client(db: Database, open_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(open_settings, db=db)) as test_client:
        yield test_client


def _emit_every_event(client: TestClient, db: Database, settings: Settings, story: Story, webhook_id: int) -> None:
    """Make the platform emit each event the way it happens in production: through the API, the agent API and the
    worker's jobs, with the clock moved forward where a job must find something overdue."""
    admin = bearer(story.admin_a)
    worker = Worker(db, settings, periodic())
    start = utcnow()
    server_id, token = enrol(client, story.admin_a)  # server.registered
    # A certificate 29 days from expiry (its domains are covered by it): ssl.expiring (30 days) at the next tick.
    expiring = copy.deepcopy(SEED_SNAPSHOT)
    not_after = start + timedelta(days=29, hours=12)
    expiring["certificates"][0]["not_after"] = isoformat_z(not_after)
    for domain in expiring["domains"]:
        domain["ssl_expiry"] = not_after.date().isoformat()
    discovered = client.post("/api/v1/agent/discovery", headers=bearer(token), json=expiring)
    assert discovered.status_code == 200, discovered.text  # inventory.changed
    assert worker.run_once(start)["certwatch.expiry"] == 1  # ssl.expiring
    _fire_and_resolve_an_alert(client, worker, admin, token)  # alert.triggered, alert.resolved (+ their incident)
    # A crash report opens an incident (incident.created) and its resolution resolves it (incident.resolved).
    crash = {"key": "nginx-1", "service": "nginx", "title": "nginx process stopped", "severity": "critical",
             "logs": ["[emerg] bind() to 0.0.0.0:80 failed"], "metrics": {"cpu.percent": 3.5}, "state": {"load.1": 0.4}}
    assert client.post("/api/v1/agent/incidents", headers=bearer(token), json=crash).status_code == 201
    resolved = client.post("/api/v1/agent/incidents", headers=bearer(token), json={**crash, "resolved": True})
    assert resolved.status_code == 200, resolved.text
    # A person's incident: created, acknowledged, resolved, reopened.
    manual = client.post("/api/v1/incidents", headers=admin, json={"title": "Disk replaced", "severity": "info"})
    assert manual.status_code == 201, manual.text
    for action in ("acknowledge", "resolve", "reopen"):
        done = client.post(f"/api/v1/incidents/{manual.json()['id']}/{action}", headers=admin, json={})
        assert done.status_code == 200, done.text
    # server.offline (and the server's incident): the worker's sweep finds it silent for longer than offline_after.
    silent_for = timedelta(seconds=settings.offline_after + settings.flush_interval + 60)
    assert worker.run_once(utcnow() + silent_for)["servers.mark_offline"] == 1
    assert client.post("/api/v1/agent/check-in", headers=bearer(token), json={}).status_code == 200
    runtime.of(client.app).part(CheckinBuffer).flush(db)  # server.online, and its incident resolved
    assert client.delete(f"/api/v1/servers/{server_id}", headers=admin).status_code == 204  # server.deleted
    assert client.post(f"/api/v1/webhooks/{webhook_id}/test", headers=admin).status_code == 202  # webhook.test
    # heartbeat.missed: the worker's sweep finds a heartbeat past due + grace; heartbeat.recovered: its next ping.
    # Each also opens and resolves the heartbeat's incident.
    heartbeat = make_heartbeat(db, story.team_a, now=utcnow(), interval=60, grace=30)
    ping(db, heartbeat, utcnow() - timedelta(seconds=120), public_url=settings.public_url)
    assert worker.run_once(utcnow())["heartbeats.deadlines"] == 1
    ping(db, heartbeat, utcnow(), public_url=settings.public_url)


def _fire_and_resolve_an_alert(client: TestClient, worker: Worker, admin: dict[str, str], token: str) -> None:
    """A CPU rule (>= 90 for 15 s, resolving below 70) over the last value of a 2-minute window: pending, firing,
    unchanged between the two thresholds, then resolved; the worker's evaluations at chosen instants from now."""
    rule = {"name": "CPU hot", "metric": "cpu.percent", "aggregation": "last", "window_s": 120, "operator": ">=",
            "threshold": 90, "for_s": 15, "recovery_threshold": 70, "severity": "warning"}
    created = client.post("/api/v1/alert-rules", headers=admin, json=rule)
    assert created.status_code == 201, created.text
    start = utcnow()  # the rule is due from its creation on
    telemetry = runtime.of(client.app).part(Telemetry)

    def send(value: float, ago: int) -> None:
        series = [{"metric": "cpu.percent", "labels": {}, "points": [[int(start.timestamp()) - ago, value]]}]
        assert client.post("/api/v1/agent/metrics", headers=bearer(token), json={"series": series}).status_code == 200
        telemetry.caught_up()

    def evaluate(after: int) -> int:
        return worker.run_once(start + timedelta(seconds=after))["alerts.evaluate"]

    send(95, ago=60)
    assert evaluate(0) == 1  # ok -> pending
    assert evaluate(15) == 1  # pending for 15 s -> firing: alert.triggered, incident.created
    send(80, ago=30)
    assert evaluate(30) == 0  # between the thresholds: still firing
    send(50, ago=10)
    assert evaluate(45) == 1  # below the recovery threshold: alert.resolved, incident.resolved


def _closed(schema: Any) -> Any:
    """The schema with every object closed to properties it does not list: the test then also fails on a payload
    field the document lacks. (The published document stays open: receivers should ignore fields added later.)"""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _check_against(document: dict[str, Any], request: Received) -> str:
    body = orjson.loads(request.body)
    event = body.get("event")
    assert event in document.get("webhooks", {}), f"{event!r} was emitted but the OpenAPI document lacks it"
    operation = document["webhooks"][event]["post"]
    [(media_type, content)] = operation["requestBody"]["content"].items()
    assert request.headers["content-type"] == media_type
    components = _closed(copy.deepcopy(document["components"]))
    validator = jsonschema_rs.validator_for({**content["schema"], "components": components})
    problems = [f"{error.instance_path}: {error.message}" for error in validator.iter_errors(body)]
    assert not problems, f"{event}: {problems}\n{body}"
    for parameter in operation["parameters"]:
        assert parameter["in"] == "header"
        value = request.headers.get(parameter["name"].lower())
        assert value is not None or not parameter["required"], f"{event}: no {parameter['name']} header"
        if value is not None:
            assert jsonschema_rs.is_valid(parameter["schema"], value), f"{event}: {parameter['name']}: {value!r}"
    return str(event)


def test_every_emitted_event_is_what_the_document_publishes(open_client: TestClient, db: Database,
                                                            open_settings: Settings, story: Story) -> None:
    """Every catalogued event, caused as in production, reaches a real receiver exactly once per cause, signed, its
    body and headers what the served document publishes."""
    client = open_client
    with receiver() as hook:
        created = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": hook.url})
        assert created.status_code == 201, created.text
        _emit_every_event(client, db, open_settings, story, created.json()["id"])
        sent = 0
        # A pass sends at most webhook_per_endpoint deliveries per webhook: pass until nothing is left.
        while passed := asyncio.run(Dispatcher(db, open_settings).run_once()):
            sent += passed
        received = hook.wait_for(sent)
    document = client.get("/api/v1/openapi.json").json()
    emitted = Counter(_check_against(document, request) for request in received)
    assert set(emitted) == set(document["webhooks"]) == set(CATALOGUE)
    # Once per cause: five incidents (a crash report, an alert, a person's, the server's outage, the heartbeat's)
    # were each opened and resolved once; every other event had one cause.
    assert emitted == Counter({event: 1 for event in CATALOGUE}) + Counter({events.INCIDENT_CREATED: 4,
                                                                            events.INCIDENT_RESOLVED: 4})
    incidents = {orjson.loads(request.body)["data"]["id"] for request in received
                 if request.headers["x-hostatlas-event"] == events.INCIDENT_CREATED}
    assert len(incidents) == 5
    for request in received:  # signed with the webhook's secret
        expected = hmac.new(created.json()["secret"].encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-hostatlas-signature"] == f"sha256={expected}"


def test_the_catalogue_names_every_event_but_the_planned_ones() -> None:
    assert set(events.PLANNED_EVENTS) <= set(events.WEBHOOK_EVENTS)
    assert set(CATALOGUE) == set(events.WEBHOOK_EVENTS) - set(events.PLANNED_EVENTS) | {TEST_EVENT}
    assert set(get_args(InventoryKind)) == {kind.plural for kind in KINDS}


def _recorded_types() -> dict[str, str]:
    """Every ``events.record(..., type=...)`` in the platform's code: the type's value, by where it is."""
    found: dict[str, str] = {}
    for path in sorted(Path(hostatlas.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "events":
                [kind] = [keyword.value for keyword in node.keywords if keyword.arg == "type"]
                where = f"{path.name}:{node.lineno}"
                if isinstance(kind, ast.Attribute) and isinstance(kind.value, ast.Name) and kind.value.id == "events":
                    found[where] = getattr(events, kind.attr)
                elif isinstance(kind, ast.Subscript) and isinstance(kind.value, ast.Name):
                    # A type looked up in a module-level mapping of constants (heartbeats.state.ALERT_EVENTS):
                    # every type the mapping holds.
                    module = importlib.import_module(_module_name(path))
                    for key, value in getattr(module, kind.value.id).items():
                        found[f"{where}[{key}]"] = value
                else:
                    assert isinstance(kind, ast.Constant), f"{where}: name the event type with a constant"
                    found[where] = kind.value
    return found


def _module_name(path: Path) -> str:
    relative = path.relative_to(Path(hostatlas.__file__).parent.parent).with_suffix("")
    return ".".join(relative.parts)


def test_every_event_type_the_code_records_is_catalogued() -> None:
    """A new ``events.record`` call (one the test above does not drive yet) must name a catalogued type."""
    recorded = _recorded_types()
    assert recorded, "no events.record call found: has the emitting code moved?"
    assert {where: kind for where, kind in recorded.items() if kind not in CATALOGUE} == {}
    assert set(recorded.values()) == set(CATALOGUE) - {TEST_EVENT}
