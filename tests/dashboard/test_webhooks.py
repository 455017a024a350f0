"""The webhooks pages in a real browser, against a real receiver on loopback: create a webhook and copy its secret
(shown once), send a test and watch its delivery and attempt appear, check the receiver got it signed with that
secret, rotate the secret, redeliver, disable; and bad input, parameters and scopes."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as StandardWebhook

from tests.dashboard.conftest import Site, chromium_or_skip, cli, shoot, sign_in, start_site
from tests.support import wait_until

# Starting serve (the module's fixture) counts toward the first test's time: slow on a busy machine.



@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """An HTTP endpoint on loopback that answers 200 and keeps every request it got."""
    got: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            answer = b'{"received": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/hostatlas", got)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The platform, allowed to send webhooks to loopback (the receiver)."""
    chromium_or_skip()
    yield from start_site(tmp_path_factory.mktemp("webhooks"), {"HOSTATLAS_WEBHOOK_ALLOW_PRIVATE": "true"})


def signed_by(received: Received, secret: str) -> bool:
    """The platform's documented scheme (docs/webhooks.md) and Standard Webhooks, both with ``secret``."""
    mine = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    listed = [value.strip() for value in received.headers["x-hostatlas-signature"].split(",")]
    if not any(hmac.compare_digest(mine, value) for value in listed):
        return False
    StandardWebhook(secret).verify(received.body, received.headers)  # raises when not signed with it
    return True


def test_create_test_rotate_redeliver_disable(site: Site, page: Any, receiver: Receiver) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/webhooks")
    assert "No webhooks yet" in page.inner_text("main")

    page.fill("#new-url", receiver.url)
    page.fill("#new-description", "Ops receiver")
    page.check("input[name=scope][value=chosen]")
    page.check("input[name=events][value='server.offline']")
    page.check("input[name=events][value='heartbeat.missed']")
    page.click("#new-webhook button[type=submit]")
    page.wait_for_selector(".secret-once")
    secret = page.inner_text("#webhook-secret")
    assert secret.startswith("whsec_")
    shoot(page, "webhook-created")
    action = page.get_attribute("form[action$='/test']", "action")
    assert action is not None
    webhook_id = int(action.split("/")[2])
    api_view = site.api.get(f"/api/v1/webhooks/{webhook_id}").json()
    assert api_view["url"] == receiver.url and api_view["events"] == ["heartbeat.missed", "server.offline"]
    assert api_view["description"] == "Ops receiver" and "secret" not in api_view

    # Shown once: the webhook's page does not show it again.
    page.goto(f"{site.base}/webhooks/{webhook_id}")
    assert page.locator(".secret-once").count() == 0
    assert secret not in page.content()
    assert "No deliveries yet" in page.inner_text("#deliveries-live")

    # Send a test: the delivery and its attempt (HTTP 200) appear on the page without a reload.
    page.click("button:has-text('Send test')")
    page.wait_for_url(re.compile(rf"/webhooks/{webhook_id}\?done=test"))
    page.wait_for_selector("#deliveries-live [data-attempt] [data-status='200']", state="attached")
    delivery = page.locator("#deliveries-live [data-delivery]").first
    delivery_id = delivery.get_attribute("data-delivery")
    delivery.locator("summary").click()
    attempt = delivery.locator("[data-attempt='1']").inner_text()
    assert "HTTP 200" in attempt and '"received": true' in attempt
    assert "succeeded" in delivery.inner_text() and "webhook.test" in delivery.inner_text()
    shoot(page, "webhook-detail")

    wait_until(lambda: receiver.requests, what="the receiver's request")
    first = receiver.requests[0]
    assert first.headers["x-hostatlas-delivery"] == delivery_id
    assert first.headers["x-hostatlas-event"] == "webhook.test"
    assert signed_by(first, secret)
    listed = site.api.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()
    assert listed["meta"]["total"] == 1
    assert (listed["data"][0]["id"], listed["data"][0]["status"], listed["data"][0]["attempt_count"]) == (
        delivery_id, "succeeded", 1)
    detail = site.api.get(f"/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}").json()
    assert detail["attempts"][0]["response_status"] == 200

    # Rotate the secret: the new one is shown once; both sign during the grace period.
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Rotate secret')")
    page.wait_for_selector(".secret-once")
    new_secret = page.inner_text("#webhook-secret")
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert site.api.get(f"/api/v1/webhooks/{webhook_id}").json()["previous_secret_expires_at"] is not None

    # Redeliver the test: a new delivery (redelivery_of the first), signed with the new secret and the old.
    page.goto(f"{site.base}/webhooks/{webhook_id}")
    page.locator(f"[data-delivery='{delivery_id}'] button:has-text('Redeliver')").click()
    page.wait_for_url(re.compile(r"done=redelivered"))
    page.wait_for_function("document.querySelectorAll('#deliveries-live [data-delivery]').length === 2")
    wait_until(lambda: len(receiver.requests) == 2, what="the redelivery")
    again = receiver.requests[1]
    assert again.headers["x-hostatlas-delivery"] != delivery_id
    assert signed_by(again, new_secret) and signed_by(again, secret)
    listed = site.api.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()["data"]
    assert listed[0]["redelivery_of"] == delivery_id
    page.wait_for_selector(f"[data-delivery='{listed[0]['id']}'] [data-status='200']", state="attached")

    # Disable without deleting: kept, enabled false; enable again.
    page.click("button:has-text('Disable without deleting')")
    page.wait_for_url(re.compile(r"done=disabled"))
    assert site.api.get(f"/api/v1/webhooks/{webhook_id}").json()["enabled"] is False
    assert "disabled" in page.inner_text(".page-head .badge")

    # The list: url, events, state, last delivery.
    page.goto(f"{site.base}/webhooks")
    row = page.inner_text(f"tr[data-webhook='{webhook_id}']")
    assert receiver.url in row and "server.offline" in row and "disabled" in row and "succeeded" in row
    shoot(page, "webhooks-list")

    page.goto(f"{site.base}/webhooks/{webhook_id}")
    page.click("button:has-text('Enable')")
    page.wait_for_url(re.compile(r"done=enabled"))
    assert site.api.get(f"/api/v1/webhooks/{webhook_id}").json()["enabled"] is True

    # Edit: every event.
    page.click("#edit summary")
    page.check("#edit input[name=scope][value=all]")
    page.fill("#edit-description", "Every event")
    page.click("#edit button[type=submit]")
    page.wait_for_url(re.compile(r"done=saved"))
    changed = site.api.get(f"/api/v1/webhooks/{webhook_id}").json()
    assert (changed["events"], changed["description"]) == (None, "Every event")


