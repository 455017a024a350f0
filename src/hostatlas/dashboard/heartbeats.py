"""Dashboard pages: heartbeats (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from hostatlas.dashboard.routing import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)
