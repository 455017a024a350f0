from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

LogPath = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024, pattern=r"^/")]
FEATURES = ("logs", "discovery", "containers", "certificates", "crash_reports")


class AgentSettings(BaseModel):
    """What a team or a server may set. Every field is optional: unset fields inherit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"metrics_interval": 15, "log_paths": ["/var/log/nginx/error.log"], "features": {"containers": False}}
    ]})

    metrics_interval: int | None = Field(None, ge=5, le=3600, description="Seconds between metric batches")
    checkin_interval: int | None = Field(None, ge=10, le=3600, description="Seconds between check-ins")
    log_paths: list[LogPath] | None = Field(None, max_length=200, description="Absolute paths or globs to tail")
    features: dict[str, bool] | None = Field(None, description=f"Feature flags: {', '.join(FEATURES)}")

    def set_values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EffectiveConfig(BaseModel):
    """What an agent runs with: defaults, then the team's values, then the server's."""

    version: str = Field(description="Changes whenever the config does; also the ETag")
    metrics_interval: int
    checkin_interval: int
    log_paths: list[str]
    features: dict[str, bool]


class ServerAgentConfig(BaseModel):
    overrides: dict[str, Any] = Field(description="What this server sets itself")
    effective: EffectiveConfig
