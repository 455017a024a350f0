"""The retry rule: what an attempt's answer makes of its delivery. Pure: no database, no clock, no randomness.

- a 2xx: the delivery succeeded;
- 410 Gone: it failed for good, and its webhook is to be disabled (the endpoint asked to stop);
- anything else (another status, a redirect, no answer at all) after the last delay of the schedule: failed;
- else: pending again, due after the schedule's next delay with ±10% jitter, or after ``Retry-After`` on a
  429 or 503 (read as seconds or an HTTP date, kept between 1 s and a day).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from hostatlas.outbound import Answer
from hostatlas.webhooks.models import DeliveryStatus

JITTER = 0.1
MAX_RETRY_AFTER_SECONDS = 86_400
# Statuses whose Retry-After is honoured: the endpoint says when it can take the delivery.
RETRY_AFTER_STATUSES = (429, 503)


class Why(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"  # 410: failed, and the webhook is disabled
    EXHAUSTED = "exhausted"  # the last attempt the schedule allows failed
    SCHEDULED = "scheduled"  # retried after the schedule's delay
    RETRY_AFTER = "retry_after"  # retried when the endpoint's Retry-After said


@dataclass(frozen=True)
class NextState:
    """What to store for a delivery after an attempt, and why."""

    status: DeliveryStatus
    why: Why
    next_attempt_at: datetime | None = None  # set while pending
    completed_at: datetime | None = None  # set once succeeded or failed

    @property
    def disables_webhook(self) -> bool:
        return self.why is Why.GONE


def next_state(answer: Answer | None, attempt_number: int, schedule: Sequence[float], now: datetime, *,
               draw: float = 0.5) -> NextState:
    """The delivery's state after its ``attempt_number``-th attempt (1 for the first) got ``answer`` (None when
    none came: a timeout, a refused connection, a TLS or DNS error, a blocked address).

    ``schedule`` holds the delay before each retry, so a delivery gets ``len(schedule) + 1`` attempts in all.
    ``draw``, uniform in [0, 1), sets the jitter: 0 is -10%, 0.5 none, 1 +10%.
    """
    status = answer.status if answer is not None else None
    if status is not None and 200 <= status < 300:
        return NextState(DeliveryStatus.SUCCEEDED, Why.DELIVERED, completed_at=now)
    if status == 410:
        return NextState(DeliveryStatus.FAILED, Why.GONE, completed_at=now)
    if attempt_number > len(schedule):
        return NextState(DeliveryStatus.FAILED, Why.EXHAUSTED, completed_at=now)
    if answer is not None and answer.status in RETRY_AFTER_STATUSES:
        asked = retry_after_seconds(answer.retry_after, now)
        if asked is not None:
            return NextState(DeliveryStatus.PENDING, Why.RETRY_AFTER, next_attempt_at=now + timedelta(seconds=asked))
    delay = schedule[attempt_number - 1] * (1 + JITTER * (2 * draw - 1))
    return NextState(DeliveryStatus.PENDING, Why.SCHEDULED, next_attempt_at=now + timedelta(seconds=delay))


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header as seconds from ``now`` (between 1 and a day); None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        seconds = float(value.strip())
    else:
        try:
            seconds = (parsedate_to_datetime(value) - now).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_SECONDS)
