"""Webhook secrets and the signature headers of every delivery attempt.

Two schemes, both over the exact body bytes sent:
- ``X-HostAtlas-Signature: sha256=<hex>``: HMAC-SHA256 of the raw body keyed with the secret string
  (``whsec_...``) as UTF-8, the seed's recipe;
- Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64>``): HMAC-SHA256
  of ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded part of the secret after ``whsec_``, so
  stock verifiers (the ``standardwebhooks`` package and its ports) work unchanged.

During a rotation's grace period both the new and the previous secret sign: each header carries both
signatures (``sha256=<new>, sha256=<old>``; ``v1,<new> v1,<old>``), and a receiver holding either
secret verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def hostatlas_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(body: bytes, secret: str, message_id: str, timestamp: int) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(body: bytes, secrets_in_use: Sequence[str], *, delivery_id: str, event: str,
                      timestamp: int) -> dict[str, str]:
    """Every header of one attempt but Content-Type; ``secrets_in_use`` lists the current secret first."""
    return {
        "X-HostAtlas-Signature": ", ".join(hostatlas_signature(body, secret) for secret in secrets_in_use),
        "X-HostAtlas-Delivery": delivery_id,
        "X-HostAtlas-Event": event,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard_signature(body, secret, delivery_id, timestamp)
                                      for secret in secrets_in_use),
    }
