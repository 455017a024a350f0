"""OpenAPI pieces shared by every route: the error envelope and which errors an operation may answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    field: str = Field(examples=["interval"])
    code: str = Field(examples=["greater_than_equal"])
    message: str = Field(examples=["Input should be greater than or equal to 30"])


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, stable", examples=["validation_failed"])
    message: str = Field(description="For humans")
    status: int
    request_id: str = Field(description="Also in the X-Request-Id header; quote it when asking for help")
    fields: list[FieldError] | None = Field(None, description="On validation errors: one per invalid field")


class ErrorEnvelope(BaseModel):
    error: ErrorBody


_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("Malformed request", "malformed_json", "The request body is not valid JSON"),
    401: ("No, unknown, expired or revoked key", "api_key_expired", "The API key has expired"),
    403: ("The key lacks the scope", "missing_scope", "This API key lacks the scope 'servers:write'"),
    404: ("Not found, or another team's", "not_found", "Resource not found"),
    409: ("Conflicts with the current state", "conflict", "The request conflicts with the current state"),
    413: ("Body too large", "payload_too_large", "The body exceeds 1048576 bytes"),
    415: ("Body is not JSON", "unsupported_media_type", "Send the body as application/json"),
    422: ("Invalid fields", "validation_failed", "The request has invalid fields"),
    429: ("Rate limited; see Retry-After", "rate_limited", "Rate limit of 600 requests exceeded"),
}

AUTH_ERRORS = (401, 403, 429)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry documenting the given error statuses in the envelope."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *AUTH_ERRORS}):
        summary, code, message = _EXAMPLES[status]
        example: dict[str, Any] = {"error": {"code": code, "message": message, "status": status,
                                             "request_id": "req_3f9c2a7d41e0b5a6c8d9"}}
        if status == 422:
            example["error"]["fields"] = [{"field": "scopes[0]", "code": "unknown_scope",
                                           "message": "Unknown scopes: servers:admin"}]
        documented[status] = {"model": ErrorEnvelope, "description": summary,
                              "content": {"application/json": {"example": example}}}
    return documented


# Schemas of bodies that routes decode themselves (documented, not validated by FastAPI).
RAW_BODY_SCHEMAS: dict[str, dict[str, Any]] = {}


def raw_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its JSON body itself, entry by entry."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    RAW_BODY_SCHEMAS.update(schema.pop("$defs", {}))
    RAW_BODY_SCHEMAS[model.__name__] = schema
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def with_raw_body_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(RAW_BODY_SCHEMAS)
    return openapi
