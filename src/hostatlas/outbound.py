"""The platform's outbound HTTP (webhooks today): bounded, never redirected, and guarded against SSRF.

A URL a user gives us must not reach into the network the platform runs in (the cloud metadata
service at 169.254.169.254, a database on 10.0.0.5, the platform itself on 127.0.0.1). Checking the
name when the webhook is created is not enough: DNS can answer differently later (rebinding). So at
every request the host is resolved here, every address checked, and the connection made to the
checked address itself (the URL's host is replaced by it; ``Host`` and TLS SNI keep the name, so
virtual hosts and certificates still work). ``HOSTATLAS_WEBHOOK_ALLOW_PRIVATE=true`` lifts the guard
for installs whose receivers are internal.

Bounds: connect and read timeouts, redirects not followed (a 3xx is just a non-2xx answer), and at most
``max_response_bytes`` of the answer read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# host, port -> the addresses it resolves to (blocking; called in a thread). Replaceable because DNS
# answers changing between two lookups is a fault tests cannot cause otherwise.
Resolver = Callable[[str, int], list[str]]
MAX_CLIENTS = 512


class OutboundError(Exception):
    """A request that got no HTTP answer: ``kind`` is one of the attempt log's error kinds."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # at most max_response_bytes
    duration_ms: int
    retry_after: str | None = None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def blocked(address: str) -> bool:
    """Whether an address is internal: loopback, private, link-local, multicast, reserved, unspecified..."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def url_problem(url: str) -> str | None:
    """What is wrong with a webhook URL's shape, if anything (its addresses are checked separately)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL would be stored and logged; verify the signature instead"
    return None


class Outbound:
    def __init__(self, *, allow_private: bool, connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 max_response_bytes: int = 64 * 1024, resolver: Resolver = system_resolver,
                 connections_per_host: int = 16) -> None:
        self.allow_private = allow_private
        self.max_response_bytes = max_response_bytes
        self.resolver = resolver
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._limits = httpx.Limits(max_connections=connections_per_host,
                                    max_keepalive_connections=connections_per_host)
        # One client (and connection pool) per scheme, host name and port: connections go to an address,
        # and reusing one opened for another name would present the wrong SNI; and one endpoint's slow
        # answers must not use up the connections of another on the same host.
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()

    async def check_host(self, host: str, port: int) -> str:
        """The address to connect to; OutboundError if the name does not resolve or any address is internal."""
        addresses = [host] if _is_address(host) else await asyncio.to_thread(_resolve, self.resolver, host, port)
        problem = _address_problem(host, addresses, self.allow_private)
        if problem:
            raise OutboundError(*problem)
        return addresses[0]

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        parts = httpx.URL(url)
        host, port = parts.host, parts.port or (443 if parts.scheme == "https" else 80)
        address = await self.check_host(host, port)
        target = parts.copy_with(host=address)
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        request_headers = {**headers, "Host": parts.netloc.decode("ascii")}
        started = time.perf_counter()
        try:
            client = self._client(f"{parts.scheme}://{host}:{port}")
            async with client.stream("POST", target, content=body, headers=request_headers,
                                     extensions=extensions) as response:
                received = bytearray()
                async for chunk in response.aiter_raw():
                    received += chunk
                    if len(received) > self.max_response_bytes:
                        break
        except httpx.TimeoutException as exc:
            raise OutboundError("timeout", _describe(exc) or "timed out") from None
        except httpx.ConnectError as exc:
            raise _connect_error(exc) from None
        except httpx.HTTPError as exc:
            raise OutboundError("connection_error", _describe(exc)) from None
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Answer(response.status_code, bytes(received[: self.max_response_bytes]), duration_ms,
                      response.headers.get("retry-after"))

    def _client(self, origin: str) -> httpx.AsyncClient:
        client = self._clients.get(origin)
        if client is None:
            client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, follow_redirects=False,
                                       trust_env=False)
            self._clients[origin] = client
            if len(self._clients) > MAX_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                asyncio.get_running_loop().create_task(oldest.aclose())
        else:
            self._clients.move_to_end(origin)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:500]


def _connect_error(exc: httpx.ConnectError) -> OutboundError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return OutboundError("tls", _describe(cause))
        if isinstance(cause, ConnectionRefusedError):
            return OutboundError("connection_refused", "connection refused")
        cause = cause.__cause__ or cause.__context__
    text = _describe(exc)
    if "refused" in text.lower():
        return OutboundError("connection_refused", "connection refused")
    if "ssl" in text.lower() or "certificate" in text.lower():
        return OutboundError("tls", text)
    return OutboundError("connection_error", text)


def destination_problem(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> str | None:
    """Why a URL may not be a webhook destination, checked when it is saved (and again at every request)."""
    problem = url_problem(url)
    if problem:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    addresses = [host] if _is_address(host) else _resolve(resolver, host, parts.port or 443)
    found = _address_problem(host, addresses, allow_private)
    return found[1] if found else None


def _resolve(resolver: Resolver, host: str, port: int) -> list[str]:
    try:
        return resolver(host, port)
    except (OSError, UnicodeError):
        return []


def _address_problem(host: str, addresses: list[str], allow_private: bool) -> tuple[str, str] | None:
    """(error kind, message) when the name resolved to nothing or to any internal address."""
    if not addresses:
        return "dns", f"{host} does not resolve"
    if not allow_private:
        bad = [address for address in addresses if blocked(address)]
        if bad:
            return "blocked_address", f"{host} resolves to the internal address {bad[0]}; internal destinations " \
                                      "are refused"
    return None
