from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys.models import ApiKey, KeyStatus
from hostatlas.clock import utcnow
from hostatlas.http.types import Id, NonNegativeInt, Storable, Timestamp, TimestampIn

KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable]
Scope = Annotated[str, StringConstraints(max_length=64), Storable]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "CI/CD Pipeline", "scopes": ["servers:read", "metrics:read"], "expires_at": "2026-06-21T00:00:00Z"}
    ]})

    name: KeyName
    scopes: list[Scope] = Field(min_length=1, max_length=50, description="e.g. servers:read, incidents:write, *")
    expires_at: TimestampIn | None = Field(None, description="When the key stops working; null: never")

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = scope_rules.unknown_scopes(value)
        if unknown:
            raise PydanticCustomError("unknown_scope", "Unknown scopes: {unknown}", {"unknown": ", ".join(unknown)})
        return value

    @field_validator("expires_at")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= utcnow():
            raise PydanticCustomError("in_the_past", "The expiry must be in the future")
        return value


class ApiKeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName


class ApiKeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: NonNegativeInt | None = Field(
        None, le=30 * 86_400,
        description="How long the old key keeps working (default 24 h). 0 retires it at once.",
    )


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 7, "name": "CI/CD Pipeline", "status": "active", "masked_key": "sk_live_••••••••••••••••3f7a",
        "scopes": ["metrics:read", "servers:read"], "created_at": "2026-03-01T09:00:00Z",
        "expires_at": "2026-06-21T00:00:00Z", "last_used_at": "2026-03-21T14:30:00Z", "last_used_ip": "10.0.1.5",
        "revoked_at": None, "rotated_at": None, "rotated_from_id": None,
    }]})

    id: Id
    name: str
    status: KeyStatus
    masked_key: str = Field(description="Prefix and last four characters, e.g. sk_live_••••3f7a")
    scopes: list[str]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    last_used_ip: str | None
    revoked_at: Timestamp | None
    rotated_at: Timestamp | None = Field(description="When a successor was issued by rotation")
    rotated_from_id: Id | None = Field(description="The key this one replaced by rotation")

    @classmethod
    def of(cls, key: ApiKey, now: datetime) -> ApiKeyOut:
        return cls(
            id=key.id, name=key.name, status=key.status_at(now), masked_key=key.masked, scopes=key.scopes,
            created_at=key.created_at, expires_at=key.expires_at, last_used_at=key.last_used_at,
            last_used_ip=key.last_used_ip, revoked_at=key.revoked_at, rotated_at=key.rotated_at,
            rotated_from_id=key.rotated_from_id,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The raw key. Shown this once: store it now, it cannot be recovered")


class ApiKeyRotated(ApiKeyCreated):
    previous: ApiKeyOut = Field(description="The rotated key, working until its expires_at")
