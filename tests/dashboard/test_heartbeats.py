"""The heartbeats pages in a real browser: the status board with heartbeats made through the page and the API, the
ping URL's curl line run for real and its ping (with its body) in the log, the actions, and bad input."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.dashboard.conftest import Site, cli, shoot, sign_in


def on_site(site: Site, url: str) -> str:
    """A ping URL as the page shows it: the site's public URL is its real address, so it is used as it is."""
    assert url.startswith(site.base + "/heartbeat/"), url
    return url


def test_board_create_ping_and_log(site: Site, page: Any) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/heartbeats")
    assert "No heartbeats yet" in page.inner_text("main")
    assert "curl -fsS" in page.inner_text(".empty")

    # One through the API, on a cron schedule.
    made = site.api.post("/api/v1/heartbeats", json={"name": "Invoice run", "schedule": "30 2 * * 1-5",
                                                     "timezone": "Europe/Berlin", "grace": 900, "tags": ["billing"]})
    assert made.status_code == 201, made.text

    # One through the page, every 6 hours with 30 min of grace.
    page.fill("#new-name", "nightly-backup")
    page.check("#new-kind-interval")
    page.fill("#new-interval", "6")
    page.select_option("#new-interval-unit", "hours")
    page.fill("#new-grace", "30")
    page.select_option("#new-grace-unit", "minutes")
    page.fill("#new-tags", "prod, backups")
    page.click("#new-heartbeat button[type=submit]")
    page.wait_for_url(re.compile(r"/heartbeats/\d+\?created=1$"))
    heartbeat_id = int(page.url.split("/heartbeats/")[1].split("?")[0])
    api_view = site.api.get(f"/api/v1/heartbeats/{heartbeat_id}").json()
    assert (api_view["interval"], api_view["grace"], api_view["tags"]) == (21600, 1800, ["backups", "prod"])
    assert "Heartbeat created" in page.inner_text(".alert-ok")
    assert page.inner_text("#ping-url") == api_view["ping_url"]
    curl = page.inner_text("#curl-success")
    assert curl == f"curl -fsS -m 10 --retry 5 {api_view['ping_url']}"
    assert (page.text_content("#curl-start") or "").endswith("/start")
    assert "No pings yet" in page.inner_text("#heartbeat-live")

    # The curl line's URL, run as the job would (with its output as the body): the log shows it, live. (The
    # site's HOSTATLAS_PUBLIC_URL is the default one, not the test server's port: the path is what matters.)
    answer = httpx.post(on_site(site, curl.split()[-1]), content=b"backup ok: 42 files\n",
                        headers={"User-Agent": "curl/8.5.0"})
    assert answer.status_code == 200, answer.text
    page.wait_for_selector("#heartbeat-live tr[data-ping]")
    row = page.locator("#heartbeat-live tr[data-ping]").first
    assert "success" in row.inner_text()
    assert "curl/8.5.0" in row.inner_text()
    row.locator("details summary").click()
    assert "backup ok: 42 files" in row.locator("details pre").inner_text()
    page.wait_for_selector("#status-title .badge-up")
    # The opened body stays open across the next live refresh.
    page.wait_for_function("document.querySelector('#heartbeat-live tr[data-ping] details').open === true")
    assert site.api.get(f"/api/v1/heartbeats/{heartbeat_id}").json()["status"] == "up"
    pings = site.api.get(f"/api/v1/heartbeats/{heartbeat_id}/pings").json()["data"]
    assert pings[0]["body"] == "backup ok: 42 files\n"
    assert "ping" in page.inner_text("#flips-title + ul")
    shoot(page, "heartbeat-detail")

    # The board shows both, with their schedules, and filters by status and tag.
    page.goto(f"{site.base}/heartbeats")
    board = page.inner_text("#heartbeats-live")
    assert "nightly-backup" in board and "Invoice run" in board
    assert "every 6 h" in board and "30 2 * * 1-5" in board and "Europe/Berlin" in board
    shoot(page, "heartbeats-board")
    page.select_option("#filter-status", "up")
    page.wait_for_url(re.compile(r"status=up"))
    assert "Invoice run" not in page.inner_text("#heartbeats-live")
    assert "nightly-backup" in page.inner_text("#heartbeats-live")
    page.goto(f"{site.base}/heartbeats?tag=billing")
    assert "nightly-backup" not in page.inner_text("#heartbeats-live")

    # Pause, resume, new ping URL (the old one is 404), edit to cron, delete.
    page.goto(f"{site.base}/heartbeats/{heartbeat_id}")
    page.click("button:has-text('Pause')")
    page.wait_for_selector("#status-title .badge-paused")
    page.click("button:has-text('Resume')")
    page.wait_for_selector("#status-title .badge-new")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('New ping URL')")
    page.wait_for_url(re.compile(r"rotated=1"))
    new_url = page.inner_text("#ping-url")
    assert new_url != api_view["ping_url"]
    assert httpx.get(on_site(site, api_view["ping_url"])).status_code == 404
    assert httpx.get(on_site(site, new_url)).status_code == 200
    page.click("#edit summary")
    page.check("#edit-kind-cron")
    page.fill("#edit-schedule", "0 4 * * *")
    page.fill("#edit-timezone", "Europe/Paris")
    page.click("#edit button[type=submit]")
    page.wait_for_url(f"{site.base}/heartbeats/{heartbeat_id}")
    changed = site.api.get(f"/api/v1/heartbeats/{heartbeat_id}").json()
    assert (changed["schedule"], changed["interval"], changed["timezone"]) == ("0 4 * * *", None, "Europe/Paris")
    page.click("button:has-text('Delete')")
    page.wait_for_url(f"{site.base}/heartbeats")
    assert site.api.get(f"/api/v1/heartbeats/{heartbeat_id}").status_code == 404


