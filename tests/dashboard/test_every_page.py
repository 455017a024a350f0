"""What people expect of every page, checked on every page with real data in a real browser:
- it loads nothing from anywhere but the platform (it works offline, no CDN);
- at phone width (390 px) nothing is wider than the screen;
- in dark mode the text is light on dark (the system's preference is followed);
- the keyboard reaches the navigation and the page's controls, with a visible focus;
- no error in the console (a CSP violation included: the ``page`` fixture fails the test on one).
Each page is saved in both modes under build/screenshots/ (every-<page>-phone-dark.png).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.dashboard.conftest import OWNER_EMAIL, OWNER_PASSWORD, Site, shoot


def pages_of(site: Site) -> list[str]:
    """One of each resource, made through the API and the agent API, and every page that shows them."""
    server_id, _ = site.agent_token("every-page-web-1")
    incident = site.api.post("/api/v1/incidents", json={"title": "Disk full", "severity": "critical",
                                                         "server_id": server_id}).json()
    heartbeat = site.api.post("/api/v1/heartbeats", json={"name": "nightly-backup", "interval": 86400,
                                                           "grace": 3600}).json()
    webhook = site.api.post("/api/v1/webhooks", json={"url": "https://93.184.216.34/hook"}).json()
    rule = site.api.post("/api/v1/alert-rules", json={"name": "CPU hot", "metric": "cpu.percent", "operator": ">=",
                                                       "threshold": 90, "for_s": 60, "severity": "warning"}).json()
    return ["/", "/servers", f"/servers/{server_id}", "/incidents", f"/incidents/{incident['id']}", "/alerts",
            "/alerts/new", f"/alerts/{rule['id']}/edit", "/heartbeats", f"/heartbeats/{heartbeat['id']}",
            "/webhooks", f"/webhooks/{webhook['id']}", "/api-keys", "/team"]


@pytest.fixture(scope="module")
def pages(site: Site) -> list[str]:
    return pages_of(site)


def _name(path: str) -> str:
    return path.strip("/").replace("/", "-") or "overview"


def _signed_in_context(browser: Any, site: Site, **options: Any) -> Any:
    context = browser.new_context(**options)
    page = context.new_page()
    page.goto(f"{site.base}/login")
    page.fill("#email", OWNER_EMAIL)
    page.fill("#password", OWNER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/")
    return context, page


def test_every_page_works_offline_at_phone_width_in_dark_mode(site: Site, browser: Any, pages: list[str]) -> None:
    context, page = _signed_in_context(browser, site, viewport={"width": 390, "height": 844},
                                       color_scheme="dark", is_mobile=True, has_touch=True)
    origin = urlsplit(site.base).netloc
    elsewhere: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: elsewhere.append(r.url) if urlsplit(r.url).netloc not in (origin, "") else None)
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    try:
        for path in pages:
            response = page.goto(f"{site.base}{path}")
            assert response is not None and response.status == 200, path
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow} px wider than a phone"
            colors = page.evaluate("[getComputedStyle(document.body).color, getComputedStyle(document.body)"
                                   ".backgroundColor]")
            text, background = (_luminance(c) for c in colors)
            assert text > background + 0.4, f"{path} is not in dark mode: {colors}"
            shoot(page, f"every-{_name(path)}-phone-dark")
        assert not elsewhere, f"requests left the platform: {elsewhere}"
        assert not errors, errors
    finally:
        context.close()


def test_the_keyboard_reaches_every_control(site: Site, browser: Any, pages: list[str]) -> None:
    context, page = _signed_in_context(browser, site, viewport={"width": 1280, "height": 900})
    try:
        for path in pages:
            page.goto(f"{site.base}{path}")
            # Hold the live refreshes still, or they replace controls (and their marks) while the test tabs.
            page.evaluate("document.addEventListener('htmx:beforeRequest', e => e.preventDefault())")
            reachable = page.evaluate("""() => [...document.querySelectorAll(
                'a[href], button, input:not([type=hidden]), select, textarea, summary')]
                .filter(el => el.checkVisibility({visibilityProperty: true}) && !el.disabled
                               && !(el.type === 'radio' && !el.checked))
                .length""")  # a radio group is one Tab stop
            seen = set()
            page.keyboard.press("Tab")
            first = page.evaluate("document.activeElement.textContent.trim()")
            assert first == "Skip to content", f"{path}: the first Tab lands on {first!r}"
            for _ in range(300):  # bounded: a date-time input takes a Tab per field
                page.keyboard.press("Tab")
                focused = page.evaluate("""() => { const el = document.activeElement; el.dataset.tabbed = '1';
                    const style = getComputedStyle(el);
                    return [el.tagName + '|' + (el.getAttribute('href') || el.name || el.textContent.trim()),
                            style.outlineStyle !== 'none' || style.boxShadow !== 'none',
                            [style.outlineStyle, el.matches(':focus'), el.matches(':focus-visible'), el.type]] }""")
                if focused[0].startswith("BODY|"):
                    break  # past the last control: the browser's own UI is next
                seen.add(focused[0])
                # A date (time) input hands focus to its own fields (day, month, hour...), which Chromium rings itself.
                assert focused[1] or focused[2][3] in ("date", "datetime-local"), \
                    f"{path}: {focused[0]} has no visible focus"
            assert any(item.startswith("A|/servers") for item in seen), f"{path}: the navigation is not reachable"
            tabbed = page.evaluate("document.querySelectorAll('[data-tabbed]').length")
            assert tabbed >= reachable * 0.9, f"{path}: Tab reached {tabbed} of {reachable} controls"
    finally:
        context.close()


def _luminance(css_color: str) -> float:
    """0 (black) to 1 (white) from ``rgb(r, g, b)`` / ``rgba(...)``."""
    parts = [float(p) for p in css_color[css_color.index("(") + 1:css_color.index(")")].split(",")[:3]]
    red, green, blue = (p / 255 for p in parts)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue
