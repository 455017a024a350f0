"""Real `hostatlas worker` processes sharing the delivery queue: no double delivery, and a killed worker's
claimed delivery is completed by another once its lease expires."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
from sqlalchemy import select

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.events import service as events
from hostatlas.webhooks import service
from hostatlas.webhooks.models import WebhookDelivery
from tests.receiver import Received, Reply, receiver
from tests.support import Story, hostatlas_command, wait_until


def _worker(tmp_path: Path, database_url: str, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true",
            "HOSTATLAS_WORKER_TICK": "0.2", "PYTHONFAULTHANDLER": "1", **env}
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - the process holds it
    return subprocess.Popen([*hostatlas_command(), "worker"], cwd=tmp_path, env=full, stdout=log,
                            stderr=subprocess.STDOUT)


def _stop(workers: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """SIGTERM, and each must exit cleanly; one that hangs is aborted so its threads' stacks reach its log."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: dumps every thread's stack
            worker.wait(timeout=10)
            raise AssertionError("a worker did not stop within 30 s of SIGTERM:\n" + _logs(tmp_path)) from None
        assert code == 0, _logs(tmp_path)


def _wait_until_started(tmp_path: Path, count: int, timeout: float = 60) -> None:
    """Both workers must be running before the queue is judged shared: a loaded machine can take seconds to
    start one, and a SIGTERM that arrives before its handler is installed kills it (exit -15)."""
    def started() -> bool:
        return sum("worker_started" in path.read_text() for path in tmp_path.glob("worker-*.log")) >= count

    try:
        wait_until(started, timeout=timeout, interval=0.05, what=f"{count} workers to start")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n" + _logs(tmp_path)) from None


def _wait_for_statuses(db: Database, expected: Counter[str], timeout: float) -> None:
    """Until the deliveries are all as expected; the assertion after it, with the workers' logs, says what they
    were if not."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: _statuses(db) == expected, timeout=timeout, interval=0.1, what=str(expected))


def _logs(tmp_path: Path) -> str:
    return "\n".join(path.read_text()[-8000:] for path in sorted(tmp_path.glob("worker-*.log")))


def _statuses(db: Database) -> Counter[str]:
    with db.session(write=False) as session:
        return Counter(session.scalars(select(WebhookDelivery.status)))


def _setup(db: Database, team_id: int, url: str, events_count: int) -> None:
    now = utcnow()
    with db.session(write=True) as session:
        service.create_webhook(session, team_id=team_id, url=url, events_=None, description="", now=now,
                               destinations=service.Destinations(allow_private=True))
    with db.session(write=True) as session:
        for number in range(events_count):
            events.record(session, team_id=team_id, type=events.SERVER_OFFLINE, resource_type="server",
                          resource_id=number, payload={"n": number}, at=now, server_id=number)


def test_a_killed_workers_delivery_is_completed_by_another(db: Database, story: Story, database_url: str,
                                                           tmp_path: Path) -> None:
    # The first request hangs (the worker is killed while waiting for the answer); later ones succeed.
    with receiver(Reply(200, delay=30.0), default=Reply(200)) as hook:
        _setup(db, story.team_a, hook.url, 1)
        first = _worker(tmp_path, database_url, HOSTATLAS_WEBHOOK_LEASE_SECONDS="2")
        try:
            hook.wait_for(1, timeout=20)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert _statuses(db) == Counter({"pending": 1})
        second = _worker(tmp_path, database_url, HOSTATLAS_WEBHOOK_LEASE_SECONDS="2")
        try:
            _wait_for_statuses(db, Counter({"succeeded": 1}), timeout=20)
        finally:
            _stop([second], tmp_path)
        assert _statuses(db) == Counter({"succeeded": 1}), _logs(tmp_path)
        requests = hook.requests
    # Delivered again after the lease ran out: the duplicate carries the same delivery_id.
    assert len(requests) == 2
    ids = {orjson.loads(request.body)["delivery_id"] for request in requests}
    assert len(ids) == 1 and {request.headers["x-hostatlas-delivery"] for request in requests} == ids


def test_two_workers_share_the_queue_without_double_delivery(db: Database, story: Story, database_url: str,
                                                             tmp_path: Path) -> None:
    def slow(_: Received) -> Reply:
        return Reply(200, delay=0.01)

    with receiver(default=slow) as hook:
        _setup(db, story.team_a, hook.url, 300)
        workers = [_worker(tmp_path, database_url, HOSTATLAS_WEBHOOK_CONCURRENCY="8") for _ in range(2)]
        try:
            _wait_until_started(tmp_path, 2)
            _wait_for_statuses(db, Counter({"succeeded": 300}), timeout=60)
        finally:
            _stop(workers, tmp_path)
        assert _statuses(db) == Counter({"succeeded": 300}), _logs(tmp_path)
        delivered = Counter(orjson.loads(request.body)["delivery_id"] for request in hook.requests)
    assert len(delivered) == 300 and set(delivered.values()) == {1}
