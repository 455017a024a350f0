"""A server's charts and the list's sparklines, read exactly as ``/api/v1/servers/{id}/metrics`` and
``/api/v1/metrics`` read them (``telemetry.query.service``), then laid out on one time grid for uPlot.

``GET /servers/{id}/charts/{panel}?range=`` answers ``{"x": [unix s], "series": [{"label", "values"}], "meta"}``:
``x`` is every bucket of the window (gaps are ``null``, so a silent server shows as a gap, not a line), and
``meta`` the window the API would report (``from``, ``to``, ``step``, ``tier``) so it can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import ORJSONResponse
from sqlalchemy.orm import Session

from hostatlas.clock import now_unix
from hostatlas.dashboard.routing import PageRoute
from hostatlas.dashboard.viewer import Viewer, reader
from hostatlas.http import runtime
from hostatlas.http.deps import DbSession
from hostatlas.http.types import IdPath
from hostatlas.telemetry.query import service as telemetry
from hostatlas.telemetry.query.params import SeriesParams, Window
from hostatlas.telemetry.runtime import Telemetry
from hostatlas.telemetry.storage.contract import Agg
from hostatlas.telemetry.storage.stores import retention_of

router = APIRouter(route_class=PageRoute, include_in_schema=False)

RangeName = Literal["1h", "6h", "24h", "7d", "30d"]
# Each range's span and step: the step keeps charts near 250-1,000 points and picks the tier the API would for it
# (1h: raw points; 6h to 7d: the 1-minute rollup, so 7 days read at most 10,080 rows a series; 30d: hourly).
# (span, step) in seconds. Up to 7 days at one point a minute (10,080 points a series, from the 1-minute rollup).
RANGES: dict[str, tuple[int, int]] = {"1h": (3600, 15), "6h": (21_600, 60), "24h": (86_400, 60),
                                      "7d": (604_800, 60), "30d": (2_592_000, 3600)}
CHART_MAX_POINTS = 604_800 // 60 + 1  # a week of minutes, and the bucket the range starts in
DEFAULT_RANGE: RangeName = "6h"
# Ranges whose charts refetch themselves while the page is open (longer ones barely move in 15 s).
LIVE_RANGES = ("1h", "6h", "24h")


@dataclass(frozen=True)
class Line:
    metric: str
    name: str  # the series' label; a labelled metric (mount, iface) appends its label value


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    lines: tuple[Line, ...]


PANELS: dict[str, Panel] = {
    "cpu": Panel("CPU", "%", (Line("cpu.percent", "CPU"),)),
    "memory": Panel("Memory", "%", (Line("mem.used_percent", "memory"), Line("swap.used_percent", "swap"))),
    "disk": Panel("Disk used", "%", (Line("disk.used_percent", "disk"),)),
    # Bytes per second as the API has them; the chart writes them as KiB/s, MiB/s... (static/app.js).
    "network": Panel("Network", "B/s", (Line("net.rx_bytes", "rx"), Line("net.tx_bytes", "tx"))),
    "load": Panel("Load", "", (Line("load.1", "1 min"), Line("load.5", "5 min"), Line("load.15", "15 min"))),
}
PanelName = Literal["cpu", "memory", "disk", "network", "load"]


def _store(request: Request) -> telemetry.StoreAccess:
    return runtime.current(request).part(Telemetry).caught_up


def _grid(window: Window) -> list[int]:
    return list(range(window.start, window.end, window.step))


def _label(line: Line, labels: dict[str, str]) -> str:
    return " ".join([line.name, *(labels[key] for key in sorted(labels))])


def panel_data(request: Request, session: Session, viewer: Viewer, server_id: int, panel: Panel,
               range_name: str) -> dict[str, Any]:
    """One panel's series for one of the viewer's servers (404 for another team's), on one grid."""
    span, step = RANGES[range_name]
    now = now_unix()
    settings = runtime.current(request).settings
    x: list[int] = []
    series: list[dict[str, Any]] = []
    window: Window | None = None
    for line in panel.lines:
        params = SeriesParams(metric=line.metric, start=str(int(now) - span), end=str(int(now)), step=str(step),
                              agg=Agg.AVG, labels={}, max_points=CHART_MAX_POINTS)
        found = telemetry.server_metrics(session, _store(request), team_id=viewer.team_id, server_id=server_id,
                                         params=params, retention=retention_of(settings), now=now)
        if window is None:
            window = found.window
            x = _grid(window)
        for one in found.series:
            # Every bucket of the grid, None where the server sent nothing: an outage shows as a gap.
            values: list[float | None] = [None] * len(x)
            for moment, value in one.points:
                slot = (moment - window.start) // window.step
                if 0 <= slot < len(values):
                    values[slot] = value
            series.append({"label": _label(line, one.labels), "values": values})
    meta = ({"from": window.start, "to": window.end, "step": window.step, "tier": window.tier.value}
            if window else {})
    return {"x": x, "series": series, "meta": meta}


@router.get("/servers/{server_id}/charts/{panel}")
def chart(server_id: IdPath, panel: PanelName, request: Request, session: DbSession,
          range_: RangeName = Query(DEFAULT_RANGE, alias="range"),
          viewer: Viewer = Depends(reader("metrics:read"))) -> ORJSONResponse:
    # orjson: a week at one point a minute is 10,081 numbers a series, which the standard json takes ~10x longer to
    # write.
    return ORJSONResponse(panel_data(request, session, viewer, server_id, PANELS[panel], range_))


# The list's sparklines: the last hour at 2-minute steps, from the 1-minute rollup; one store query per metric for
# the whole page of servers.
SPARK_SPAN, SPARK_STEP = 3600, 120
SPARKS: tuple[tuple[str, str, dict[str, str]], ...] = (("cpu", "cpu.percent", {}),
                                                      ("memory", "mem.used_percent", {}),
                                                      ("disk", "disk.used_percent", {"mount": "/"}))


@dataclass(frozen=True)
class Spark:
    values: list[float | None]
    latest: float | None


def sparklines(request: Request, session: Session, viewer: Viewer,
               server_ids: Sequence[int]) -> dict[int, dict[str, Spark]]:
    """{server id: {"cpu"|"memory"|"disk": Spark}} for a page of servers (missing: nothing reported)."""
    found: dict[int, dict[str, Spark]] = {server_id: {} for server_id in server_ids}
    if not server_ids or not viewer.can("metrics:read"):
        return found
    now = now_unix()
    retention = retention_of(runtime.current(request).settings)
    for name, metric, labels in SPARKS:
        params = SeriesParams(metric=metric, start=str(int(now) - SPARK_SPAN), end=str(int(now)),
                              step=str(SPARK_STEP), agg=Agg.AVG, labels=labels)
        answer = telemetry.fleet_metrics(session, _store(request), team_id=viewer.team_id,
                                         server_ids=list(server_ids), tag=None, merge=False, params=params,
                                         retention=retention, now=now)
        grid = _grid(answer.window)
        index = {moment: i for i, moment in enumerate(grid)}
        for one in answer.series:
            if one.server is None or name in found.get(one.server.id, {"": None}):
                continue
            values: list[float | None] = [None] * len(grid)
            for moment, value in one.points:
                if moment in index:
                    values[index[moment]] = value
            latest = next((v for v in reversed(values) if v is not None), None)
            found[one.server.id][name] = Spark(values, latest)
    return found
