"""SSRF through IPv6 spellings of internal IPv4 addresses: refused at creation and at delivery."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from hostatlas.http import runtime
from hostatlas.outbound import Outbound, OutboundError, blocked
from hostatlas.webhooks.service import Destinations
from tests.support import Story, assert_envelope, bearer

# Each embeds 127.0.0.1 or 169.254.169.254 (the cloud metadata service).
EMBEDDING_INTERNAL = [
    "::127.0.0.1",                           # IPv4-compatible, ::/96
    "::a9fe:a9fe",
    "64:ff9b::7f00:1",                       # NAT64, 64:ff9b::/96
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::7f00:1",                     # local-use NAT64, 64:ff9b:1::/48
    "64:ff9b:1:a9fe:a9:fe00::",
    "2002:7f00:1::",                         # 6to4, 2002::/16
    "2002:a9fe:a9fe::",
    "::ffff:0:7f00:1",                       # IPv4-translated, ::ffff:0:0:0/96
    "::ffff:0:a9fe:a9fe",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo: public server, client 127.0.0.1 (obfuscated)
    "2001:0:a9fe:a9fe:8000:63bf:3fff:fdd2",  # Teredo: server 169.254.169.254
    "::ffff:127.0.0.1",                      # IPv4-mapped, already refused before
]
# The same forms around a public IPv4 address are not internal for that reason.
EMBEDDING_PUBLIC = ["64:ff9b::808:808", "2002:808:808::", "::ffff:8.8.8.8", "::8.8.8.8", "::ffff:0:808:808"]


@pytest.mark.parametrize("address", EMBEDDING_INTERNAL)
def test_an_address_embedding_an_internal_ipv4_is_blocked(address: str) -> None:
    assert blocked(address)


@pytest.mark.parametrize("address", EMBEDDING_PUBLIC)
def test_an_address_embedding_a_public_ipv4_is_judged_by_it(address: str) -> None:
    assert not blocked(address)


@pytest.mark.parametrize("address", EMBEDDING_INTERNAL)
def test_a_webhook_url_naming_such_an_address_is_refused(client: TestClient, story: Story, address: str) -> None:
    answer = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": f"http://[{address}]/hook"})
    body = assert_envelope(answer, 422, "validation_failed")
    assert [(problem["field"], problem["code"]) for problem in body["fields"]] == [  # type: ignore[attr-defined]
        ("url", "invalid_destination")]
    assert client.get("/api/v1/webhooks", headers=bearer(story.admin_a)).json()["data"] == []


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:a9fe:a9fe::", "::ffff:0:7f00:1", "::127.0.0.1"])
def test_a_name_resolving_to_such_an_address_is_refused(client: TestClient, story: Story, address: str) -> None:
    app_runtime = runtime.of(client.app)
    app_runtime.add(Destinations(app_runtime.settings.webhook_allow_private, resolver=lambda host, port: [address]))
    answer = client.post("/api/v1/webhooks", headers=bearer(story.admin_a), json={"url": "https://hooks.example.test/"})
    assert_envelope(answer, 422, "validation_failed")


def _post(url: str, resolver_answer: str | None = None) -> OutboundError:
    async def attempt() -> None:
        outbound = Outbound(allow_private=False, resolver=lambda host, port: [resolver_answer or host])
        try:
            await outbound.post(url, b"{}", {"Content-Type": "application/json"})
        finally:
            await outbound.aclose()

    with pytest.raises(OutboundError) as raised:
        asyncio.run(attempt())
    return raised.value


@pytest.mark.parametrize("address", EMBEDDING_INTERNAL)
def test_the_delivery_guard_refuses_such_an_address_in_the_url(address: str) -> None:
    refused = _post(f"http://[{address}]:9/hook")
    assert refused.kind == "blocked_address"


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::ffff:0:7f00:1"])
def test_the_delivery_guard_refuses_a_name_that_resolves_to_such_an_address(address: str) -> None:
    refused = _post("http://hooks.example.test:9/hook", resolver_answer=address)
    assert refused.kind == "blocked_address" and address in refused.detail
