"""The team page in a real browser: plan and limits with what is used, the ping key and its ping_create switch
(checked through the API), members and roles, the agent enrolment command; read-only members see no switch."""

from __future__ import annotations

from typing import Any

import httpx

from tests.dashboard.conftest import Site, cli, shoot, sign_in
from tests.dashboard.test_api_keys import create_in_page
from tests.support import bearer


def test_team_page_shows_plan_limits_ping_key_and_members(site: Site, page: Any, browser: Any) -> None:
    site.agent_token("team-web-01")
    site.api.post("/api/v1/heartbeats", json={"name": "Nightly backup", "interval": 86400})
    site.add_user("member-team@example.com", role="member")
    settings = site.api.get("/api/v1/heartbeats/ping-settings").json()
    assert settings["ping_create"] is False
    servers = site.api.get("/api/v1/servers").json()["meta"]["total"]
    beats = site.api.get("/api/v1/heartbeats").json()["meta"]["total"]

    sign_in(page, site)
    page.goto(f"{site.base}/team")
    assert page.inner_text(".team-slug") == "default"
    assert "pro plan" in page.inner_text(".plan")  # the default team of a self-hosted platform
    assert page.inner_text("#servers-usage .used") == str(servers) != "0"
    assert page.inner_text("#servers-usage .limit") == "unlimited"
    assert page.inner_text("#heartbeats-usage .used") == str(beats) != "0"
    assert page.inner_text("#heartbeats-usage .limit") == "unlimited"
    assert page.inner_text("#ping-key") == settings["ping_key"]
    assert page.inner_text("#ping-template") == settings["slug_url_template"]
    members = page.inner_text("table.members")
    assert "owner@example.com" in members and "member-team@example.com" in members
    row = page.locator("table.members tr", has_text="member-team@example.com")
    assert row.locator(".role").inner_text() == "member"
    assert "hostatlas-agent enrol --url" in page.inner_text("pre")
    assert page.locator("form[action='/logout-everywhere'] button", has_text="Log out everywhere").count() == 1
    shoot(page, "team")

    page.click("text=Allow creating by ping")
    page.wait_for_url(f"{site.base}/team#ping")
    assert page.inner_text(".ping-create") == "allowed"
    assert site.api.get("/api/v1/heartbeats/ping-settings").json()["ping_create"] is True
    page.click("text=Stop creating by ping")
    page.wait_for_url(f"{site.base}/team#ping")
    assert page.inner_text(".ping-create") == "off"
    assert site.api.get("/api/v1/heartbeats/ping-settings").json()["ping_create"] is False

    # At phone width and in dark mode.
    narrow = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    try:
        phone = narrow.new_page()
        errors: list[str] = []
        phone.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        sign_in(phone, site)
        phone.goto(f"{site.base}/team")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(phone, "team-narrow-dark")
        phone.goto(f"{site.base}/api-keys")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(phone, "api-keys-narrow-dark")
        assert not errors
    finally:
        narrow.close()


def test_a_free_team_sees_its_limits_and_what_it_uses(site: Site, page: Any) -> None:
    cli(site.workdir, "team", "create", "small", "--name", "Small team", "--plan", "free")
    email = site.add_user("small-owner@example.com", team="small", role="owner")
    sign_in(page, site, email)
    raw = create_in_page(page, site, "Small enrolment", ["*"])
    with httpx.Client(base_url=site.base, headers=bearer(raw)) as small:
        body = {"machine_id": "machine-small-1", "hostname": "small-1", "ip_address": "10.0.2.1", "os": "Debian 12",
                "kernel": "6.1.0", "cpu_cores": 2, "ram_total_mb": 2048, "agent_version": "1.4.2"}
        assert small.post("/api/v1/agent/register", json=body).status_code == 201
        for name in ("Backup", "Cron"):
            assert small.post("/api/v1/heartbeats", json={"name": name, "interval": 3600}).status_code == 201
    page.goto(f"{site.base}/team")
    assert page.inner_text("h1") == "Small team"
    assert "free plan" in page.inner_text(".plan")
    assert (page.inner_text("#servers-usage .used"), page.inner_text("#servers-usage .limit")) == ("1", "3")
    assert (page.inner_text("#heartbeats-usage .used"), page.inner_text("#heartbeats-usage .limit")) == ("2", "20")
    assert page.get_attribute("#servers-usage meter", "value") == "1"
    assert page.inner_text("table.members").count("@example.com") == 1  # the default team's people are not here
    shoot(page, "team-free")


def test_read_only_members_see_the_team_without_switches(site: Site, page: Any) -> None:
    email = site.add_user("reader-team@example.com", role="read-only")
    sign_in(page, site, email)
    page.goto(f"{site.base}/team")
    assert page.locator(".ping-create-form").count() == 0
    assert page.inner_text("#ping-key") != ""
    assert page.locator("button", has_text="Log out everywhere").count() == 1  # their own account, still
    token = page.get_attribute("input[name=csrf_token]", "value")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=site.base, cookies=cookies) as forged:
        answer = forged.post("/team/ping-settings", data={"csrf_token": token, "ping_create": "true"})
        assert answer.status_code == 403
    assert site.api.get("/api/v1/heartbeats/ping-settings").json()["ping_create"] is False
