"""The servers pages in a real browser: the list with statuses and sparklines, a server's facts, charts that plot
what the metrics API answers, what discovery found, its history, the log search, live refresh, team walls.

Everything is made as agents make it: enrolment, check-ins, metrics, logs and discovery through the agent API.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.dashboard.conftest import OWNER_EMAIL, OWNER_PASSWORD, Site, cli, shoot
from tests.support import bearer, wait_until

Cookies = list[dict[str, Any]]
STEP = 15  # the agent's metrics interval; the 1h range's chart step


@dataclass
class Fleet:
    web: int
    db: int
    cache: int
    tokens: dict[int, str]
    cpu_recent: dict[int, float]  # web's cpu.percent over the last 30 minutes, by (15 s aligned) timestamp


def sign_in(page: Any, site: Site, email: str = OWNER_EMAIL, then: str = "/servers") -> None:
    """Sign in straight to a servers page (the sign-in form honours ?next=)."""
    page.goto(f"{site.base}/login?next={quote(then, safe='')}")
    page.fill("#email", email)
    page.fill("#password", site.users.get(email, OWNER_PASSWORD))
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}{then}")


@pytest.fixture(scope="module")
def owner(site: Site, browser: Any) -> Cookies:
    """The owner's session cookies, signed in once (sign-in is rate limited per account)."""
    context = browser.new_context()
    try:
        sign_in(context.new_page(), site)
        return list(context.cookies())
    finally:
        context.close()


def visit(page: Any, site: Site, owner: Cookies, path: str) -> Any:
    page.context.add_cookies(owner)
    return page.goto(f"{site.base}{path}")


def agent(site: Site, token: str, path: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(f"{site.base}/api/v1/agent/{path}", json=body, headers=bearer(token), timeout=30)
    assert response.status_code in (200, 201, 202), response.text
    return response


def metric_history(seed: int, now: int, *, load: float, mem: float, disks: dict[str, float],
                   iface: str = "eth0") -> tuple[list[dict[str, Any]], dict[int, float]]:
    """24 hours of realistic metrics: 15 s points over the last 2 hours, one a minute before that."""
    rng = random.Random(seed)
    end = now - now % STEP
    times = list(range(end - 86_400, end - 7200, 60)) + list(range(end - 7200, end + 1, STEP))
    series: dict[tuple[str, str], list[list[float]]] = {}

    def add(metric: str, label: str, ts: int, value: float) -> None:
        series.setdefault((metric, label), []).append([ts, round(value, 2)])

    cpu_recent: dict[int, float] = {}
    for ts in times:
        day = math.sin((ts % 86_400) / 86_400 * 2 * math.pi - 1.2)
        cpu = max(1.0, min(99.0, load * (1 + 0.45 * day) + rng.gauss(0, load * 0.18)))
        if rng.random() < 0.01:
            cpu = min(99.0, cpu + 45)
        add("cpu.percent", "", ts, cpu)
        if ts > end - 1800:
            cpu_recent[ts] = round(cpu, 2)
        add("mem.used_percent", "", ts, mem + 6 * day + rng.gauss(0, 0.6))
        add("swap.used_percent", "", ts, 3 + rng.random())
        for mount, used in disks.items():
            add("disk.used_percent", mount, ts, used + (ts - end + 86_400) / 86_400 * 1.5)
        traffic = 350_000 * (1 + 0.6 * day) * (0.8 + 0.4 * rng.random())
        add("net.rx_bytes", iface, ts, traffic)
        add("net.tx_bytes", iface, ts, traffic * 2.4)
        one = cpu / 25 + rng.random() * 0.3
        add("load.1", "", ts, one)
        add("load.5", "", ts, one * 0.9 + 0.1)
        add("load.15", "", ts, one * 0.8 + 0.15)
    label_names = {"disk.used_percent": "mount", "net.rx_bytes": "iface", "net.tx_bytes": "iface"}
    out = [{"metric": metric, "labels": {label_names[metric]: label} if label else {}, "points": points}
           for (metric, label), points in series.items()]
    return out, cpu_recent


def post_metrics(site: Site, token: str, series: list[dict[str, Any]]) -> None:
    batch: list[dict[str, Any]] = []
    size = 0
    for one in series:  # batches under the 20,000-point cap
        if size + len(one["points"]) > 15_000 and batch:
            agent(site, token, "metrics", {"series": batch})
            batch, size = [], 0
        batch.append(one)
        size += len(one["points"])
    if batch:
        agent(site, token, "metrics", {"series": batch})


def days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).date().isoformat()


