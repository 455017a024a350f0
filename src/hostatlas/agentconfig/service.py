"""Agent config: the team's defaults and each server's overrides, and the effective config an agent runs
with (built-in defaults, overlaid by the team's defaults, then by the server's)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from hostatlas.agentconfig.models import AgentConfigOverride
from hostatlas.agentconfig.schemas import FEATURES, AgentSettings, EffectiveConfig, ServerAgentConfig
from hostatlas.servers.service import get_server

BUILT_IN: dict[str, Any] = {
    "metrics_interval": 15,
    "checkin_interval": 60,
    "log_paths": [],
    "features": dict.fromkeys(FEATURES, True),
}


def _override(session: Session, team_id: int, server_id: int | None) -> AgentConfigOverride | None:
    stmt = select(AgentConfigOverride).where(AgentConfigOverride.team_id == team_id)
    stmt = stmt.where(AgentConfigOverride.server_id.is_(None) if server_id is None
                      else AgentConfigOverride.server_id == server_id)
    return session.scalar(stmt)


def overrides(session: Session, team_id: int, server_id: int | None) -> dict[str, Any]:
    row = _override(session, team_id, server_id)
    return dict(row.values) if row else {}


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    merged = {key: (dict(value) if isinstance(value, dict) else value) for key, value in BUILT_IN.items()}
    for layer in layers:
        for key, value in layer.items():
            if key == "features":
                merged["features"].update(value)
            else:
                merged[key] = value
    return merged


def effective(session: Session, team_id: int, server_id: int | None) -> EffectiveConfig:
    layers = [overrides(session, team_id, None)]
    if server_id is not None:
        layers.append(overrides(session, team_id, server_id))
    values = merge(*layers)
    digest = hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return EffectiveConfig(version=digest, **values)


def config_of(session: Session, team_id: int, server_id: int | None) -> ServerAgentConfig:
    """The team's (``server_id`` None) or one of its servers' settings, and what they come to. Another
    team's server is not found."""
    if server_id is not None:
        get_server(session, team_id=team_id, server_id=server_id)
    return ServerAgentConfig(overrides=overrides(session, team_id, server_id),
                             effective=effective(session, team_id, server_id))


def replace(session: Session, team_id: int, server_id: int | None, settings: AgentSettings) -> ServerAgentConfig:
    """Store a team's or one of its servers' settings (AgentSettings has checked them: features known,
    bounds); returns the new config. Another team's server is not found, and nothing is stored."""
    if server_id is not None:
        get_server(session, team_id=team_id, server_id=server_id)
    row = _override(session, team_id, server_id)
    if row is None:
        row = AgentConfigOverride(team_id=team_id, server_id=server_id)
        session.add(row)
    row.values = settings.set_values()
    session.flush()
    return config_of(session, team_id, server_id)