def test_bad_input_is_shown_on_the_form(site: Site, page: Any) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/heartbeats")
    page.fill("#new-name", "bad one")
    page.check("#new-kind-cron")
    page.fill("#new-schedule", "not a cron")
    page.fill("#new-timezone", "Mars/Olympus")
    page.click("#new-heartbeat button[type=submit]")
    page.wait_for_selector("#schedule-error")
    assert page.input_value("#new-name") == "bad one"  # kept
    assert page.inner_text("#timezone-error")
    page.check("#new-kind-interval")
    page.fill("#new-interval", "10")
    page.select_option("#new-interval-unit", "minutes")
    page.fill("#new-slug", "start")  # a ping URL suffix
    page.click("#new-heartbeat button[type=submit]")
    page.wait_for_selector("#slug-error")
    total = site.api.get("/api/v1/heartbeats").json()["meta"]["total"]
    assert not any(h["name"] == "bad one" for h in site.api.get("/api/v1/heartbeats").json()["data"]), total


def test_parameters_scopes_and_walls(site: Site, page: Any) -> None:
    sign_in(page, site)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    with httpx.Client(base_url=site.base, cookies=cookies) as client:
        assert client.get("/heartbeats?status=nope").status_code == 422
        assert client.get("/heartbeats?cursor=garbage").status_code == 422
        assert client.get("/heartbeats/0").status_code == 422
        assert client.get("/heartbeats/999999").status_code == 404
        assert client.get("/heartbeats/999999/live").status_code == 404
        # A form post without the CSRF token is refused.
        assert client.post("/heartbeats", data={"name": "x", "interval": "1"}).status_code == 403
    # A viewer-role member reads the board but has no write controls, and cannot post.
    email = site.add_user("viewer-hb@example.com", role="read-only")
    page.context.clear_cookies()
    sign_in(page, site, email)
    page.goto(f"{site.base}/heartbeats")
    assert page.locator("#new-heartbeat").count() == 0


def test_another_teams_heartbeat_is_not_found(site: Site, page: Any) -> None:
    made = site.api.post("/api/v1/heartbeats", json={"name": "walled", "interval": 3600})
    assert made.status_code == 201, made.text
    heartbeat_id = made.json()["id"]
    cli(site.workdir, "team", "create", "hb-outsiders")
    outsider = site.add_user("outsider-hb@example.com", team="hb-outsiders", role="owner")
    sign_in(page, site, outsider)
    page.goto(f"{site.base}/heartbeats")
    assert "walled" not in page.inner_text("main")
    token = page.get_attribute("input[name=csrf_token]", "value")
    assert page.goto(f"{site.base}/heartbeats/{heartbeat_id}").status == 404
    for action in ("pause", "rotate-token", "delete"):
        answer = page.request.post(f"{site.base}/heartbeats/{heartbeat_id}/{action}", form={"csrf_token": token},
                                   max_redirects=0)
        assert answer.status == 404, action
    assert site.api.get(f"/api/v1/heartbeats/{heartbeat_id}").json()["status"] == "new"
