"""Talking to the platform: JSON bodies compressed with zstd, the agent token, and what each answer means.

Every answer is sorted into one of four outcomes, and the rest of the agent only looks at those:
``DELIVERED`` (2xx), ``RETRY`` (no answer, a timeout, 408, 429 or 5xx: the platform is away or busy, so the
batch waits in the spool and goes again, no sooner than ``Retry-After``), ``UNAUTHORIZED`` (401: the token was
revoked; nothing is dropped, sending pauses until the agent is enrolled again) and ``REJECTED`` (any other 4xx:
this batch will never be accepted, so it is set aside and the line moves on)."""

from __future__ import annotations

import enum
import json
import logging
import ssl
import threading
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import zstandard

from hostatlas_agent import __version__

log = logging.getLogger("hostatlas_agent.transport")

API_PREFIX = "/api/v1/agent"
COMPRESS_FROM_BYTES = 512  # below this, zstd's frame costs more than it saves
MAX_RETRY_AFTER = 3600.0


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"


@dataclass
class Answer:
    outcome: Outcome
    status: int | None
    retry_after: float | None = None
    body: Any = None
    detail: str = ""
    etag: str | None = None


def base_url(url: str) -> str:
    """``https://hostatlas.example.com``, whether the user typed it with ``/api/v1`` or a trailing slash."""
    url = url.strip().rstrip("/")
    for suffix in ("/api/v1/agent", "/api/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def compress(body: bytes) -> tuple[bytes, str | None]:
    if len(body) < COMPRESS_FROM_BYTES:
        return body, None
    return zstandard.ZstdCompressor(level=3).compress(body), "zstd"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait, from either form HTTP allows (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        import time

        return min(MAX_RETRY_AFTER, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
    except (TypeError, ValueError, IndexError):
        return None


def classify(response: httpx.Response) -> Answer:
    status = response.status_code
    try:
        body: Any = response.json() if response.content else None
    except ValueError:
        body = None
    detail = _error_text(body) or response.reason_phrase
    if 200 <= status < 300 or status == 304:
        return Answer(Outcome.DELIVERED, status, body=body, etag=response.headers.get("ETag"))
    if status in (408, 429) or status >= 500:
        return Answer(Outcome.RETRY, status, _retry_after(response.headers.get("Retry-After")), body, detail)
    if status == 401:
        return Answer(Outcome.UNAUTHORIZED, status, body=body, detail=detail)
    return Answer(Outcome.REJECTED, status, body=body, detail=detail)


def _error_text(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        fields = "; ".join(f"{f.get('field')}: {f.get('message')}" for f in error.get("fields") or [] if
                           isinstance(f, dict))
        return f"{error.get('code')}: {error.get('message')}" + (f" ({fields})" if fields else "")
    return ""


_TLS: dict[str | None, ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying context per CA file for the whole agent: the host's own trust store by default (so a
    platform behind an internal CA the host already trusts just works), or ``ca_file``. Shared, because each
    context holds its own copy of every CA certificate in memory."""
    with _TLS_LOCK:
        if ca_file not in _TLS:
            _TLS[ca_file] = ssl.create_default_context(cafile=ca_file)
        return _TLS[ca_file]


class Platform:
    """One HTTP client for the agent's whole life (keep-alive), with the agent token on every call."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0, ca_file: str | None = None) -> None:
        self.url = base_url(url)
        headers = {"User-Agent": f"hostatlas-agent/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                    verify=tls_context(ca_file))

    def close(self) -> None:
        self._client.close()

    def post(self, endpoint: str, body: bytes, *, already_compressed: str | None = None) -> Answer:
        """POST a JSON body (bytes; compressed here unless it already is) to ``/api/v1/agent/<endpoint>``."""
        encoding = already_compressed
        if encoding is None:
            body, encoding = compress(body)
        headers = {"Content-Type": "application/json"}
        if encoding:
            headers["Content-Encoding"] = encoding
        return self._send("POST", f"{API_PREFIX}/{endpoint}", content=body, headers=headers)

    def post_json(self, endpoint: str, payload: Any) -> Answer:
        return self.post(endpoint, encode(payload))

    def get_config(self, etag: str | None) -> Answer:
        headers = {"If-None-Match": etag} if etag else {}
        return self._send("GET", f"{API_PREFIX}/config", headers=headers)

    def register(self, api_key: str, facts: dict[str, Any]) -> Answer:
        """``register`` is the one call made with an API key instead of the agent token."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        return self._send("POST", f"{API_PREFIX}/register", content=encode(facts), headers=headers)

    def _send(self, method: str, path: str, **kwargs: Any) -> Answer:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(Outcome.RETRY, None, detail=f"{type(exc).__name__}: {exc}")
        answer = classify(response)
        if answer.outcome is not Outcome.DELIVERED:
            log.debug("%s %s -> %s %s", method, path, answer.status, answer.detail)
        return answer