def moment(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).isoformat().replace("+00:00", "Z")


WEB_DISCOVERY: dict[str, Any] = {
    "services": [
        {"name": "nginx", "version": "1.24.0", "status": "running", "unit": "nginx.service", "pid": 812,
         "ports": [80, 443]},
        {"name": "postgresql", "version": "15.4", "status": "running", "unit": "postgresql@15-main.service",
         "pid": 901, "ports": [5432]},
        {"name": "redis", "version": "7.2.3", "status": "running", "unit": "redis-server.service", "ports": [6379]},
        {"name": "php-fpm", "version": "8.2.12", "status": "running", "unit": "php8.2-fpm.service"},
        {"name": "cron", "version": None, "status": "running", "unit": "cron.service"},
    ],
    "domains": [],
    "containers": [
        {"id": "3f9a6c2e8b1d4a7f9e0c", "name": "metabase", "image": "metabase/metabase:v0.47.6", "status": "running"},
        {"id": "a81c0d55e2f34b6c8d11", "name": "umami", "image": "ghcr.io/umami-software/umami:postgresql-v2.9",
         "status": "running"},
        {"id": "c0ffee12aa34bb56cc78", "name": "backup-once", "image": "restic/restic:0.16.2", "status": "exited"},
    ],
    "certificates": [],
}


def web_discovery(nginx: str = "1.24.0") -> dict[str, Any]:
    found = {**WEB_DISCOVERY, "services": [dict(s, version=nginx) if s["name"] == "nginx" else s
                                           for s in WEB_DISCOVERY["services"]]}
    found["domains"] = [
        {"name": "app.example.com", "source": "/etc/nginx/sites-enabled/app.conf", "ssl_expiry": days(62)},
        {"name": "api.example.com", "source": "/etc/nginx/sites-enabled/api.conf", "ssl_expiry": days(9),
         "certificate": {"path": "/etc/letsencrypt/live/api.example.com/fullchain.pem", "not_after": moment(71),
                         "fingerprint_sha256": "a" * 64},
         "served_certificate": {"not_after": moment(9), "fingerprint_sha256": "b" * 64,
                                "issuer": "R3", "subject": "CN=api.example.com"}},
        {"name": "shop.example.com", "source": "/etc/nginx/sites-enabled/shop.conf", "ssl_expiry": days(24)},
    ]
    found["certificates"] = [
        {"path": "/etc/letsencrypt/live/app.example.com/fullchain.pem", "subject": "CN=app.example.com",
         "issuer": "Let's Encrypt R3", "domains": ["app.example.com"], "not_after": moment(62)},
        {"path": "/etc/letsencrypt/live/shop.example.com/fullchain.pem", "subject": "CN=shop.example.com",
         "issuer": "Let's Encrypt R3", "domains": ["shop.example.com", "www.shop.example.com"],
         "not_after": moment(24)},
    ]
    return found


def log_entries(now: float) -> list[dict[str, Any]]:
    rng = random.Random(7)
    paths = ["/", "/login", "/api/orders", "/api/cart", "/static/app.js", "/healthz"]
    entries = []
    for i in range(70):
        ts = now - 3600 + i * 50
        path = rng.choice(paths)
        took = rng.randint(3, 90)
        entries.append({"ts": ts, "source": "/var/log/app/app.log",
                        "line": f'level=info msg="request served" path={path} status=200 duration_ms={took}'})
    entries.append({"ts": now - 120, "source": "/var/log/nginx/error.log",
                    "line": "[error] 1234#0: *5517 upstream timed out (110: Connection timed out) while reading "
                            "response header from upstream, client: 203.0.113.7, request: \"GET /api/orders\""})
    entries.append({"ts": now - 60, "source": "/var/log/app/app.log",
                    "line": 'level=warning msg="slow query" table=orders duration_ms=2300'})
    return entries


