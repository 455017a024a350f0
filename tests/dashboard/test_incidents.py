"""The incidents pages in a real browser: the list with the API's filters, refreshing itself; the detail with its
timeline; acknowledging, resolving, reopening and annotating from the page, seen through the REST API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.dashboard.conftest import OWNER_EMAIL, Site, shoot, sign_in
from tests.support import bearer


def open_incident(site: Site, **body: Any) -> int:
    response = site.api.post("/api/v1/incidents", json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def titles(page: Any) -> list[str]:
    return [text.strip() for text in page.locator("#incidents-live tbody td:first-child > a").all_inner_texts()]


def test_the_list_filters_like_the_api_and_refreshes_itself(site: Site, page: Any) -> None:
    server_id, token = site.agent_token("db-01")
    critical = open_incident(site, title="Checkout returns 502", severity="critical", server_id=server_id,
                             service="nginx", message="Customers report failed payments")
    open_incident(site, title="Slow backups", severity="warning")
    info = open_incident(site, title="Certificate renewed late", severity="info")
    site.api.post(f"/api/v1/incidents/{info}/resolve", json={"message": "renewed"}).raise_for_status()
    crash = site.api.post("/api/v1/agent/incidents", headers=bearer(token),
                          json={"key": "pg-crash-1", "service": "postgresql", "title": "postgresql crashed",
                                "logs": ["FATAL: could not write to file"], "state": {"unit": "failed"}})
    assert crash.status_code == 201, crash.text

    sign_in(page, site)
    page.goto(f"{site.base}/incidents")
    assert set(titles(page)) >= {"Checkout returns 502", "Slow backups", "Certificate renewed late",
                                 "postgresql crashed"}
    row = page.locator(f"tr[data-incident='{critical}']")
    assert "db-01" in row.inner_text() and "nginx" in row.inner_text() and "critical" in row.inner_text()
    shoot(page, "incidents-list")

    page.check("input[name=status][value=open]")
    page.check("input[name=severity][value=critical]")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**status=open**")
    assert "server_id=" not in page.url  # "Any" fields are left out of the URL
    assert sorted(titles(page)) == ["Checkout returns 502", "postgresql crashed"]
    api = site.api.get("/api/v1/incidents", params={"status": "open", "severity": "critical"}).json()
    assert sorted(i["title"] for i in api["data"]) == sorted(titles(page))

    page.goto(f"{site.base}/incidents?status=resolved")
    assert titles(page) == ["Certificate renewed late"]
    page.goto(f"{site.base}/incidents?source=crash")
    assert titles(page) == ["postgresql crashed"]
    page.goto(f"{site.base}/incidents?severity=info&status=open")
    assert page.locator(".empty").inner_text().startswith("No incidents match")

    # A new incident appears without a reload (htmx polls the list's partial).
    page.goto(f"{site.base}/incidents?status=open")
    open_incident(site, title="Disk filling on db-01", severity="warning", server_id=server_id)
    page.wait_for_selector("text=Disk filling on db-01")

    # Keyset pages, whose links still lead to the page once the list has refreshed itself.
    page.goto(f"{site.base}/incidents?per_page=2")
    first = titles(page)
    page.evaluate("document.querySelector('#incidents-live').dataset.stale = '1'")
    page.wait_for_selector("#incidents-live:not([data-stale])", state="attached")
    page.click("text=Next page")
    page.wait_for_url("**/incidents?per_page=2&cursor=*")
    assert len(titles(page)) == 2 and not set(titles(page)) & set(first)
    assert page.locator("text=First page").count() == 1

    # Bad filters answer a 422 page, never a 500.
    answer = page.goto(f"{site.base}/incidents?status=burning&server_id=x")
    assert answer is not None and answer.status == 422 and "Invalid input" in page.inner_text("main")


def test_acknowledge_resolve_reopen_and_note_from_the_detail(site: Site, page: Any) -> None:
    incident = open_incident(site, title="API latency above 2 s", severity="critical", message="p95 at 2.4 s")
    sign_in(page, site)
    page.goto(f"{site.base}/incidents")
    page.click(f"tr[data-incident='{incident}'] a")
    page.wait_for_url(f"**/incidents/{incident}")
    assert "p95 at 2.4 s" in page.inner_text(".incident-timeline")
    assert "test-suite (API key)" in page.inner_text(".incident-timeline")  # opened by the suite's key

    page.fill("#ack-message", "Looking at the load balancer")
    page.click("#acknowledge-form button")
    page.wait_for_selector(".incident-timeline li[data-kind=acknowledged]")
    detail = site.api.get(f"/api/v1/incidents/{incident}").json()
    assert detail["status"] == "acknowledged"
    actor = detail["acknowledged_by"]
    assert actor.startswith("user:") and actor.endswith(f":{OWNER_EMAIL}")
    entry = next(e for e in detail["timeline"] if e["kind"] == "acknowledged")
    assert entry["actor"] == actor and entry["message"] == "Looking at the load balancer"
    assert OWNER_EMAIL in page.inner_text(".incident-timeline li[data-kind=acknowledged]")

    page.fill("#note-message", "Rolled back release 2026.11.3")
    page.click("#note-form button")
    page.wait_for_selector("text=Rolled back release 2026.11.3")

    page.fill("#resolve-message", "Back under 300 ms")
    page.click("#resolve-form button")
    page.wait_for_selector("#reopen-form")
    detail = site.api.get(f"/api/v1/incidents/{incident}").json()
    assert detail["status"] == "resolved" and detail["resolved_by"] == actor
    kinds = [(e["kind"], e["actor"], e["message"]) for e in detail["timeline"]]
    assert ("note", actor, "Rolled back release 2026.11.3") in kinds
    assert ("resolved", actor, "Back under 300 ms") in kinds
    shoot(page, "incident-detail")

    # A resolved incident cannot be acknowledged: the page shows the API's 409 as a message.
    csrf = page.input_value("#reopen-form input[name=csrf_token]") if page.locator(
        "#reopen-form input[name=csrf_token]").count() else None
    if csrf:
        page.evaluate("""([id, token]) => { const f = document.createElement('form'); f.method = 'post';
            f.action = `/incidents/${id}/acknowledge`; f.innerHTML = `<input name="csrf_token" value="${token}">`;
            document.body.appendChild(f); f.submit(); }""", [incident, csrf])
        page.wait_for_selector("#action-error")
        assert "reopen it first" in page.inner_text("#action-error")

    page.goto(f"{site.base}/incidents/{incident}")
    page.click("#reopen-form button")
    page.wait_for_selector("#acknowledge-form")
    assert site.api.get(f"/api/v1/incidents/{incident}").json()["status"] == "open"


def test_open_an_incident_by_hand_and_the_walls(site: Site, page: Any, browser: Any) -> None:
    sign_in(page, site)
    page.goto(f"{site.base}/incidents")
    page.fill("#n-title", "Payment provider outage")
    page.select_option("#n-severity", "critical")
    page.fill("#n-message", "Stripe status page red")
    page.click("#open-incident button[type=submit]")
    page.wait_for_url("**/incidents/*")
    incident = int(page.url.rsplit("/", 1)[1])
    detail = site.api.get(f"/api/v1/incidents/{incident}").json()
    assert detail["title"] == "Payment provider outage" and detail["type"] == "manual"
    assert detail["timeline"][0]["actor"].endswith(OWNER_EMAIL)

    # A blank title is shown again with its problem, nothing created.
    page.goto(f"{site.base}/incidents")
    page.evaluate("document.querySelector('#n-title').removeAttribute('required')")
    page.fill("#n-title", "   ")
    page.click("#open-incident button[type=submit]")
    assert page.locator("#open-incident .field-error").count() == 1
    assert page.url.endswith("/incidents")

    page.goto(f"{site.base}/incidents/999999")
    assert "Not found" in page.inner_text("main")

    # A read-only member sees the incident but no forms; a forged post is refused.
    site.add_user("viewer@example.com", role="read-only")
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    other = context.new_page()
    sign_in(other, site, "viewer@example.com")
    other.goto(f"{site.base}/incidents/{incident}")
    assert other.locator("form#acknowledge-form, form#note-form").count() == 0
    shoot(other, "incident-detail-dark-390")
    other.goto(f"{site.base}/incidents")
    shoot(other, "incidents-list-dark-390")
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    forged = httpx.post(f"{site.base}/incidents/{incident}/acknowledge", cookies=cookies, data={"message": "x"})
    assert forged.status_code == 403
    context.close()
    assert site.api.get(f"/api/v1/incidents/{incident}").json()["status"] == "open"
