"""The platform's outbound HTTP (webhooks today): bounded, never redirected, and guarded against SSRF.

A URL a user gives us must not reach into the network the platform runs in (the cloud metadata
service at 169.254.169.254, a database on 10.0.0.5, the platform itself on 127.0.0.1). Checking the
name when the webhook is created is not enough: DNS can answer differently later (rebinding). So every
connection is opened to addresses checked for it: a URL naming an address is checked before each
request, and a host name is resolved through ``GuardedResolver`` whenever a connection is opened (never
from a cache), which refuses the name if any of its addresses is internal. A kept-alive connection goes
on to the address checked when it was opened. The URL keeps its host name, so ``Host``, TLS SNI,
certificate checks and connection pooling all stay per name. ``HOSTATLAS_WEBHOOK_ALLOW_PRIVATE=true``
lifts the guard for installs whose receivers are internal.

Bounds: connect and read timeouts (and their sum for the whole request), redirects not followed (a
3xx is just a non-2xx answer), at most ``max_response_bytes`` of the answer read (undecoded: a
compressed answer is not inflated), and at most ``max_connections`` open. There is no cap per host:
callers bound what they send to one endpoint (the dispatcher, per webhook), and a cap per host would let
one team's slow endpoint hold up another team's endpoint on the same host.

Built on aiohttp rather than httpx: on this project's 2-core reference machine an httpx POST over a
kept-alive connection cost 1.2 ms of CPU alone and 2.9 ms with 64 in flight, aiohttp's 0.36 and 0.17 ms
(``bench/outbound_clients.py``, docs/benchmarks.md) - the difference between a worker that sends
a few hundred webhooks a second and one that sends thousands.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

# host, port -> the addresses it resolves to (blocking; called in a thread). Replaceable because DNS
# answers changing between two lookups is a fault tests cannot cause otherwise.
Resolver = Callable[[str, int], list[str]]


class OutboundError(Exception):
    """A request that got no HTTP answer: ``kind`` is one of the attempt log's error kinds."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class RefusedDestination(OSError):
    """Raised inside aiohttp's connector when a name does not resolve or resolves inside."""

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


# IPv6 ranges whose last 32 bits are an IPv4 address that translators or tunnels reach: IPv4-compatible
# (::/96), NAT64 (64:ff9b::/96, RFC 6052) and IPv4-translated (::ffff:0:0:0/96, RFC 2765).
LAST_32_BITS_IPV4 = tuple(ipaddress.IPv6Network(net) for net in ("::/96", "64:ff9b::/96", "::ffff:0:0:0/96"))
# Local-use NAT64 (RFC 8215): internal by definition, and where it embeds the IPv4 address depends on the
# prefix length each network picks. Python 3.11 still calls it global.
LOCAL_USE_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def blocked(address: str) -> bool:
    """Whether an address is internal: loopback, private, link-local, multicast, reserved, unspecified...

    An IPv6 address embedding an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo, translated) is
    judged by that address too: ``[64:ff9b::7f00:1]`` reaches 127.0.0.1 through a NAT64 gateway.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv4Address):
        return _internal(ip)
    if ip.ipv4_mapped is not None:  # the socket connects to the IPv4 address itself
        return _internal(ip.ipv4_mapped)
    return _internal(ip) or ip in LOCAL_USE_NAT64 or any(_internal(inner) for inner in _embedded_ipv4(ip))


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not ip.is_global or ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded = [*(ip.teredo or ())]  # (server, client), the client's obfuscation undone
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if any(ip in network for network in LAST_32_BITS_IPV4):
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


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


class GuardedResolver(AbstractResolver):
    """aiohttp's name lookups for new connections: the addresses only if none of them is internal."""

    def __init__(self, resolver: Resolver, allow_private: bool) -> None:
        self.resolver = resolver
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await asyncio.to_thread(_resolve, self.resolver, host, port)
        problem = _address_problem(host, addresses, self.allow_private)
        if problem:
            raise RefusedDestination(*problem)
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": socket.IPPROTO_TCP, "flags": socket.AI_NUMERICHOST} for address in addresses]

    async def close(self) -> None:
        return None


class Outbound:
    """Sends POSTs; one per event loop (its connections belong to the loop that opened them)."""

    def __init__(self, *, allow_private: bool, connect_timeout: float = 5.0, read_timeout: float = 10.0,
                 max_response_bytes: int = 64 * 1024, resolver: Resolver = system_resolver,
                 max_connections: int = 256) -> None:
        self.allow_private = allow_private
        self.max_response_bytes = max_response_bytes
        self.resolver = resolver
        self.max_connections = max_connections
        # sock_read alone would let a receiver that trickles a byte every few seconds hold a slot for hours,
        # and `connect` also bounds waiting for a free connection: so every request ends within the two.
        self._timeout = aiohttp.ClientTimeout(total=connect_timeout + read_timeout, connect=connect_timeout,
                                              sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, use_dns_cache=False,
                resolver=GuardedResolver(self.resolver, self.allow_private))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, trust_env=False,
                                                  auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        host = urlsplit(url).hostname or ""
        if _is_address(host):  # aiohttp connects to an address without asking the resolver
            problem = _address_problem(host, [host], self.allow_private)
            if problem:
                raise OutboundError(*problem)
        started = time.perf_counter()
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                received = bytearray()
                async for chunk in response.content.iter_any():
                    received += chunk
                    if len(received) > self.max_response_bytes:
                        break
                status, retry_after = response.status, response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise OutboundError("timeout", _describe(exc) or "timed out") from None
        except aiohttp.ClientConnectorError as exc:
            raise _connect_error(exc) from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise OutboundError("connection_error", _describe(exc)) from None
        duration_ms = round((time.perf_counter() - started) * 1000)
        return Answer(status, bytes(received[: self.max_response_bytes]), duration_ms, retry_after)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:500]


def _connect_error(exc: aiohttp.ClientConnectorError) -> OutboundError:
    cause = exc.os_error
    if isinstance(cause, RefusedDestination):
        return OutboundError(cause.kind, cause.detail)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return OutboundError("dns", _describe(cause))
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
        return OutboundError("tls", _describe(cause))
    if isinstance(cause, ConnectionRefusedError):
        return OutboundError("connection_refused", "connection refused")
    if isinstance(cause, TimeoutError):
        return OutboundError("timeout", "timed out connecting")
    return OutboundError("connection_error", _describe(cause))


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
