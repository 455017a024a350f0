"""The retry rule (``webhooks.retries.next_state``) on its own: no database, no receiver, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hostatlas.outbound import Answer
from hostatlas.webhooks.models import DeliveryStatus
from hostatlas.webhooks.retries import MAX_RETRY_AFTER_SECONDS, NextState, Why, next_state, retry_after_seconds

NOW = datetime(2026, 3, 21, 14, 37, 22, tzinfo=UTC)
SCHEDULE = (60.0, 300.0, 1800.0, 10800.0, 73440.0)
PENDING, SUCCEEDED, FAILED = DeliveryStatus.PENDING, DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED


def answer(status: int, retry_after: str | None = None) -> Answer:
    return Answer(status, b"", 12, retry_after)


def retry_in(seconds: float, why: Why = Why.SCHEDULED) -> NextState:
    return NextState(PENDING, why, next_attempt_at=NOW + timedelta(seconds=seconds))


def done(status: DeliveryStatus, why: Why) -> NextState:
    return NextState(status, why, completed_at=NOW)


CASES = [
    # (what happened, the answer, attempt number, expected)
    ("200 on the first attempt", answer(200), 1, done(SUCCEEDED, Why.DELIVERED)),
    ("204 is a 2xx", answer(204), 3, done(SUCCEEDED, Why.DELIVERED)),
    ("299 is a 2xx", answer(299), 1, done(SUCCEEDED, Why.DELIVERED)),
    ("a 2xx on the last attempt still succeeds", answer(200), 6, done(SUCCEEDED, Why.DELIVERED)),
    ("500: the first delay", answer(500), 1, retry_in(60)),
    ("500 on the second attempt: the second delay", answer(500), 2, retry_in(300)),
    ("500 on the fifth attempt: the last delay", answer(500), 5, retry_in(73440)),
    ("500 on the sixth attempt: no retry left", answer(500), 6, done(FAILED, Why.EXHAUSTED)),
    ("a redirect is a failure, not followed", answer(302), 1, retry_in(60)),
    ("199 is not a 2xx", answer(199), 1, retry_in(60)),
    ("300 is not a 2xx", answer(300), 2, retry_in(300)),
    ("404 is retried like any status", answer(404), 1, retry_in(60)),
    ("no answer (timeout, refused, TLS, DNS, blocked)", None, 1, retry_in(60)),
    ("no answer on the last attempt", None, 6, done(FAILED, Why.EXHAUSTED)),
    ("410 fails at once and disables", answer(410), 1, done(FAILED, Why.GONE)),
    ("410 on the last attempt is gone, not exhausted", answer(410), 6, done(FAILED, Why.GONE)),
    ("429 with Retry-After in seconds", answer(429, "7"), 1, retry_in(7, Why.RETRY_AFTER)),
    ("503 with Retry-After in seconds", answer(503, " 120 "), 2, retry_in(120, Why.RETRY_AFTER)),
    ("503 with Retry-After as an HTTP date", answer(503, "Sat, 21 Mar 2026 14:47:22 GMT"), 1,
     retry_in(600, Why.RETRY_AFTER)),
    ("Retry-After 0 waits a second", answer(429, "0"), 1, retry_in(1, Why.RETRY_AFTER)),
    ("a Retry-After date in the past waits a second", answer(429, "Sat, 21 Mar 2026 14:00:00 GMT"), 1,
     retry_in(1, Why.RETRY_AFTER)),
    ("Retry-After is capped at a day", answer(503, "999999"), 1,
     retry_in(MAX_RETRY_AFTER_SECONDS, Why.RETRY_AFTER)),
    ("429 without Retry-After: the schedule", answer(429), 1, retry_in(60)),
    ("an unreadable Retry-After: the schedule", answer(429, "soon"), 3, retry_in(1800)),
    ("Retry-After on a 500 is not honoured", answer(500, "7"), 1, retry_in(60)),
    ("Retry-After on the last attempt: failed anyway", answer(429, "7"), 6, done(FAILED, Why.EXHAUSTED)),
]


@pytest.mark.parametrize(("result", "number", "expected"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_next_state(result: Answer | None, number: int, expected: NextState) -> None:
    assert next_state(result, number, SCHEDULE, NOW) == expected


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.9), (0.25, 0.95), (0.5, 1.0), (1.0, 1.1)])
def test_jitter_is_at_most_ten_percent_either_way(draw: float, factor: float) -> None:
    state = next_state(answer(500), 2, SCHEDULE, NOW, draw=draw)
    assert state.next_attempt_at is not None
    assert (state.next_attempt_at - NOW).total_seconds() == pytest.approx(300 * factor)


def test_jitter_never_moves_a_retry_after() -> None:
    assert next_state(answer(429, "7"), 1, SCHEDULE, NOW, draw=1.0).next_attempt_at == NOW + timedelta(seconds=7)


@pytest.mark.parametrize(("schedule", "number", "expected"), [
    ((), 1, done(FAILED, Why.EXHAUSTED)),  # no retries: one attempt in all
    ((5.0,), 1, retry_in(5)),
    ((5.0,), 2, done(FAILED, Why.EXHAUSTED)),
    ((0.0, 10.0), 1, retry_in(0)),  # a zero delay is due at once
])
def test_schedule_edges(schedule: tuple[float, ...], number: int, expected: NextState) -> None:
    assert next_state(answer(500), number, schedule, NOW) == expected


def test_only_a_410_disables_the_webhook() -> None:
    assert next_state(answer(410), 1, SCHEDULE, NOW).disables_webhook
    for result, number in ((answer(500), 6), (answer(200), 1), (None, 1), (answer(429, "7"), 1)):
        assert not next_state(result, number, SCHEDULE, NOW).disables_webhook


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), ("", None), ("later", None), ("Sat, 21 Mar 2026 14:37:32 -0000", None),  # a naive date
    ("30", 30.0), ("Sat, 21 Mar 2026 14:37:32 GMT", 10.0),
])
def test_retry_after_header(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, NOW) == seconds
