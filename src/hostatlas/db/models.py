"""Imports every feature's models so the metadata is complete for Alembic and the test fixtures."""

from hostatlas.apikeys.models import ApiKey
from hostatlas.db.base import Base
from hostatlas.teams.models import Team

metadata = Base.metadata

__all__ = ["ApiKey", "Team", "metadata"]
