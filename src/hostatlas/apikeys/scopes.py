"""The scope vocabulary: ``<resource>:read|write``, ``agent:register`` and ``*``."""

from __future__ import annotations

from collections.abc import Iterable

RESOURCES = (
    "servers",
    "metrics",
    "logs",
    "incidents",
    "alert_rules",
    "heartbeats",
    "webhooks",
    "api_keys",
)
ALL_SCOPES = "*"
AGENT_REGISTER = "agent:register"
KNOWN_SCOPES = frozenset(
    [ALL_SCOPES, AGENT_REGISTER]
    + [f"{resource}:{action}" for resource in RESOURCES for action in ("read", "write")]
)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope not in KNOWN_SCOPES]


def grants(held: Iterable[str], wanted: str) -> bool:
    """Whether the held scopes allow ``wanted``; a ``write`` scope carries its ``read``."""
    held_set = set(held)
    if ALL_SCOPES in held_set or wanted in held_set:
        return True
    resource, _, action = wanted.partition(":")
    return action == "read" and f"{resource}:write" in held_set


def normalise(scopes: Iterable[str]) -> list[str]:
    """Deduplicated, in a stable order, so equal scope sets look equal."""
    return sorted(set(scopes))
