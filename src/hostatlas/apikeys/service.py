"""API key lifecycle: create, list, rename, authenticate, revoke, rotate. Pure domain code: no HTTP here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from hostatlas import tokens
from hostatlas.apikeys import scopes as scope_rules
from hostatlas.apikeys.models import ApiKey, KeyStatus
from hostatlas.errors import Conflict, FieldProblem, InvalidInput, NotFound, PermissionDenied, Unauthenticated

MAX_ROTATION_GRACE = timedelta(days=30)


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: the record, and the raw secret that is shown this once."""

    record: ApiKey
    raw: str


@dataclass(frozen=True)
class Rotation:
    successor: IssuedKey
    previous: ApiKey  # the rotated key, now expiring at the end of the grace


def _issue(session: Session, *, team_id: int, name: str, scopes: list[str], expires_at: datetime | None,
           rotated_from_id: int | None = None) -> IssuedKey:
    raw = tokens.generate(tokens.API_KEY_PREFIX)
    record = ApiKey(
        team_id=team_id,
        name=name,
        key_hash=tokens.hash_token(raw),
        prefix=tokens.API_KEY_PREFIX,
        last_four=raw[-4:],
        scopes=scope_rules.normalise(scopes),
        expires_at=expires_at,
        rotated_from_id=rotated_from_id,
    )
    session.add(record)
    session.flush()
    return IssuedKey(record, raw)


def check_grantable(scopes: Iterable[str], granted_by: Iterable[str]) -> None:
    """A key grants only scopes it holds: every path that issues a key (create, rotate, ...) asks here."""
    held = list(granted_by)
    for scope in scopes:
        if scope in scope_rules.KNOWN_SCOPES and not scope_rules.grants(held, scope):
            raise PermissionDenied("scope_not_held", f"A key cannot grant '{scope}', which it does not hold")


def create_key(session: Session, *, team_id: int, name: str, scopes: list[str],
               expires_at: datetime | None, now: datetime, granted_by: Iterable[str]) -> IssuedKey:
    """``granted_by``: the scopes of the key asking for this one."""
    check_grantable(scopes, granted_by)
    problems = []
    unknown = scope_rules.unknown_scopes(scopes)
    if unknown:
        problems.append(FieldProblem("scopes", "unknown_scope", f"Unknown scopes: {', '.join(unknown)}"))
    if not scopes:
        problems.append(FieldProblem("scopes", "required", "Give the key at least one scope"))
    if expires_at is not None and expires_at <= now:
        problems.append(FieldProblem("expires_at", "in_the_past", "The expiry must be in the future"))
    if problems:
        raise InvalidInput(problems)
    return _issue(session, team_id=team_id, name=name, scopes=scopes, expires_at=expires_at)


def status_condition(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    """SQL for ``ApiKey.status_at(now) == status``, so lists can filter by status."""
    revoked = and_(ApiKey.revoked_at.is_not(None), ApiKey.revoked_at <= now)
    expired = and_(ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now)
    if status is KeyStatus.REVOKED:
        return revoked
    if status is KeyStatus.EXPIRED:
        return and_(~revoked, expired)
    return and_(or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now), ~expired)


def listing(team_id: int, *, status: KeyStatus | None, q: str | None, now: datetime) -> Select[ApiKey]:
    """The team's keys, filtered (the caller pages and sorts): in ``status`` as of ``now``, named like ``q``."""
    stmt = select(ApiKey).where(ApiKey.team_id == team_id)
    if status is not None:
        stmt = stmt.where(status_condition(status, now))
    if q:
        stmt = stmt.where(ApiKey.name.icontains(q, autoescape=True))
    return stmt


def get_key(session: Session, *, team_id: int, key_id: int) -> ApiKey:
    # Another team's key is indistinguishable from a missing one.
    record = session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.team_id == team_id))
    if record is None:
        raise NotFound("API key", "api_key_not_found")
    return record


def rename_key(session: Session, *, team_id: int, key_id: int, name: str) -> ApiKey:
    record = get_key(session, team_id=team_id, key_id=key_id)
    record.name = name
    return record


def revoke_key(session: Session, *, team_id: int, key_id: int, now: datetime) -> ApiKey:
    record = get_key(session, team_id=team_id, key_id=key_id)
    if record.revoked_at is None:
        record.revoked_at = now
    return record


def rotate_key(session: Session, *, team_id: int, key_id: int, grace: timedelta | None, default_grace: timedelta,
               now: datetime, granted_by: Iterable[str]) -> Rotation:
    """Issue a successor with the same scopes; the old key keeps working until the grace ends: ``grace``, or
    when none is asked for ``default_grace`` (the deployment's, ``Settings.default_rotation_grace``).

    The successor is a new key with the old one's scopes, so the caller must hold them all, as if creating it.
    """
    if grace is None:
        grace = default_grace
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise InvalidInput.single(
            "grace_seconds", "out_of_range", f"Between 0 and {int(MAX_ROTATION_GRACE.total_seconds())}"
        )
    old = get_key(session, team_id=team_id, key_id=key_id)
    check_grantable(old.scopes, granted_by)
    status = old.status_at(now)
    if status is not KeyStatus.ACTIVE:
        raise Conflict(f"Only an active key can be rotated; this one is {status.value}", "api_key_not_active")
    if old.rotated_at is not None:
        raise Conflict("This key was already rotated; rotate its successor instead", "api_key_already_rotated")
    successor = _issue(session, team_id=team_id, name=old.name, scopes=list(old.scopes),
                       expires_at=old.expires_at, rotated_from_id=old.id)
    grace_end = now + grace
    old.rotated_at = now
    if old.expires_at is None or old.expires_at > grace_end:
        old.expires_at = grace_end
    return Rotation(successor, old)


def authenticate(session: Session, raw: str, now: datetime) -> ApiKey:
    """The active key behind a raw secret, or ``Unauthenticated`` with a code that says why not."""
    if raw.startswith(tokens.AGENT_TOKEN_PREFIX):
        raise Unauthenticated("wrong_token_type", "Agent tokens only work on /api/v1/agent/ endpoints")
    if not tokens.is_well_formed(raw, tokens.API_KEY_PREFIX):
        raise Unauthenticated("invalid_api_key", "The API key is not valid")
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == tokens.hash_token(raw)))
    # The lookup is by hash; comparing again in constant time keeps the check itself timing-safe.
    if record is None or not tokens.hashes_match(record.key_hash, raw):
        raise Unauthenticated("invalid_api_key", "The API key is not valid")
    status = record.status_at(now)
    if status is KeyStatus.REVOKED:
        raise Unauthenticated("api_key_revoked", "The API key has been revoked")
    if status is KeyStatus.EXPIRED:
        raise Unauthenticated("api_key_expired", "The API key has expired")
    return record