@pytest.fixture(scope="module")
def fleet(site: Site) -> Iterator[Fleet]:
    now = int(time.time())
    web, web_token = site.agent_token("web-prod-01", ip_address="10.0.1.12", cpu_cores=8, ram_total_mb=16_384)
    db, db_token = site.agent_token("db-prod-01", ip_address="10.0.1.20", os="Debian GNU/Linux 12 (bookworm)",
                                    kernel="6.1.0-13-amd64", cpu_cores=16, ram_total_mb=65_536)
    cache, cache_token = site.agent_token("cache-01", ip_address="10.0.2.5", os="Rocky Linux 9.3",
                                          kernel="5.14.0-362.el9.x86_64", cpu_cores=2, ram_total_mb=4096)
    assert site.api.patch(f"/api/v1/servers/{web}", json={"display_name": "Web (prod)",
                                                          "tags": ["prod", "web"]}).status_code == 200
    assert site.api.patch(f"/api/v1/servers/{db}", json={"tags": ["prod", "db"]}).status_code == 200
    for server_id, token, uptime in ((web, web_token, 3 * 86_400 + 7200), (db, db_token, 41 * 86_400),
                                     (cache, cache_token, 5400)):
        agent(site, token, "check-in", {"agent_version": "1.4.2", "uptime_s": uptime, "boot_id": f"boot-{server_id}"})
    web_series, cpu_recent = metric_history(1, now, load=28, mem=58, disks={"/": 41, "/var/lib/postgresql": 72})
    post_metrics(site, web_token, web_series)
    db_series, _ = metric_history(2, now, load=45, mem=81, disks={"/": 63}, iface="ens5")
    post_metrics(site, db_token, db_series)
    cache_series, _ = metric_history(3, now, load=9, mem=34, disks={"/": 22})
    post_metrics(site, cache_token, cache_series)
    agent(site, web_token, "discovery", web_discovery("1.24.0"))
    agent(site, web_token, "discovery", web_discovery("1.25.3"))  # a change for the history
    agent(site, db_token, "discovery", {"services": [
        {"name": "postgresql", "version": "16.1", "status": "running"},
        {"name": "pgbouncer", "version": "1.21.0", "status": "running"}]})
    agent(site, web_token, "logs", {"entries": log_entries(now)})
    agent(site, db_token, "logs", {"entries": [{"ts": now - 30, "source": "/var/log/postgresql/main.log",
                                                "line": "LOG:  checkpoint complete: wrote 1843 buffers"}]})
    yield Fleet(web, db, cache, {web: web_token, db: db_token, cache: cache_token}, cpu_recent)


def test_no_servers_yet_says_how_to_install_the_agent(site: Site, owner: Cookies, page: Any) -> None:
    visit(page, site, owner, "/servers")
    text = page.inner_text(".empty")
    assert "pipx install hostatlas-agent" in text and "hostatlas-agent enrol --url http" in text
    page.click(".empty >> text=Create an enrolment key")
    # The key form comes filled in for an enrolment key, and the new key's page gives the whole command.
    assert page.is_checked("input[name=scopes][value='agent:register']")
    page.click("#new-key button[type=submit]")
    command = page.inner_text("#enrol-command")
    assert command.startswith("sudo hostatlas-agent enrol --url http") and "--key sk_live_" in command


