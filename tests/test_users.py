"""Dashboard users (the groundwork of the dashboard, issue 15): accounts, argon2 hashes, roles onto scopes,
and `hostatlas user create`. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from hostatlas.apikeys.scopes import KNOWN_SCOPES, grants
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.errors import Conflict, InvalidInput
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Plan
from hostatlas.users import service as users
from hostatlas.users.models import Membership, Role, User
from tests.support import hostatlas_command

PASSWORD = "correct horse battery"


def test_a_user_is_stored_with_an_argon2_hash_and_signs_in_with_its_password(db: Database) -> None:
    with db.session(write=True) as session:
        team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG)
        user, membership = users.create_user(session, email=" Ada@Example.COM ", password=PASSWORD, team=team,
                                             role=Role.OWNER, now=utcnow())
        assert user.email == "ada@example.com" and membership.role == "owner"
    with db.session(write=False) as session:
        stored = session.scalars(select(User)).one()
        assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
        assert users.authenticate(session, "ADA@example.com", PASSWORD) is not None
        assert users.authenticate(session, "ada@example.com", PASSWORD + "!") is None
        assert users.authenticate(session, "nobody@example.com", PASSWORD) is None


def test_a_disabled_user_cannot_sign_in(db: Database) -> None:
    with db.session(write=True) as session:
        team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG)
        user, _ = users.create_user(session, email="off@example.com", password=PASSWORD, team=team,
                                    role=Role.MEMBER, now=utcnow())
        user.disabled = True
    with db.session(write=False) as session:
        assert users.authenticate(session, "off@example.com", PASSWORD) is None


def test_one_account_per_address_with_a_role_in_each_team(db: Database) -> None:
    with db.session(write=True) as session:
        default = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG)
        other = teams.create_team(session, "acme", plan=Plan.FREE)
        first, _ = users.create_user(session, email="bo@example.com", password=PASSWORD, team=default,
                                     role=Role.ADMIN, now=utcnow())
        again, _ = users.create_user(session, email="BO@example.com", password="another password!", team=other,
                                     role=Role.READ_ONLY, now=utcnow())
        assert again.id == first.id
        with pytest.raises(Conflict, match="already a member"):
            users.create_user(session, email="bo@example.com", password=PASSWORD, team=default, role=Role.MEMBER,
                              now=utcnow())
        roles = [(team.slug, membership.role) for membership, team in users.memberships(session, first.id)]
        assert roles == [("acme", "read-only"), ("default", "admin")]
    with db.session(write=False) as session:
        assert users.authenticate(session, "bo@example.com", PASSWORD) is not None  # the password stayed
        assert len(session.scalars(select(Membership)).all()) == 2


@pytest.mark.parametrize("email, password, fields", [
    ("not-an-address", PASSWORD, ["email"]),
    ("a@b", PASSWORD, ["email"]),
    ("nul\x00@example.com", PASSWORD, ["email"]),
    ("ok@example.com", "short", ["password"]),
    ("ok@example.com", "twelve chars\x00!", ["password"]),
    ("x" * 250 + "@example.com", "p" * 1025, ["email", "password"]),
])
def test_bad_input_names_every_field_and_stores_nothing(db: Database, email: str, password: str,
                                                        fields: list[str]) -> None:
    with db.session(write=True) as session:
        team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG)
        with pytest.raises(InvalidInput) as raised:
            users.create_user(session, email=email, password=password, team=team, role=Role.MEMBER, now=utcnow())
        assert [problem.field for problem in raised.value.fields] == fields
    with db.session(write=False) as session:
        assert session.scalars(select(User)).all() == []


def test_roles_map_onto_the_api_scopes() -> None:
    everything = sorted(scope for scope in KNOWN_SCOPES if ":" in scope and scope != "agent:register")
    assert all(grants(users.scopes_of(Role.OWNER), scope) for scope in everything)
    assert all(grants(users.scopes_of(Role.ADMIN), scope) for scope in everything)
    member = users.scopes_of(Role.MEMBER)
    assert grants(member, "incidents:write") and grants(member, "webhooks:read")
    assert not grants(member, "api_keys:write") and not grants(member, "webhooks:write")
    read_only = users.scopes_of(Role.READ_ONLY)
    assert all(grants(read_only, scope) == scope.endswith(":read") for scope in everything)


def test_the_user_create_command(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTATLAS_DATABASE_URL": ""}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*hostatlas_command(), "user", "create", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    made = run("--email", "ops@example.com", "--password", PASSWORD, "--role", "read-only")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("is read-only in team default")
    twice = run("--email", "ops@example.com", "--password", PASSWORD)
    assert twice.returncode == 1 and "already a member" in twice.stderr
    bad = run("--email", "nope", "--password", "short", "--team", "default")
    assert bad.returncode == 1 and "email:" in bad.stderr and "password:" in bad.stderr
    unknown = run("--email", "x@example.com", "--password", PASSWORD, "--team", "ghosts")
    assert unknown.returncode == 1 and "ghosts" in unknown.stderr
    assert PASSWORD not in made.stdout + made.stderr + twice.stderr  # the password is never echoed
