"""Users and memberships: the rules, in one place for the command line and (later) the dashboard.

- An email is one account (compared lower-cased); adding an existing user to another team is a membership.
- Passwords are hashed with argon2id (argon2-cffi's defaults, which follow RFC 9106's recommendations); a
  password is 12 to 1,024 characters without NUL. Only the hash is stored.
- A role maps onto the API's scopes (``scopes_of``), so a signed-in person can do exactly what an API key with
  those scopes could: owner and admin everything, member everything but API keys and webhooks (which hand out
  the team's data to somebody else), read-only every ``:read`` scope.
"""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostatlas.apikeys.scopes import ALL_SCOPES, RESOURCES
from hostatlas.errors import Conflict, FieldProblem, InvalidInput
from hostatlas.teams.models import Team
from hostatlas.users.models import Membership, Role, User

EMAIL_PATTERN = re.compile(r"^[^@\s\x00]{1,64}@[^@\s\x00]{1,189}\.[^@\s\x00.]{1,63}$")
MIN_PASSWORD, MAX_PASSWORD = 12, 1024
_HASHER = PasswordHasher()
# Verifying against this when the email is unknown keeps the answer's timing from telling who has an account.
_DUMMY_HASH = _HASHER.hash("hostatlas: no such user, same work")
_MEMBER_EXCLUDED = ("api_keys", "webhooks")


def scopes_of(role: Role) -> list[str]:
    if role in (Role.OWNER, Role.ADMIN):
        return [ALL_SCOPES]
    if role is Role.MEMBER:
        return [f"{r}:write" for r in RESOURCES if r not in _MEMBER_EXCLUDED] + [
            f"{r}:read" for r in _MEMBER_EXCLUDED]
    return [f"{r}:read" for r in RESOURCES]


def _checked(email: str, password: str) -> str:
    problems = []
    address = email.strip().lower()
    if len(address) > 254 or not EMAIL_PATTERN.match(address):
        problems.append(FieldProblem("email", "invalid_email", "Give an email address like name@example.com"))
    if "\x00" in password or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        problems.append(FieldProblem("password", "invalid_password",
                                     f"Use {MIN_PASSWORD} to {MAX_PASSWORD} characters (no NUL)"))
    if problems:
        raise InvalidInput(problems)
    return address


def create_user(session: Session, *, email: str, password: str, team: Team, role: Role,
                now: datetime) -> tuple[User, Membership]:
    """A new user with a role in ``team``; an existing one (same email) gets the membership, password unchanged."""
    address = _checked(email, password)
    user = session.scalar(select(User).where(func.lower(User.email) == address))
    if user is None:
        user = User(email=address, password_hash=_HASHER.hash(password), created_at=now)
        session.add(user)
        session.flush()
    elif session.scalar(select(Membership.id).where(Membership.user_id == user.id,
                                                    Membership.team_id == team.id)) is not None:
        raise Conflict(f"{address} is already a member of team {team.slug}", "member_exists")
    membership = Membership(user_id=user.id, team_id=team.id, role=role.value, created_at=now)
    session.add(membership)
    session.flush()
    return user, membership


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user whose email and password these are, if enabled; None otherwise (as slowly either way)."""
    user = session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):  # the parameters were raised since it was hashed
        user.password_hash = _HASHER.hash(password)
    return user


def memberships(session: Session, user_id: int) -> list[tuple[Membership, Team]]:
    rows = session.execute(select(Membership, Team).join(Team, Team.id == Membership.team_id)
                           .where(Membership.user_id == user_id).order_by(Team.slug))
    return [(membership, team) for membership, team in rows]


def session_user(session: Session, user_id: int, issued_at: datetime) -> User | None:
    """The user a sign-in session issued at ``issued_at`` belongs to, while it is honoured: the user exists, is
    enabled, and has not logged out everywhere since."""
    user = session.get(User, user_id)
    if user is None or user.disabled:
        return None
    if user.sessions_valid_after is not None and issued_at < user.sessions_valid_after:
        return None
    return user


def log_out_everywhere(session: Session, user_id: int, now: datetime) -> None:
    """Every session issued until now stops being honoured (this one included)."""
    user = session.get(User, user_id)
    if user is not None:
        user.sessions_valid_after = now


def any_user(session: Session) -> bool:
    """Whether somebody can sign in already: the first-run page is open only while nobody can."""
    return session.scalar(select(User.id).limit(1)) is not None


_ROLE_ORDER = {role.value: rank for rank, role in enumerate(Role)}


def team_members(session: Session, team_id: int) -> list[tuple[User, Membership]]:
    """A team's people with their membership, owners first, then by email."""
    rows = session.execute(select(User, Membership).join(Membership, Membership.user_id == User.id)
                           .where(Membership.team_id == team_id).order_by(User.email))
    members = [(user, membership) for user, membership in rows]
    return sorted(members, key=lambda pair: _ROLE_ORDER.get(pair[1].role, len(_ROLE_ORDER)))