def test_phone_width_dark_mode(site: Site, browser: Any, receiver: Receiver) -> None:
    made = site.api.post("/api/v1/webhooks", json={"url": receiver.url + "/phone", "description": "Phone"})
    assert made.status_code == 201, made.text
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        sign_in(page, site)
        page.goto(f"{site.base}/webhooks/{made.json()['id']}")
        page.click("button:has-text('Send test')")
        page.wait_for_selector("#deliveries-live [data-attempt]", state="attached")
        page.click("#deliveries-live summary")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways at phone width ({width} px)"
        shoot(page, "webhook-detail-phone-dark")
    finally:
        context.close()
    assert not errors, errors


def test_bad_input_parameters_and_scopes(site: Site, page: Any) -> None:
    sign_in(page, site)
    before = site.api.get("/api/v1/webhooks").json()["meta"]["total"]
    page.goto(f"{site.base}/webhooks")
    page.fill("#new-url", "ftp://example.com/hook")
    page.check("input[name=scope][value=chosen]")
    page.click("#new-webhook button[type=submit]")
    page.wait_for_selector("#events-error")  # chosen, but none checked
    assert page.input_value("#new-url") == "ftp://example.com/hook"  # kept
    page.check("input[name=scope][value=all]")
    page.click("#new-webhook button[type=submit]")
    page.wait_for_selector("#url-error")
    assert site.api.get("/api/v1/webhooks").json()["meta"]["total"] == before  # nothing was made
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=site.base, cookies=cookies) as client:
        assert client.get("/webhooks?enabled=maybe").status_code == 422
        assert client.get("/webhooks/0").status_code == 422
        assert client.get("/webhooks/999999").status_code == 404
        assert client.get("/webhooks/999999/deliveries/live").status_code == 404
        assert client.post("/webhooks/999999/test").status_code == 403  # no CSRF token
    email = site.add_user("reader-wh@example.com", role="read-only")
    page.context.clear_cookies()
    sign_in(page, site, email)
    response = page.goto(f"{site.base}/webhooks")
    assert response is not None and response.status in (200, 403)
    assert page.locator("#new-webhook").count() == 0


def test_another_teams_webhook_is_not_found(site: Site, page: Any, receiver: Receiver) -> None:
    made = site.api.post("/api/v1/webhooks", json={"url": receiver.url + "/walled"})
    assert made.status_code == 201, made.text
    webhook_id = made.json()["id"]
    cli(site.workdir, "team", "create", "wh-outsiders")
    outsider = site.add_user("outsider-wh@example.com", team="wh-outsiders", role="owner")
    sign_in(page, site, outsider)
    page.goto(f"{site.base}/webhooks")
    assert "walled" not in page.inner_text("main")
    token = page.get_attribute("input[name=csrf_token]", "value")
    assert page.goto(f"{site.base}/webhooks/{webhook_id}").status == 404
    for action in ("test", "rotate-secret", "delete"):
        answer = page.request.post(f"{site.base}/webhooks/{webhook_id}/{action}", form={"csrf_token": token},
                                   max_redirects=0)
        assert answer.status == 404, action
    assert site.api.get(f"/api/v1/webhooks/{webhook_id}/deliveries").json()["meta"]["total"] == 0
