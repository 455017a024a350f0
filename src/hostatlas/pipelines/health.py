"""How each in-process pipeline is doing: when it last succeeded, since when it has been failing.

A pipeline (the check-in flush, the key-usage flush, the webhook fan-out...) reports every pass;
``/readyz`` calls a pipeline stuck once it has failed for longer than ``HOSTATLAS_READY_STUCK_AFTER``
seconds without a success in between, and ``/metrics`` exports the counters. The app builds one registry and hands it to
each pipeline it runs; pipelines run in threads of their own, so it is locked. Time is ``time.monotonic()``:
durations only, never a wall-clock reading.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class PipelineState:
    name: str
    successes: int = 0
    failures: int = 0
    # monotonic time of the first failure since the last success; None while healthy
    failing_since: float | None = None
    last_error: str | None = None

    def failing_for(self, now: float) -> float:
        return 0.0 if self.failing_since is None else now - self.failing_since


class PipelineHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, PipelineState] = {}

    def _state(self, name: str) -> PipelineState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = PipelineState(name)
        return state

    def succeeded(self, name: str) -> None:
        with self._lock:
            state = self._state(name)
            state.successes += 1
            state.failing_since = None
            state.last_error = None

    def failed(self, name: str, error: str) -> None:
        with self._lock:
            state = self._state(name)
            state.failures += 1
            if state.failing_since is None:
                state.failing_since = time.monotonic()
            state.last_error = error

    def snapshot(self) -> list[PipelineState]:
        with self._lock:
            return [PipelineState(**vars(state)) for state in self._states.values()]

    def stuck(self, threshold: float, now: float | None = None) -> list[PipelineState]:
        moment = time.monotonic() if now is None else now
        return [state for state in self.snapshot() if state.failing_since is not None
                and state.failing_for(moment) >= threshold]

