"""Delivery-log retention, enforced by the worker: finished deliveries older than
``HOSTATLAS_WEBHOOK_LOG_RETENTION`` go, with their attempts. Pending ones stay whatever their age; a
finished delivery never changes again (redelivering makes a new one)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.webhooks.models import WebhookAttempt, WebhookDelivery

PRUNE_BATCH = 2_000
# Per tick: a first prune of a big log spreads over ticks instead of holding the write lock for long.
PRUNE_MAX_BATCHES = 10


def prune_delivery_log(db: Database, settings: Settings, now: datetime) -> int:
    cutoff = now - timedelta(seconds=settings.webhook_log_retention)
    expired = select(WebhookDelivery.id).where(WebhookDelivery.completed_at < cutoff) \
        .order_by(WebhookDelivery.completed_at).limit(PRUNE_BATCH)
    removed = 0
    for _ in range(PRUNE_MAX_BATCHES):
        # Looked up outside a write transaction: most ticks find nothing and take no write lock.
        with db.session(write=False) as session:
            ids = list(session.scalars(expired))
        if not ids:
            break
        with db.session(write=True) as session:
            session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
        removed += len(ids)
        if len(ids) < PRUNE_BATCH:
            break
    return removed
