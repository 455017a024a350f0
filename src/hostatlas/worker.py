"""The background worker: one loop of jobs, the database as the queue.

Each job (listed in ``hostatlas.jobs``) is a function ``(Database, Settings, now) -> int`` that does
one bounded step and returns how much it did; the loop calls every job once per tick. Jobs claim
their rows with conditional updates or ``FOR UPDATE SKIP LOCKED``, so several workers can run at once.
``run_once`` is what tests call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.pipelines.health import PipelineHealth
from hostatlas.pipelines.quarantine import describe
from hostatlas.settings import Settings
from hostatlas.signals import set_on_signals

log = structlog.get_logger(__name__)

Job = Callable[[Database, Settings, datetime], int]
# A long-running loop (the webhook dispatcher) that runs in a thread of its own until the event is set.
Loop = Callable[[threading.Event], None]

class Worker:
    def __init__(self, db: Database, settings: Settings, jobs: list[tuple[str, Job]],
                 loops: Sequence[tuple[str, Loop]] = (), *, health: PipelineHealth | None = None) -> None:
        self.db = db
        self.settings = settings
        self.jobs = jobs
        self.loops = loops
        self.health = health or PipelineHealth()
        self.stopping = threading.Event()

    def run_once(self, now: datetime | None = None) -> dict[str, int]:
        """Run every job once; a failing job is logged and does not stop the others.

        Each job reports to the health registry as ``job:<name>``. A job raises only when it could do
        nothing (the database is down): jobs set aside the rows that fail alone (``pipelines.isolation``).
        """
        done: dict[str, int] = {}
        for name, job in self.jobs:
            try:
                done[name] = job(self.db, self.settings, now or utcnow())
            except Exception as exc:
                log.exception("job_failed", job=name)
                self.health.failed(f"job:{name}", describe(exc))
                done[name] = -1
            else:
                self.health.succeeded(f"job:{name}")
        return done

    def run_forever(self) -> None:
        log.info("worker_started", jobs=[name for name, _ in self.jobs], tick=self.settings.worker_tick)
        threads = [threading.Thread(target=loop, args=(self.stopping,), name=f"hostatlas-{name}", daemon=True)
                   for name, loop in self.loops]
        for thread in threads:
            thread.start()
        while not self.stopping.is_set():
            self.run_once()
            self.stopping.wait(self.settings.worker_tick)
        log.info("worker_stopping")
        for thread in threads:
            thread.join(timeout=30)
        log.info("worker_stopped")

    def stop_on_signals(self) -> None:
        # Nothing but the flag, and set from another thread (hostatlas.signals): a handler runs between two
        # bytecodes of the main thread, which may hold structlog's write lock or the event's own lock.
        set_on_signals(self.stopping)
