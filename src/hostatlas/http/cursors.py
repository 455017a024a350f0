"""The one cursor codec: an opaque, URL-safe token around a small JSON value (a list's position).

A cursor is not signed: whoever decodes one must validate what it holds as strictly as any other input
(``pagination`` and the log search do), so a forged cursor is a 422, never a wrong query.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


def encode(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode(cursor: str) -> Any:
    """The JSON value inside ``cursor``; ValueError if it is not one of ours (damaged, truncated, made up)."""
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from exc
