"""The alert rules pages in a real browser: a rule created from the form after a backtest preview drawn on data an
agent sent, seen through the REST API; the list, editing, disabling and deletion."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.dashboard.conftest import Site, shoot, sign_in
from tests.support import bearer

NOW = int(time.time())
SPIKE = (NOW - NOW % 60 - 3600, NOW - NOW % 60 - 2400)  # 20 minutes of a hot CPU, an hour ago


def send_cpu(site: Site, token: str) -> None:
    points = [[t, 97.0 if SPIKE[0] <= t < SPIKE[1] else 20.0 + (t // 15) % 5] for t in range(NOW - 7200, NOW, 15)]
    answer = site.api.post("/api/v1/agent/metrics", headers=bearer(token),
                           json={"series": [{"metric": "cpu.percent", "labels": {}, "points": points}]})
    assert answer.status_code == 200 and answer.json()["dropped"] == 0, answer.text


def fill_rule(page: Any, name: str, threshold: str) -> None:
    page.fill("#rule-name", name)
    page.fill("#rule-metric", "cpu.percent")
    page.select_option("#rule-aggregation", "avg")
    page.fill("#rule-window_s", "60")
    page.select_option("#rule-operator", ">=")
    page.fill("#rule-threshold", threshold)
    page.fill("#rule-for_s", "120")
    page.select_option("#rule-severity", "critical")


def test_preview_a_rule_then_save_edit_disable_and_delete_it(site: Site, page: Any, browser: Any) -> None:
    server_id, token = site.agent_token("app-01")
    send_cpu(site, token)
    sign_in(page, site)

    page.goto(f"{site.base}/alerts")
    page.click("text=New rule")
    page.wait_for_url("**/alerts/new")
    fill_rule(page, "CPU hot on app servers", "90")
    page.select_option("#rule-range", "6h")
    page.click("#preview")
    page.wait_for_selector(".backtest-chart[data-points]")
    assert page.get_attribute(".backtest-chart", "data-bands") == "1"
    assert page.inner_text("#backtest-summary") == "Would have fired 1 time"

    # The same rule through the API's backtest: the same firing period.
    end = datetime.now(UTC)
    api = site.api.post("/api/v1/alert-rules/backtest", json={
        "metric": "cpu.percent", "aggregation": "avg", "window_s": 60, "operator": ">=", "threshold": 90,
        "for_s": 120, "severity": "critical", "from": (end - timedelta(hours=6)).isoformat(), "to": end.isoformat()})
    assert api.status_code == 200, api.text
    intervals = api.json()["intervals"]
    assert len(intervals) == 1 and intervals[0]["server"]["id"] == server_id
    shown = page.get_attribute(".firings li", "data-start")
    assert shown is not None
    assert datetime.fromisoformat(shown) == datetime.fromisoformat(intervals[0]["start"].replace("Z", "+00:00"))
    assert SPIKE[0] < datetime.fromisoformat(shown).timestamp() < SPIKE[1]
    assert site.api.get("/api/v1/alert-rules", params={"per_page": 100}).json()["meta"]["total"] == \
        len(site.api.get("/api/v1/alert-rules", params={"per_page": 100}).json()["data"])
    before = {r["name"] for r in site.api.get("/api/v1/alert-rules", params={"per_page": 100}).json()["data"]}
    assert "CPU hot on app servers" not in before  # previewing saved nothing
    shoot(page, "alert-new")

    # A threshold it never crossed: nothing would have fired.
    page.fill("#rule-threshold", "99")
    page.click("#preview")
    page.wait_for_selector("text=Would not have fired")
    # A bad field is reported in the preview, not as a failure.
    page.fill("#rule-window_s", "5")
    page.click("#preview")
    page.wait_for_selector("#backtest-errors")
    assert "Window" in page.inner_text("#backtest-errors")
    page.fill("#rule-window_s", "60")
    page.fill("#rule-threshold", "90")

    page.click("#rule-form button[type=submit]")
    page.wait_for_url("**/alerts?created=*")
    rules = site.api.get("/api/v1/alert-rules", params={"per_page": 100}).json()["data"]
    rule = next(r for r in rules if r["name"] == "CPU hot on app servers")
    assert (rule["metric"], rule["operator"], rule["threshold"], rule["window_s"], rule["for_s"],
            rule["severity"], rule["enabled"]) == ("cpu.percent", ">=", 90.0, 60, 120, "critical", True)
    row = page.locator(f"tr[data-rule='{rule['id']}']")
    assert "cpu.percent" in row.inner_text()
    shoot(page, "alerts-list")

    # Edit: scope to the server and a label filter, with a recovery threshold; the preview draws again.
    row.locator("text=Edit").click()
    page.wait_for_url(f"**/alerts/{rule['id']}/edit")
    assert page.input_value("#rule-threshold") == "90"
    page.select_option("#rule-scope", "servers")
    page.check(f"input[name=server_ids][value='{server_id}']")
    page.fill("#rule-recovery_threshold", "80")
    page.fill("#rule-description", "Page the on-call")
    page.click("#preview")
    page.wait_for_selector(".backtest-chart[data-points]")
    assert page.get_attribute(".backtest-chart", "data-bands") == "1"
    shoot(page, "alert-edit")
    page.click("#rule-form button[type=submit]")
    page.wait_for_url("**/alerts?updated=*")
    changed = site.api.get(f"/api/v1/alert-rules/{rule['id']}").json()
    assert (changed["scope"], changed["server_ids"], changed["recovery_threshold"], changed["description"]) == \
        ("servers", [server_id], 80.0, "Page the on-call")

    # A rule the service refuses (recovery on the wrong side) comes back with its problem, unchanged.
    page.goto(f"{site.base}/alerts/{rule['id']}/edit")
    page.fill("#rule-recovery_threshold", "95")
    page.click("#rule-form button[type=submit]")
    page.wait_for_selector(".field-error")
    assert page.input_value("#rule-recovery_threshold") == "95"
    assert site.api.get(f"/api/v1/alert-rules/{rule['id']}").json()["recovery_threshold"] == 80.0

    # Dark mode at phone width.
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    phone = context.new_page()
    sign_in(phone, site)
    phone.goto(f"{site.base}/alerts/{rule['id']}/edit")
    phone.click("#preview")
    phone.wait_for_selector(".backtest-chart[data-points]")
    shoot(phone, "alert-edit-dark-390")
    phone.goto(f"{site.base}/alerts")
    shoot(phone, "alerts-list-dark-390")
    context.close()

    page.goto(f"{site.base}/alerts")
    page.locator(f"tr[data-rule='{rule['id']}'] button:text('Disable')").click()
    page.wait_for_selector(f"tr[data-rule='{rule['id']}'] button:text('Enable')")
    assert site.api.get(f"/api/v1/alert-rules/{rule['id']}").json()["enabled"] is False

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(f"tr[data-rule='{rule['id']}'] button:text('Delete')").click()
    page.wait_for_selector(f"tr[data-rule='{rule['id']}']", state="detached")
    assert site.api.get(f"/api/v1/alert-rules/{rule['id']}").status_code == 404


def test_read_only_members_see_rules_but_cannot_change_them(site: Site, page: Any) -> None:
    created = site.api.post("/api/v1/alert-rules", json={"name": "Memory high", "metric": "mem.used_percent",
                                                         "operator": ">", "threshold": 95})
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    site.add_user("reader@example.com", role="read-only")
    sign_in(page, site, "reader@example.com")
    page.goto(f"{site.base}/alerts")
    assert "Memory high" in page.inner_text(f"tr[data-rule='{rule_id}']")
    assert page.locator("text=New rule").count() == 0 and page.locator("form[action$='/delete']").count() == 0
    answer = page.goto(f"{site.base}/alerts/{rule_id}/edit")
    assert answer is not None and answer.status == 403
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    forged = httpx.post(f"{site.base}/alerts/{rule_id}/delete", cookies=cookies)
    assert forged.status_code == 403
    assert site.api.get(f"/api/v1/alert-rules/{rule_id}").status_code == 200
    answer = page.goto(f"{site.base}/alerts/999999/edit")
    assert answer is not None and answer.status == 403  # no write scope: refused before any lookup
