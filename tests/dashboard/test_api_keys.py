"""The API keys page in a real browser: a key made in the page is shown once, works against the API with exactly
its scopes, and stops working when revoked in the page; rotation keeps both keys working during the grace; a
read-only member sees no write controls and a forged post is refused."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.dashboard.conftest import Site, shoot, sign_in
from tests.support import bearer, wait_until


def key_card(page: Any, name: str) -> Any:
    return page.locator(".key-card", has=page.locator(".key-name", has_text=re.compile(f"^{re.escape(name)}$")))


def create_in_page(page: Any, site: Site, name: str, scopes: list[str], expires_on: str = "") -> str:
    page.goto(f"{site.base}/api-keys")
    page.fill("#key-name", name)
    for scope in scopes:
        page.check(f"input[name=scopes][value='{scope}']")
    if expires_on:
        page.fill("#key-expires", expires_on)
    with page.expect_response(lambda r: r.url.endswith("/api-keys") and r.request.method == "POST") as answer:
        page.click("text=Create API key")
    assert answer.value.status == 201
    raw = page.inner_text(".secret-once code#raw-key").strip()
    assert raw.startswith("sk_live_")
    return str(raw)


def test_a_key_made_in_the_page_is_shown_once_works_and_stops_when_revoked(site: Site, page: Any) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/api-keys")
    assert page.is_visible("a[href='/api/v1/docs']")
    assert "/api/v1/servers" in page.inner_text(".how-to")
    raw = create_in_page(page, site, "CI/CD Pipeline", ["servers:read"], expires_on="2099-06-21")
    assert "shown only this once" in page.inner_text(".secret-once")
    assert page.is_visible(".secret-once button[data-copy='#raw-key']")
    shoot(page, "api-key-created")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.click(".secret-once button[data-copy]")
    page.wait_for_function("document.querySelector('.secret-once button[data-copy]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == raw

    # The raw key is nowhere once the answer is left: the list shows the mask only.
    page.goto(f"{site.base}/api-keys")
    assert raw not in page.content()
    card = key_card(page, "CI/CD Pipeline")
    assert card.locator(".masked-key").inner_text() == f"sk_live_{'•' * 16}{raw[-4:]}"
    assert "servers:read" in card.locator(".key-scopes").inner_text()
    assert card.get_attribute("data-status") == "active"
    assert "never" in card.locator(".key-last-used").inner_text()
    assert "2099" in card.locator(".key-expires").inner_text()

    with httpx.Client(base_url=site.base, headers=bearer(raw)) as client:
        assert client.get("/api/v1/servers").status_code == 200
        refused = client.post("/api/v1/heartbeats", json={"name": "x", "interval": 60})
        assert refused.status_code == 403, refused.text
        # Last used shows up once the usage is flushed (every second here).
        def used() -> bool:
            page.reload()
            return "never" not in card.locator(".key-last-used").inner_text()
        wait_until(used, timeout=10, what="the key's last use on the page")
        assert "127.0.0.1" in card.locator(".key-last-used").inner_text()
        shoot(page, "api-keys")

        page.once("dialog", lambda dialog: dialog.accept())
        card.locator("button", has_text="Revoke").click()
        page.wait_for_url(f"{site.base}/api-keys")
        assert card.get_attribute("data-status") == "revoked"
        assert card.locator(".key-revoked").count() == 1
        assert card.locator("button", has_text="Revoke").count() == 0
        answer = client.get("/api/v1/servers")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "api_key_revoked"
    listed = {k["name"]: k for k in site.api.get("/api/v1/api-keys", params={"q": "CI/CD"}).json()["data"]}
    assert listed["CI/CD Pipeline"]["status"] == "revoked"


def test_rotating_with_grace_keeps_both_keys_working(site: Site, page: Any) -> None:
    sign_in(page, site)
    old = create_in_page(page, site, "Automation Bot", ["incidents:write", "servers:read"])
    page.goto(f"{site.base}/api-keys")
    card = key_card(page, "Automation Bot")
    assert card.locator("select[name=grace_seconds]").input_value() == "86400"  # the API's default
    card.locator("select[name=grace_seconds]").select_option("3600")
    card.locator("button", has_text="Rotate").click()
    page.wait_for_selector(".secret-once")
    new = page.inner_text("#raw-key").strip()
    assert new != old and new.startswith("sk_live_")
    assert old[-4:] in page.inner_text(".rotation-note")
    for raw in (old, new):
        with httpx.Client(base_url=site.base, headers=bearer(raw)) as client:
            assert client.get("/api/v1/servers").status_code == 200
    keys = site.api.get("/api/v1/api-keys", params={"q": "Automation Bot"}).json()["data"]
    previous = next(k for k in keys if k["rotated_at"])
    successor = next(k for k in keys if k["rotated_from_id"] == previous["id"])
    assert previous["status"] == successor["status"] == "active"
    assert previous["expires_at"] is not None

    page.goto(f"{site.base}/api-keys?q=Automation")
    rotating = page.locator(f"#key-{previous['id']}")
    assert rotating.get_attribute("data-status") == "rotating"
    assert rotating.locator("button", has_text="Rotate").count() == 0  # already rotated: rotate its successor
    assert page.locator(f"#key-{successor['id']}").get_attribute("data-status") == "active"


def test_bad_form_input_is_shown_again_with_its_problem(site: Site, page: Any) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/api-keys")
    page.fill("#key-name", "No scopes")
    with page.expect_response(lambda r: r.url.endswith("/api-keys") and r.request.method == "POST") as answer:
        page.click("text=Create API key")
    assert answer.value.status == 422
    assert page.input_value("#key-name") == "No scopes"
    assert page.locator("#scopes-error").count() == 1
    page.check("input[name=scopes][value='servers:read']")
    page.fill("#key-expires", "2001-01-01")
    with page.expect_response(lambda r: r.url.endswith("/api-keys") and r.request.method == "POST") as answer:
        page.click("text=Create API key")
    assert answer.value.status == 422
    assert "future" in page.inner_text("#expires_on-error")
    assert page.is_checked("input[name=scopes][value='servers:read']")

    # Somebody else's (or no) key is not found; nonsense is refused as a page, never a 500.
    token = page.get_attribute("input[name=csrf_token]", "value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=site.base, cookies=cookies) as client:
        assert client.post("/api-keys/999999/revoke", data={"csrf_token": token}).status_code == 404
        assert client.post("/api-keys/abc/rotate", data={"csrf_token": token}).status_code == 422
        bad_grace = client.post("/api-keys/1/rotate", data={"csrf_token": token, "grace_seconds": "-5"})
        assert bad_grace.status_code == 422 and "text/html" in bad_grace.headers["content-type"]
        assert client.get("/api-keys", params={"status": "bogus"}).status_code == 422
        weird = client.post("/api-keys", data={"csrf_token": token, "name": "x\x00", "scopes": "nope:read"})
        assert weird.status_code == 422 and "Unknown scopes" in weird.text


def test_read_only_members_see_no_write_controls_and_cannot_forge_a_post(site: Site, page: Any) -> None:
    site.api.post("/api/v1/api-keys", json={"name": "Visible to all", "scopes": ["servers:read"]})
    email = site.add_user("reader-keys@example.com", role="read-only")
    sign_in(page, site, email)
    page.goto(f"{site.base}/api-keys")
    assert key_card(page, "Visible to all").count() == 1
    assert page.locator("form[method=post][action='/api-keys']").count() == 0
    assert page.locator("#key-name").count() == 0
    assert page.locator("button", has_text="Revoke").count() == 0
    assert page.locator("button", has_text="Rotate").count() == 0
    token = page.get_attribute("input[name=csrf_token]", "value") or page.evaluate(
        "JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=site.base, cookies=cookies) as forged:
        answer = forged.post("/api-keys", data={"csrf_token": token, "name": "sneaky", "scopes": "*"})
        assert answer.status_code == 403
        keys = site.api.get("/api/v1/api-keys", params={"q": "sneaky"}).json()["data"]
        assert keys == []
        # Without the token, even a writer's post is refused.
        assert forged.post("/api-keys", data={"name": "x", "scopes": "servers:read"}).status_code == 403
