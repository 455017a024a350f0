"""Discovery snapshots: diff what an agent reports against what is stored, apply it, keep the history.

Each kind (services, domains, containers, certificates) is a full snapshot when present: items missing
from it are removed. A kind the agent leaves out entirely is left as it is (e.g. Docker not installed).
Within an item, every field is replaced: a field an (older) agent leaves out is stored as null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hostatlas.clock import isoformat_z
from hostatlas.events import service as events
from hostatlas.inventory.models import Certificate, Container, Domain, InventoryChange, InventoryRow, Service
from hostatlas.inventory.reload import reload_needed
from hostatlas.servers.models import Server


@dataclass(frozen=True)
class Kind:
    name: str  # singular, as stored in the change history
    plural: str  # as in the snapshot and the response
    model: type[Any]  # an InventoryRow model
    key_column: str  # the model attribute that identifies an item within a server
    key_field: str  # the snapshot field that identifies it
    fields: tuple[str, ...]  # compared and stored, besides the key
    # Columns worked out from the compared fields (stored, never compared: they change only with those).
    derived: Callable[[dict[str, Any]], dict[str, Any]] = lambda item: {}

    def key_of(self, item: dict[str, Any]) -> str:
        return str(item[self.key_field])

    def stored(self, item: dict[str, Any]) -> dict[str, Any]:
        """The columns an item sets: its fields (objects kept as JSON-ready values) and the derived ones."""
        values = {name: _json_ready(item.get(name)) if isinstance(item.get(name), dict) else item.get(name)
                  for name in self.fields}
        return {**values, **self.derived(values)}


def _domain_derived(values: dict[str, Any]) -> dict[str, Any]:
    return {"reload_needed": reload_needed(values.get("certificate"), values.get("served_certificate"))}


KINDS = (
    Kind("service", "services", Service, "name", "name", ("version", "status", "unit", "pid", "ports", "log_paths")),
    Kind("domain", "domains", Domain, "name", "name", ("source", "ssl_expiry", "certificate", "served_certificate"),
         derived=_domain_derived),
    Kind("container", "containers", Container, "container_id", "id", ("name", "image", "status")),
    Kind("certificate", "certificates", Certificate, "path", "path",
         ("subject", "issuer", "domains", "not_after", "fingerprint_sha256")),
)


@dataclass
class KindDiff:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _json_ready(value: Any) -> Any:
    """An object field as a JSON column keeps it: moments as the API writes them (``...Z``, whole seconds)."""
    if isinstance(value, datetime):
        return isoformat_z(value)
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value


def _item_state(kind: Kind, item: dict[str, Any]) -> dict[str, Any]:
    stored = kind.stored(item)
    return {name: _comparable(stored[name]) for name in kind.fields}


def _row_state(kind: Kind, row: InventoryRow) -> dict[str, Any]:
    return {name: _comparable(getattr(row, name)) for name in kind.fields}


def apply_kind(session: Session, server: Server, kind: Kind, items: list[dict[str, Any]], now: datetime) -> KindDiff:
    stored = {getattr(row, kind.key_column): row for row in session.scalars(
        select(kind.model).where(kind.model.server_id == server.id))}
    incoming = {kind.key_of(item): item for item in items}
    diff = KindDiff()
    for key, item in incoming.items():
        after = _item_state(kind, item)
        row = stored.get(key)
        if row is None:
            session.add(kind.model(server_id=server.id, team_id=server.team_id, first_seen_at=now, updated_at=now,
                                   **{kind.key_column: key}, **kind.stored(item)))
            diff.added.append(key)
            _remember(session, server, kind, "added", key, None, after, now)
            continue
        before = _row_state(kind, row)
        if before != after:
            for name, value in kind.stored(item).items():
                setattr(row, name, value)
            row.updated_at = now
            diff.changed.append(key)
            _remember(session, server, kind, "changed", key, before, after, now)
    gone = [key for key in stored if key not in incoming]
    for key in gone:
        _remember(session, server, kind, "removed", key, _row_state(kind, stored[key]), None, now)
        diff.removed.append(key)
    if gone:
        session.execute(delete(kind.model).where(kind.model.server_id == server.id,
                                                 getattr(kind.model, kind.key_column).in_(gone)))
    return diff


def _remember(session: Session, server: Server, kind: Kind, action: str, key: str, before: dict[str, Any] | None,
              after: dict[str, Any] | None, now: datetime) -> None:
    session.add(InventoryChange(server_id=server.id, team_id=server.team_id, kind=kind.name, action=action, key=key,
                                before=before, after=after, created_at=now))


def apply_snapshot(session: Session, server: Server, snapshot: dict[str, list[dict[str, Any]] | None],
                   now: datetime) -> dict[str, KindDiff]:
    """Apply every kind present in the snapshot; returns what was added, changed and removed per kind."""
    result = {kind.plural: apply_kind(session, server, kind, items, now)
              for kind in KINDS if (items := snapshot.get(kind.plural)) is not None}
    touched = {plural: vars(diff) for plural, diff in result.items() if diff.added or diff.changed or diff.removed}
    if touched:
        events.record(session, team_id=server.team_id, type=events.INVENTORY_CHANGED, resource_type="server",
                      resource_id=server.id, server_id=server.id, at=now,
                      payload={"server": {"id": server.id, "hostname": server.hostname}, "changes": touched})
    session.flush()
    return result
