"""Schemathesis over the whole OpenAPI document, on SQLite and PostgreSQL: no operation answers a 5xx, and
every answer is what the document says (status code, content type, body schema).

Each backend gets a real ``hostatlas serve`` on loopback; each operation gets a fresh ``*`` key and agent
token (a case of an earlier operation may have deleted or rotated the last ones), so every case gets past
authentication. The budget is fixed and small (``FUZZ_EXAMPLES`` generated cases per operation, plus
the coverage phase's boundary cases) and generation is deterministic: every run sends the same cases.
``bench/fuzz.py`` runs the same checks with a larger budget.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from hostatlas.app import create_app
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.teams import service as teams
from hostatlas.teams.models import DEFAULT_TEAM_SLUG
from tests.support import enrol, issue_key, running_server

pytestmark = pytest.mark.long_running(210)

# Per operation: this many generated cases (the coverage phase adds its boundary cases to them).
FUZZ_EXAMPLES = 8
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")


@dataclass(frozen=True)
class LiveApi:
    base_url: str
    api_key: str
    agent_token: str


def fuzz_config(*, max_examples: int, seed: int = 20261126) -> SchemathesisConfig:
    """The checks and budget of every fuzz run."""
    return SchemathesisConfig.from_dict({
        "seed": seed,
        # Fixtures are per operation on purpose (fresh credentials), not per case; the rest is Hypothesis
        # guarding its own generation speed, which a fuzz budget does not need.
        "suppress-health-check": ["all"],
        # no-shrink: a failure is reported as found (with a curl line to reproduce it), not minimised first.
        "generation": {"mode": "all", "max-examples": max_examples, "deterministic": True, "database": "none",
                       "no-shrink": True},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })


def openapi_document() -> dict[str, Any]:
    """The document as the app publishes it, from a throwaway app (collection needs it before any fixture)."""
    with tempfile.TemporaryDirectory(prefix="hostatlas-openapi-") as directory:
        app = create_app(Settings(_env_file=None, data_dir=Path(directory),
                                  database_url=f"sqlite:///{directory}/unused.db"))
        return app.openapi()


def credentials_for(case: Case, api: LiveApi) -> dict[str, str]:
    """The agent token for agent operations, the admin key for everything else."""
    schemes = {name for requirement in case.operation.definition.raw.get("security", []) for name in requirement}
    return {"Authorization": f"Bearer {api.agent_token if schemes == {'AgentToken'} else api.api_key}"}


@pytest.fixture(scope="module")
def live_server(migrated_db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``hostatlas serve`` per backend for the whole module (its own process: the fuzzer and the
    server use a core each). What the cases create stays; the next test's ``db`` fixture empties it."""
    env = {"HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_RATE_LIMIT": "1000000/minute",
           "HOSTATLAS_LOG_LEVEL": "WARNING"}
    with running_server(tmp_path_factory.mktemp("fuzz"), env, extra_args=("--no-worker", "--no-access-log")) as base:
        yield base


@pytest.fixture
def live_api(live_server: str, migrated_db: Database) -> LiveApi:
    """Fresh credentials for each operation: a case of an earlier one may have deleted or rotated the last."""
    with migrated_db.session(write=False) as session:
        team = teams.get_team_by_slug(session, DEFAULT_TEAM_SLUG).id
    key = issue_key(migrated_db, team, ["*"], name="fuzz")
    with httpx.Client(base_url=live_server) as client:
        _, token = enrol(client, key)
    return LiveApi(live_server, key, token)


schema = schemathesis.openapi.from_dict(openapi_document(), config=fuzz_config(max_examples=FUZZ_EXAMPLES))


@schema.parametrize()
def test_no_operation_answers_a_server_error_or_outside_its_schema(case: Case, live_api: LiveApi) -> None:
    case.call_and_validate(base_url=live_api.base_url, headers=credentials_for(case, live_api))
