"""``hostatlas-agent run``: every collector on its own schedule, everything they produce through the spool.

One scheduling thread runs the cheap, regular work (check-in, metrics, log polling, the crash watch, the
config pull); discovery, which may run version commands and TLS handshakes, runs in a thread of its own so a
slow host never delays a metric; the sender thread drains the spool. Check-ins and the config pull are sent
directly and never spooled: an old check-in means nothing, and the next one makes up for a lost one."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from hostatlas_agent import __version__, host
from hostatlas_agent.config import AgentConfig
from hostatlas_agent.crash import CrashWatcher
from hostatlas_agent.discovery import Snapshot, take_snapshot
from hostatlas_agent.logs import LogTailer, tail
from hostatlas_agent.metrics import MetricsCollector
from hostatlas_agent.outbox import Sender, Status
from hostatlas_agent.spool import Spool
from hostatlas_agent.state import Credentials, StateDir, write_atomically
from hostatlas_agent.transport import Outcome, Platform, encode

log = logging.getLogger("hostatlas_agent.runner")

STATUS_EVERY = 10.0


class Task:
    """A job due every ``interval()`` seconds; ``due`` is a ``time.monotonic()`` instant."""

    def __init__(self, name: str, interval: Callable[[], float], run: Callable[[], None],
                 enabled: Callable[[], bool] = lambda: True) -> None:
        self.name = name
        self.interval = interval
        self.run = run
        self.enabled = enabled
        self.due = 0.0
        self.last_run = 0.0


class Runner:
    def __init__(self, config: AgentConfig, credentials: Credentials) -> None:
        self.base_config = config
        self.config = config
        self.credentials = credentials
        self.state = StateDir(config.state_dir)
        self.state.ensure()
        self.url = config.url or credentials.url
        self.status = Status()
        self.platform = Platform(self.url, credentials.agent_token, timeout=config.request_timeout,
                                 ca_file=config.ca_file)
        self.spool = Spool(self.state.spool_path, max_bytes=config.spool_max_bytes, max_age=config.spool_max_age)
        self.sender = Sender(Platform(self.url, credentials.agent_token, timeout=config.request_timeout,
                                      ca_file=config.ca_file),
                             self.spool, self.status, max_backoff=config.retry_max_backoff)
        self.metrics = MetricsCollector()
        self.tailer = LogTailer(self.state.offsets_path, config.log_batch_lines, config.log_batch_bytes)
        self.crash = CrashWatcher(config, tail, self.metrics.latest)
        self.started_at = time.time()
        self.config_etag: str | None = None
        self.discovered_log_paths: list[str] = []
        self.last_discovery: dict[str, Any] = {}
        self._sent_fingerprint: str | None = None
        self._sent_at = 0.0
        self._discovery_thread: threading.Thread | None = None
        self._fresh_snapshot: Snapshot | None = None
        self._wake = threading.Event()
        # The local, cheap work first: by the time the platform sees the first check-in, the tailer has
        # already taken its place in every file (what is written after that point is sent).
        self.tasks = [
            Task("logs", lambda: self.config.log_interval, self.send_logs, lambda: self.feature("logs")),
            Task("metrics", lambda: self.config.metrics_interval, self.send_metrics),
            Task("crash", lambda: self.config.crash_interval, self.check_crashes,
                 lambda: self.feature("crash_reports")),
            Task("check-in", lambda: self.config.checkin_interval, self.check_in),
            Task("config", lambda: self.config.config_interval, self.pull_config),
            Task("discovery", lambda: self.config.discovery_interval, self.start_discovery,
                 lambda: self.feature("discovery")),
            Task("status", lambda: STATUS_EVERY, self.save_status),
        ]
        self._apply_remote(self._load_remote_config())

    def feature(self, name: str) -> bool:
        return bool(self.config.features.get(name, True))

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info("hostatlas-agent %s sending to %s as server %s", __version__, self.url, self.credentials.server_id)
        self.sender.start()
        try:
            while not stop.is_set():
                self.run_due(time.monotonic())
                self._take_fresh_snapshot()
                wait = min((t.due for t in self.tasks if t.enabled()), default=time.monotonic() + 1) - time.monotonic()
                self._wake.wait(max(0.05, min(wait, 5.0)))
                self._wake.clear()
        finally:
            stop.set()
            self.sender.stop()
            self.sender.join(timeout=5)
            self.save_status()
            self.platform.close()
            self.sender.platform.close()

    def run_due(self, now: float) -> None:
        for task in self.tasks:
            if not task.enabled() or now < task.due:
                continue
            task.last_run = now
            task.due = now + task.interval()
            try:
                task.run()
            except Exception:  # one failing collector never stops the others
                log.exception("%s failed; it runs again in %.0f s", task.name, task.interval())

    def _reschedule(self) -> None:
        """After a config change: a shorter interval takes effect now, not after the old, longer one."""
        for task in self.tasks:
            task.due = min(task.due, task.last_run + task.interval())
        self._wake.set()

    # --- the tasks ------------------------------------------------------------------------------------------
    def check_in(self) -> None:
        answer = self.platform.post_json("check-in", {"agent_version": __version__, "uptime_s": host.uptime_s(),
                                                      "boot_id": host.boot_id()})
        self._note("check-in", answer)

    def pull_config(self) -> None:
        answer = self.platform.get_config(self.config_etag)
        self._note("config", answer)
        if answer.outcome is not Outcome.DELIVERED or answer.status == 304 or not isinstance(answer.body, dict):
            return
        self.config_etag = answer.etag
        write_atomically(self.state.path / "remote-config.json", encode(answer.body), 0o600)
        if self._apply_remote(answer.body):
            log.info("applied config %s from the platform", answer.body.get("version"))
            self.save_status()

    def send_metrics(self) -> None:
        series = self.metrics.collect(time.time())
        if series:
            self._spool("metrics", {"series": series})

    def send_logs(self) -> None:
        followed = self.tailer.followed()
        try:
            self._send_log_batches()
        finally:
            if self.tailer.followed() != followed:  # status says which files are read, as soon as that changes
                self.save_status()

    def _send_log_batches(self) -> None:
        # A few bounded batches per poll, so a burst drains without waiting a poll interval per batch.
        for _ in range(4):
            batch = self.tailer.poll(time.time())
            if batch is None or not batch.entries:
                return
            self._spool("logs", {"entries": batch.entries})
            batch.commit()  # only once the batch is on disk: a restart neither loses nor repeats lines

    def check_crashes(self) -> None:
        for report in self.crash.check(time.time()):
            self._spool("incidents", report)

    def start_discovery(self) -> None:
        if self._discovery_thread is not None and self._discovery_thread.is_alive():
            return
        config = self.config

        def discover() -> None:
            try:
                self._fresh_snapshot = take_snapshot(config)
            except Exception:
                log.exception("discovery failed; trying again in %.0f s", config.discovery_interval)
            self._wake.set()

        self._discovery_thread = threading.Thread(target=discover, name="hostatlas-agent-discovery", daemon=True)
        self._discovery_thread.start()

    def _take_fresh_snapshot(self) -> None:
        snapshot, self._fresh_snapshot = self._fresh_snapshot, None
        if snapshot is None:
            return
        self.crash.update(snapshot.services)
        if snapshot.log_paths != self.discovered_log_paths:
            self.discovered_log_paths = list(snapshot.log_paths)
            self._set_log_paths()
        fingerprint = snapshot.fingerprint()
        if fingerprint != self._sent_fingerprint or time.time() - self._sent_at >= self.config.discovery_max_age:
            self._spool("discovery", snapshot.payload)
            self._sent_fingerprint, self._sent_at = fingerprint, time.time()
        self.last_discovery = {kind: len(items) for kind, items in snapshot.payload.items()
                               if isinstance(items, list)}

    def save_status(self) -> None:
        self.state.save_status({
            "agent_version": __version__, "pid": os.getpid(), "url": self.url,
            "server_id": self.credentials.server_id, "started_at": self.started_at, "saved_at": time.time(),
            "config_version": self.config_etag, "metrics_interval": self.config.metrics_interval,
            "checkin_interval": self.config.checkin_interval, "features": self.config.features,
            "log_patterns": self.tailer_paths(), "tailed_files": self.tailer.followed(),
            "discovered": self.last_discovery,
            "spool": self.spool.stats(), **self.status.snapshot(),
        })

    # --- helpers --------------------------------------------------------------------------------------------
    def _spool(self, endpoint: str, payload: Any) -> None:
        self.spool.append(endpoint, encode(payload))
        self.sender.wake()

    def _note(self, endpoint: str, answer: Any) -> None:
        if answer.outcome is Outcome.DELIVERED:
            self.status.succeeded(endpoint)
        else:
            self.status.failed(endpoint, answer)

    def tailer_paths(self) -> list[str]:
        paths = list(self.config.log_paths) if self.feature("logs") else []
        return paths + [p for p in self.discovered_log_paths if p not in paths]

    def _set_log_paths(self) -> None:
        self.tailer.set_paths(self.tailer_paths())

    def _load_remote_config(self) -> dict[str, Any]:
        """The last config the platform served, so a restart during an outage keeps the platform's settings."""
        try:
            loaded = json.loads((self.state.path / "remote-config.json").read_text(encoding="utf-8"))
            return loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            return {}

    def _apply_remote(self, remote: dict[str, Any]) -> bool:
        updated = self.base_config.with_remote(remote) if remote else self.base_config
        changed = updated != self.config
        self.config = updated
        self.crash.config = updated
        self._set_log_paths()
        if changed:
            self._reschedule()
        return changed
