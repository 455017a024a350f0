"""Team lifecycle: creation and lookup by slug."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostatlas.errors import Conflict, InvalidInput, NotFound
from hostatlas.teams.models import Plan, Team

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def create_team(session: Session, slug: str, *, name: str | None = None, plan: Plan = Plan.FREE) -> Team:
    if not SLUG_PATTERN.match(slug):
        raise InvalidInput.single(
            "slug", "invalid_slug", "Use 1-64 lowercase letters, digits and inner hyphens"
        )
    if session.scalar(select(Team.id).where(Team.slug == slug)) is not None:
        raise Conflict(f"A team with slug {slug!r} already exists", "team_exists")
    team = Team(slug=slug, name=name or slug, plan=plan.value)
    session.add(team)
    session.flush()
    return team


def get_team_by_slug(session: Session, slug: str) -> Team:
    team = session.scalar(select(Team).where(Team.slug == slug))
    if team is None:
        raise NotFound(f"Team {slug!r}", "team_not_found")
    return team
