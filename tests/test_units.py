"""Pure rules: token format, scope grants, key status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hostatlas import tokens
from hostatlas.apikeys import scopes
from hostatlas.apikeys.models import ApiKey, KeyStatus


def test_tokens_carry_a_checksum() -> None:
    token = tokens.generate(tokens.API_KEY_PREFIX)
    assert tokens.is_well_formed(token, tokens.API_KEY_PREFIX)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert not tokens.is_well_formed(flipped, tokens.API_KEY_PREFIX)
    assert not tokens.is_well_formed(token, tokens.AGENT_TOKEN_PREFIX)
    assert not tokens.is_well_formed(token + "x", tokens.API_KEY_PREFIX)
    assert tokens.generate(tokens.API_KEY_PREFIX) != token


def test_token_hash_is_sha256_hex() -> None:
    assert tokens.hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert tokens.hashes_match(tokens.hash_token("abc"), "abc")
    assert not tokens.hashes_match(tokens.hash_token("abc"), "abd")


def test_write_implies_read_and_star_implies_all() -> None:
    assert scopes.grants(["servers:write"], "servers:read")
    assert not scopes.grants(["servers:read"], "servers:write")
    assert not scopes.grants(["servers:write"], "metrics:read")
    assert scopes.grants(["*"], "api_keys:write")
    assert scopes.grants(["*"], "agent:register")
    assert not scopes.grants(["servers:write"], "agent:register")


def test_unknown_scopes_are_reported() -> None:
    assert scopes.unknown_scopes(["servers:read", "servers:admin", "root"]) == ["servers:admin", "root"]


def test_key_status_at_a_moment() -> None:
    now = datetime(2026, 3, 21, 14, 0, tzinfo=UTC)
    key = ApiKey(expires_at=now + timedelta(days=1), revoked_at=None)
    assert key.status_at(now) is KeyStatus.ACTIVE
    assert key.status_at(now + timedelta(days=1)) is KeyStatus.EXPIRED
    key.revoked_at = now + timedelta(hours=1)
    assert key.status_at(now + timedelta(hours=2)) is KeyStatus.REVOKED


def test_time_binder_matches_the_column_types_processing() -> None:
    """The ping writer's fast datetime binding must store exactly what UTCDateTime stores (SQLite compares
    the text), for both dialects."""
    from datetime import timezone

    from sqlalchemy.dialects import postgresql, sqlite

    from hostatlas.db.base import UTCDateTime, time_binder

    column = UTCDateTime()
    moments = [datetime(2026, 11, 26, 21, 0, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 59, 59, 999_999, tzinfo=UTC),
               datetime(2026, 3, 29, 3, 0, 0, 7, tzinfo=timezone(timedelta(hours=2))), None]
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        slow = column.dialect_impl(dialect).bind_processor(dialect)
        fast = time_binder(dialect)
        for moment in moments:
            expected = slow(moment) if slow is not None else column.process_bind_param(moment, dialect)
            assert fast(moment) == expected, (dialect.name, moment)
