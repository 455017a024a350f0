"""Simulated agents for the fault tests, and the one-line report each fault test prints.

An agent here is a thread that keeps posting numbered metric points and log lines, round-robin over the API
nodes it is given, and remembers which numbers were acknowledged (a 2xx answer) and what every answer was,
by the phase of the test it arrived in. Counting the stored rows afterwards against those numbers tells what
was lost (acknowledged, not stored) and what was stored twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field
from pathlib import Path

import httpx

from tests.support import bearer

REPO = Path(__file__).resolve().parent.parent
REPORT_DIR = REPO / "build" / "faults"
METRIC = "fault.seq"
LOG_PREFIX = "faultline"
# Points are dated from here on, one second apart per agent: well inside the accepted age, never in the future.
FIRST_POINT_AGE_S = 6 * 3600


@dataclass
class Phase:
    """The test's current phase, read by every agent when an answer arrives (``before``, ``outage``, ...)."""

    name: str = "before"


@dataclass
class Tally:
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, status or error name)
    acknowledged_points: set[int] = field(default_factory=set)
    acknowledged_lines: set[int] = field(default_factory=set)


class NumberedAgent(threading.Thread):
    """Posts ``per_batch`` numbered points to /agent/metrics and as many lines to /agent/logs every ``interval``
    seconds, alternating between ``nodes``, until ``halt`` is set (and for at most ``max_seconds``)."""

    def __init__(self, server_id: int, token: str, nodes: list[str], phase: Phase, *, per_batch: int = 5,
                 interval: float = 0.25, max_seconds: float = 300.0) -> None:
        super().__init__(daemon=True, name=f"agent-{server_id}")
        self.server_id = server_id
        self.token = token
        self.nodes = nodes
        self.phase = phase
        self.per_batch = per_batch
        self.interval = interval
        self.max_seconds = max_seconds
        self.halt = threading.Event()
        self.tally = Tally()
        self._next_point = 0
        self._next_line = 0
        self._first_ts = int(time.time()) - FIRST_POINT_AGE_S

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        turn = 0
        with httpx.Client(headers=bearer(self.token), timeout=15) as client:
            while not self.halt.is_set() and time.monotonic() < deadline:
                node = self.nodes[turn % len(self.nodes)]
                turn += 1
                self._post_points(client, node)
                self._post_lines(client, node)
                self.halt.wait(self.interval)

    def _post_points(self, client: httpx.Client, node: str) -> None:
        numbers = range(self._next_point, self._next_point + self.per_batch)
        self._next_point += self.per_batch
        points = [[self._first_ts + number, float(number)] for number in numbers]
        body = {"series": [{"metric": METRIC, "labels": {}, "points": points}]}
        if self._post(client, f"{node}/api/v1/agent/metrics", body):
            self.tally.acknowledged_points.update(numbers)

    def _post_lines(self, client: httpx.Client, node: str) -> None:
        numbers = range(self._next_line, self._next_line + self.per_batch)
        self._next_line += self.per_batch
        now = time.time()
        entries = [{"ts": now, "source": "/var/log/fault.log", "line": line_text(self.server_id, number)}
                   for number in numbers]
        if self._post(client, f"{node}/api/v1/agent/logs", {"entries": entries}):
            self.tally.acknowledged_lines.update(numbers)

    def _post(self, client: httpx.Client, url: str, body: object) -> bool:
        try:
            status = str(client.post(url, json=body).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.tally.statuses[(self.phase.name, status)] += 1
        return status.startswith("2")


def line_text(server_id: int, number: int) -> str:
    return f"{LOG_PREFIX} {server_id} {number}"


def parse_line(line: str) -> tuple[int, int]:
    _, server_id, number = line.split()
    return int(server_id), int(number)


@dataclass(frozen=True)
class Count:
    """Acknowledged numbers against stored ones: (server_id, number) pairs, the stored ones with repeats."""

    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    unacknowledged_stored: int  # stored though the agent never saw it acknowledged (its answer was lost)

    def __add__(self, other: Count) -> Count:
        return Count(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other), strict=True)))


def count(acknowledged: set[tuple[int, int]], stored: Iterable[tuple[int, int]]) -> Count:
    seen = Counter(stored)
    return Count(acknowledged=len(acknowledged), stored=sum(seen.values()),
                 lost=len(acknowledged - seen.keys()),
                 duplicated=sum(times - 1 for times in seen.values() if times > 1),
                 unacknowledged_stored=len(seen.keys() - acknowledged))


def statuses_by_phase(agents: Iterable[NumberedAgent]) -> dict[str, Counter[str]]:
    by_phase: dict[str, Counter[str]] = {}
    for agent in agents:
        for (phase, status), times in agent.tally.statuses.items():
            by_phase.setdefault(phase, Counter())[status] += times
    return by_phase


def describe_statuses(by_phase: dict[str, Counter[str]]) -> str:
    """``outage: 200 x812; after: 200 x160`` — every phase, every status, in the order the phases came."""
    return "; ".join(f"{phase}: " + ", ".join(f"{status} x{times}" for status, times in sorted(seen.items()))
                     for phase, seen in by_phase.items())


def report_fault(name: str, saw: str, figures: Count, extra: str = "") -> str:
    """Print the fault's one line (the closing note's fault table is built from these) and keep it in
    build/faults/<name>.txt, since pytest hides a passing test's output unless run with -s."""
    line = (f"FAULT {name}: agents saw {saw}, acknowledged {figures.acknowledged}, stored {figures.stored}, "
            f"lost {figures.lost}, duplicated {figures.duplicated}")
    if figures.unacknowledged_stored:
        line += f", stored without acknowledgement {figures.unacknowledged_stored}"
    if extra:
        line += f"; {extra}"
    print(line)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (REPORT_DIR / f"{name}.txt").write_text(line + "\n")
    return line