def test_list_shows_servers_with_status_and_sparklines(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    visit(page, site, owner, "/servers")
    rows = page.locator("table.servers tbody tr")
    assert rows.count() == 3
    web = page.locator(f"tr[data-server='{fleet.web}']")
    assert "Web (prod)" in web.inner_text() and "web-prod-01" in web.inner_text()
    assert web.locator(".badge-online").count() == 1
    assert "10.0.1.12" in web.inner_text() and "Ubuntu 22.04.3 LTS" in web.inner_text()
    # Sparklines for CPU, memory and disk, drawn from the last hour's data.
    for name in ("cpu", "memory", "disk"):
        assert web.locator(f".spark-{name} svg.spark polyline").count() == 1, name
    points = web.locator(".spark-cpu polyline").get_attribute("points") or ""
    assert len(points.split()) >= 20
    assert page.locator(f"tr[data-server='{fleet.db}'] .badge-online").count() == 1
    # The same list the API lists.
    api = site.api.get("/api/v1/servers").json()
    assert {row["hostname"] for row in api["data"]} == {"web-prod-01", "db-prod-01", "cache-01"}
    assert "3 in all" in page.inner_text(".pager")
    # The status column refreshes itself (htmx polling the statuses partial).
    with page.expect_response(lambda r: "/servers/statuses?" in r.url and r.status == 200):
        pass
    assert web.locator(".badge-online").count() == 1
    shoot(page, "servers-list")

    # Filters: a tag, a name; nothing matching says so.
    page.goto(f"{site.base}/servers?tag=db")
    assert page.locator("table.servers tbody tr").count() == 1
    page.fill("#filter-q", "nothing-like-this")
    with page.expect_navigation():
        page.click(".filters button[type=submit]")
    assert "q=nothing-like-this" in page.url
    assert "No servers match" in page.inner_text(".empty")
    page.goto(f"{site.base}/servers?per_page=2")
    assert page.locator("table.servers tbody tr").count() == 2
    page.click("a[rel=next]")
    assert page.locator("table.servers tbody tr").count() == 1


def test_detail_shows_facts_inventory_and_history(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    visit(page, site, owner, f"/servers/{fleet.web}")
    facts = page.inner_text("#server-live")
    for expected in ("web-prod-01", "10.0.1.12", "Ubuntu 22.04.3 LTS", "6.2.0-39-generic", "16 GB", "1.4.2",
                     "3 d 2 h", "prod", "online"):
        assert expected in facts, expected
    services = page.inner_text("table.services")
    assert "nginx" in services and "1.25.3" in services and "postgresql" in services
    api = site.api.get(f"/api/v1/servers/{fleet.web}").json()
    assert len(api["services"]) == page.locator("table.services tbody tr").count()
    api_row = page.locator("tr[data-domain='api.example.com']")
    assert "reload needed" in api_row.inner_text() and "expiring" in api_row.inner_text()
    assert api_row.locator(".days").inner_text() == "9"
    assert page.locator("tr[data-domain='app.example.com'] .days").inner_text() == "62"
    assert "shop.example.com" in page.inner_text("table.certificates")
    containers = page.inner_text("table.containers")
    assert "metabase" in containers and "restic/restic:0.16.2" in containers
    history = page.inner_text(".history")
    assert "changed service nginx" in history and "1.24.0 → 1.25.3" in history
    # Every chart draws.
    for panel in ("cpu", "memory", "disk", "network", "load"):
        page.wait_for_selector(f".chart[data-src*='/charts/{panel}?'][data-points]")
    assert "rx eth0" in page.inner_text(".chart-network").lower()
    assert "/var/lib/postgresql" in page.inner_text(".chart-disk").lower()
    shoot(page, "server-detail")


def test_a_chart_plots_what_the_metrics_api_answers(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    visit(page, site, owner, f"/servers/{fleet.web}?range=1h")
    page.wait_for_selector(".chart[data-src*='/charts/cpu?range=1h'][data-points]")
    plotted = page.evaluate("document.querySelector(\".chart[data-src*='/charts/cpu?']\")._hostatlas.plot.data")
    x, values = plotted[0], plotted[1]
    step = x[1] - x[0]
    assert step == STEP and len(x) >= 240
    answer = site.api.get(f"/api/v1/servers/{fleet.web}/metrics",
                          params={"metric": "cpu.percent", "from": x[0], "to": x[-1] + step, "step": step}).json()
    assert answer["meta"]["from"] == x[0] and answer["meta"]["step"] == step
    points = answer["data"][0]["points"]
    assert points and sum(v is not None for v in values) == len(points)
    for ts, value in points:
        assert values[x.index(ts)] == pytest.approx(value)
    # ... which are the values the agent sent.
    for ts, value in fleet.cpu_recent.items():
        if x[0] <= ts <= x[-1]:
            assert values[x.index(ts)] == pytest.approx(value)
    # The fleet endpoint agrees too, and the JSON the chart fetches is the same data.
    fleet_answer = site.api.get("/api/v1/metrics", params={"metric": "cpu.percent", "server_id": fleet.web,
                                                           "from": x[0], "to": x[-1] + step, "step": step}).json()
    assert fleet_answer["data"][0]["points"] == points
    week = page.request.get(f"{site.base}/servers/{fleet.web}/charts/network?range=7d")
    body = week.json()
    # A week at one point a minute, from the 1-minute rollup (its speed is bench/dashboard.py's to measure).
    assert body["meta"]["tier"] == "1m" and body["meta"]["step"] == 60 and 10_080 <= len(body["x"]) <= 10_081
    assert {s["label"] for s in body["series"]} == {"rx eth0", "tx eth0"}


def test_log_search_finds_a_line_and_filters_others_out(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    visit(page, site, owner, f"/servers/{fleet.web}")
    lines = page.locator("#log-lines .log-line")
    assert lines.count() == 50  # a page, newest first
    assert "slow query" in lines.first.inner_text()
    assert "checkpoint complete" not in page.inner_text("#log-lines")  # another server's
    page.click(".log-more button")
    wait_until(lambda: lines.count() == 72, what="the older lines")
    page.fill("#log-q", "upstream timed out")
    wait_until(lambda: lines.count() == 1, what="the search")
    assert "upstream timed out" in lines.first.inner_text()
    assert "error.log" in lines.first.inner_text() and "error" in lines.first.locator(".badge").inner_text()
    api = site.api.get("/api/v1/logs", params={"q": "upstream timed out", "server_id": fleet.web}).json()
    assert api["meta"]["total"] == 1 and "1 line" in page.inner_text(".log-count")
    page.fill("#log-q", "no-such-words-anywhere")
    wait_until(lambda: "Nothing matches" in page.inner_text("#log-lines"), what="no match")


def test_the_header_refreshes_without_a_reload(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    visit(page, site, owner, f"/servers/{fleet.cache}")
    assert page.inner_text("[data-fact=uptime]") == "1 h 30 min"
    page.evaluate("window.__notReloaded = true")
    agent(site, fleet.tokens[fleet.cache], "check-in", {"agent_version": "1.5.0", "uptime_s": 90_061})
    wait_until(lambda: page.inner_text("[data-fact=uptime]") == "1 d 1 h", what="the live header")
    assert "1.5.0" in page.inner_text("#server-live")
    assert page.evaluate("window.__notReloaded") is True
    # Swapped-out charts let go of their plots (app.js), and live charts keep refetching.
    with page.expect_response(lambda r: f"/servers/{fleet.cache}/charts/cpu" in r.url):
        pass


def test_other_teams_and_bad_input_get_error_pages(site: Site, fleet: Fleet, browser: Any) -> None:
    cli(site.workdir, "team", "create", "other")
    email = site.add_user("other@example.com", team="other", role="owner")
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, site, email)
        response = page.goto(f"{site.base}/servers/{fleet.web}")
        assert response.status == 404 and "Not found" in page.inner_text("main")
        assert page.request.get(f"{site.base}/servers/{fleet.web}/charts/cpu").status == 404
        assert page.request.get(f"{site.base}/servers/{fleet.web}/logs?q=error").status == 404
        assert page.request.get(f"{site.base}/servers/{fleet.web}/live").status == 404
        page.goto(f"{site.base}/servers")
        assert "No servers yet" in page.inner_text("main")
        for url, status in ((f"/servers/{fleet.web}?range=2y", 422), ("/servers/abc", 422),
                            ("/servers/1/charts/bogus", 422), ("/servers?status=sleeping", 422),
                            ("/servers?cursor=garbage", 422), ("/servers/statuses?id=0", 422)):
            answer = page.request.get(f"{site.base}{url}")
            assert answer.status == status, url
            assert "Traceback" not in answer.text()
    finally:
        context.close()


def test_phone_width_and_dark_mode(site: Site, owner: Cookies, fleet: Fleet, browser: Any) -> None:
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        visit(page, site, owner, "/servers")
        assert page.evaluate("document.documentElement.scrollWidth") <= 391  # the table scrolls in its box
        shoot(page, "servers-list-phone-dark")
        page.goto(f"{site.base}/servers/{fleet.web}")
        page.wait_for_selector(".chart[data-src*='/charts/cpu?'][data-points]")
        assert page.evaluate("document.documentElement.scrollWidth") <= 391
        shoot(page, "server-detail-phone-dark")
        assert not errors
    finally:
        context.close()


def test_the_overview_shows_the_fleet(site: Site, owner: Cookies, fleet: Fleet, page: Any) -> None:
    """The morning view over the same fleet (and the README's picture of it: build/screenshots/overview-fleet.png)."""
    made = [site.api.post("/api/v1/incidents", json=body).json() for body in (
        {"title": "nginx 502s on web-prod-01", "severity": "critical", "server_id": fleet.web, "service": "nginx"},
        {"title": "Replication lag above 30 s", "severity": "warning", "server_id": fleet.db})]
    site.api.post(f"/api/v1/incidents/{made[1]['id']}/acknowledge", json={"message": "Looking at it"})
    visit(page, site, owner, "/")
    servers = site.api.get("/api/v1/servers").json()["data"]
    online = sum(server["status"] == "online" for server in servers)
    assert int(page.inner_text("[data-figure=servers-online]")) == online
    unresolved = site.api.get("/api/v1/incidents", params=[("status", "open"), ("status", "acknowledged")]).json()
    assert int(page.inner_text("[data-figure=incidents-open]")) == unresolved["meta"]["total"]
    text = page.inner_text("#overview-live")
    assert "nginx 502s on web-prod-01" in text and "Replication lag above 30 s" in text
    shoot(page, "overview-fleet")
