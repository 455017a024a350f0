from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from hostatlas.http.types import Flag, NonNegativeInt, Storable

LogPath = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024, pattern=r"^/"),
                    Storable]
FEATURES = ("logs", "discovery", "containers", "certificates", "crash_reports")


def _known_features(flags: dict[str, bool]) -> dict[str, bool]:
    unknown = sorted(set(flags) - set(FEATURES))
    if unknown:
        raise PydanticCustomError("unknown_feature", "Unknown features: {unknown}; known: {known}",
                                  {"unknown": ", ".join(map(repr, unknown)), "known": ", ".join(FEATURES)})
    return flags


Features = Annotated[dict[str, Flag], AfterValidator(_known_features)]


class AgentSettings(BaseModel):
    """What a team or a server may set. Every field is optional: unset fields inherit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"metrics_interval": 15, "log_paths": ["/var/log/nginx/error.log"], "features": {"containers": False}}
    ]})

    metrics_interval: NonNegativeInt | None = Field(None, ge=5, le=3600, description="Seconds between metric batches")
    checkin_interval: NonNegativeInt | None = Field(None, ge=10, le=3600, description="Seconds between check-ins")
    log_paths: list[LogPath] | None = Field(None, max_length=200, description="Absolute paths or globs to tail")
    features: Features | None = Field(None, description=f"Feature flags: {', '.join(FEATURES)}")

    def set_values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EffectiveConfig(BaseModel):
    """What an agent runs with: defaults, then the team's values, then the server's."""

    version: str = Field(description="Changes whenever the config does; also the ETag")
    metrics_interval: NonNegativeInt
    checkin_interval: NonNegativeInt
    log_paths: list[str]
    features: dict[str, bool]


class ServerAgentConfig(BaseModel):
    overrides: dict[str, Any] = Field(description="What this server sets itself")
    effective: EffectiveConfig
