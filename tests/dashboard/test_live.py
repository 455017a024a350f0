"""Live pages: what changes on the platform shows without a reload, and a page left open does not grow.

"Overnight" is compressed: the site refreshes its live parts every 0.2 s instead of every 15 s, so a minute here is
about 300 refreshes, as many as 75 minutes at the default. The JavaScript heap (after a forced collection), the
DOM node count and the event listener count must be flat from the first refreshes to the last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import Site, chromium_or_skip, shoot, sign_in, start_site
from tests.support import bearer, wait_until


@pytest.fixture(scope="module")
def fast_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    yield from start_site(tmp_path_factory.mktemp("live"), {"HOSTATLAS_DASHBOARD_REFRESH": "0.2"})


def figure(page: Any, name: str) -> int:
    return int(page.inner_text(f"[data-figure={name}]"))


def test_the_overview_follows_the_platform_without_a_reload(fast_site: Site, page: Any) -> None:
    sign_in(page, fast_site)
    page.evaluate("window.__same_document = true")  # gone if the page reloaded
    before = figure(page, "incidents-open")
    created = fast_site.api.post("/api/v1/incidents", json={"title": "Disk full on db-1", "severity": "critical"})
    assert created.status_code == 201, created.text
    wait_until(lambda: figure(page, "incidents-open") == before + 1, timeout=10, what="the open incident count")
    wait_until(lambda: "Disk full on db-1" in page.inner_text("#overview-live"), timeout=10, what="the incident")
    fast_site.agent_token("live-web-1")
    wait_until(lambda: figure(page, "servers-online") >= 1, timeout=10, what="the enrolled server")
    assert page.evaluate("window.__same_document") is True
    shoot(page, "overview-live")


def _memory(page: Any, cdp: Any) -> tuple[int, int, int]:
    """Heap bytes, DOM nodes, event listeners: the least of five samples, since a refresh in flight briefly holds
    a parsed fragment (a second document, its nodes and listeners) that is not kept."""
    samples = []
    for _ in range(5):
        cdp.send("HeapProfiler.collectGarbage")
        used = int(cdp.send("Runtime.getHeapUsage")["usedSize"])
        counters = cdp.send("Memory.getDOMCounters")
        samples.append((used, int(counters["nodes"]), int(counters["jsEventListeners"])))
        page.wait_for_timeout(70)
    return min(s[0] for s in samples), min(s[1] for s in samples), min(s[2] for s in samples)


def assert_stays_flat(page: Any, event: str, *, warm_up: int, then: int) -> None:
    """Count ``event`` on the page; after ``warm_up`` of them, its heap (under 512 KB of growth), DOM nodes and
    event listeners (no growth) must not grow over ``then`` more."""
    cdp = page.context.new_cdp_session(page)
    page.evaluate(f"window.__seen = 0; document.addEventListener('{event}', () => {{ window.__seen++; }})")

    def seen() -> int:
        return int(page.evaluate("window.__seen"))

    wait_until(lambda: seen() >= warm_up, timeout=30, interval=0.2, what=f"{warm_up} {event}")
    start = _memory(page, cdp)
    wait_until(lambda: seen() >= warm_up + then, timeout=90, interval=0.5, what=f"{then} more {event}")
    end = _memory(page, cdp)
    heap_growth = end[0] - start[0]
    assert heap_growth < 512 * 1024, f"heap grew by {heap_growth} bytes over {then} {event} ({start} -> {end})"
    assert end[1] <= start[1], f"DOM nodes grew over {then} {event}: {start[1]} -> {end[1]}"
    assert end[2] <= start[2], f"event listeners grew over {then} {event}: {start[2]} -> {end[2]}"


def test_a_page_left_open_does_not_grow(fast_site: Site, page: Any) -> None:
    # Something on every part of the overview, so that each refresh rebuilds real rows.
    for n in range(5):
        fast_site.api.post("/api/v1/incidents", json={"title": f"Load high on app-{n}", "severity": "warning"})
    sign_in(page, fast_site)
    assert_stays_flat(page, "htmx:afterSwap", warm_up=25, then=200)


def test_a_server_page_with_live_charts_does_not_grow(fast_site: Site, page: Any) -> None:
    """Five charts refetched and redrawn (uPlot) every 0.2 s, and the facts panel swapped by htmx."""
    server_id, token = fast_site.agent_token("live-charts-1")
    now = int(time.time())
    series = [{"metric": metric, "labels": {}, "points": [[now - 15 * n, float(value + n % 7)] for n in range(200)]}
              for metric, value in (("cpu.percent", 20), ("mem.used_percent", 50), ("load.1", 1))]
    sent = httpx.post(f"{fast_site.base}/api/v1/agent/metrics", json={"series": series}, headers=bearer(token))
    assert sent.status_code in (200, 202), sent.text
    sign_in(page, fast_site)
    page.goto(f"{fast_site.base}/servers/{server_id}?range=1h")
    assert_stays_flat(page, "hostatlas:chart-drawn", warm_up=50, then=500)
