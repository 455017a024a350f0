"""Docker containers, from the daemon's API over its unix socket."""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

import httpx

from .once import warn_once

log = logging.getLogger("hostatlas_agent.discovery.docker")

TIMEOUT_S = 3.0
MAX_CONTAINERS = 2000
API_PATH = "/v1.41/containers/json"
UNVERSIONED_PATH = "/containers/json"


def list_containers(socket_path: str) -> list[dict[str, Any]] | None:
    """The containers, all states, sorted by name; None when there is no daemon or it did not answer properly.

    None and [] differ on purpose: the platform keeps its containers when the kind is left out, and deletes them
    on []; only a daemon that answered with no containers may empty the list."""
    try:
        if not stat.S_ISSOCK(os.stat(socket_path).st_mode):
            return None
    except OSError:
        return None
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path, verify=False), base_url="http://docker",
                          timeout=TIMEOUT_S) as client:
            response = client.get(API_PATH, params={"all": "1"})
            if response.status_code in (400, 404):  # a daemon too old (or too new) for the pinned API version
                response = client.get(UNVERSIONED_PATH, params={"all": "1"})
            response.raise_for_status()
            body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        warn_once(log, "Docker at %s did not answer: %s", socket_path, exc)
        return None
    if not isinstance(body, list):
        warn_once(log, "Docker at %s answered something other than a list", socket_path)
        return None
    containers = [item for item in (_container(raw) for raw in body) if item is not None]
    containers.sort(key=lambda c: (c["name"], c["id"]))
    return containers[:MAX_CONTAINERS]


def _container(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("Id"), str) or not raw["Id"]:
        return None
    names = raw.get("Names") or []
    name = names[0] if names and isinstance(names[0], str) else raw["Id"][:12]
    state = raw.get("State")
    if not isinstance(state, str) or not state:
        # API versions before 1.23 only have the human Status ("Up 2 hours", "Exited (0) ...").
        status_text = str(raw.get("Status") or "").lower()
        state = "running" if status_text.startswith("up") else (status_text.split(" ", 1)[0] or "unknown")
    return {"id": raw["Id"][:12], "name": name.lstrip("/"), "image": str(raw.get("Image") or ""), "status": state}
