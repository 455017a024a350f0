"""`hostatlas quarantine list|replay|drop`, run as a real process against the test database."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.pipelines import quarantine
from hostatlas.pipelines.models import QuarantinedItem
from hostatlas.servers import checkins
from hostatlas.servers.checkins import Checkin
from hostatlas.servers.models import Server
from tests.support import Story, enrol, hostatlas_command

pytestmark = pytest.mark.long_running(75)

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(database_url: str, tmp_path: Path) -> Cli:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               "HOSTATLAS_DATABASE_URL": database_url, "HOSTATLAS_LOG_LEVEL": "WARNING"}
        return subprocess.run([*hostatlas_command(), "quarantine", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    return run


def _aside(db: Database, pipeline: str, payload: bytes, reason: str = "ValueError: bad") -> int:
    return quarantine.set_aside_now(db, pipeline=pipeline, reason=reason, payload=payload, team_id=None,
                                    now=utcnow())


def _checkin_payload(server_id: int, version: str) -> bytes:
    return checkins.encode(server_id, Checkin(at=utcnow() - timedelta(seconds=5), agent_version=version,
                                              uptime_s=7, boot_id=None))


def test_list_shows_each_item_with_its_reason_escaped_and_filters_by_pipeline(cli: Cli, db: Database) -> None:
    first = _aside(db, "telemetry.metrics", b"x" * 40, reason="ValueError: \x1b[2J401 digits")
    second = _aside(db, checkins.PIPELINE, b"{}")
    third = _aside(db, checkins.PIPELINE, b"{}")

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["ID", "PIPELINE", "TEAM", "FAILURES", "SET ASIDE", "LAST FAILED", "BYTES", "REASON"]
    assert [line.split("\t")[:4] for line in lines[1:]] == [[str(first), "telemetry.metrics", "-", "1"],
                                                            [str(second), checkins.PIPELINE, "-", "1"],
                                                            [str(third), checkins.PIPELINE, "-", "1"]]
    assert lines[1].split("\t")[6:] == ["40", "ValueError: \\x1b[2J401 digits"]  # no escape reaches the terminal

    only = cli("list", "--pipeline", checkins.PIPELINE, "--limit", "1").stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in only[1:-1]] == [str(second)]
    assert only[-1] == "(1 more: raise --limit or filter with --pipeline)"


def test_replay_stores_a_fixed_item_and_keeps_one_that_fails_again(cli: Cli, db: Database, client: TestClient,
                                                                   story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    good = _aside(db, checkins.PIPELINE, _checkin_payload(server_id, "9.9.9"))
    bad = _aside(db, checkins.PIPELINE, b"not json")

    replayed = cli("replay", str(good))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip().splitlines()[-1] == f"item {good} replayed"
    with db.session(write=False) as session:
        assert session.get_one(Server, server_id).agent_version == "9.9.9"
        assert session.get(QuarantinedItem, good) is None

    again = cli("replay", str(bad))
    assert again.returncode == 1
    assert again.stdout.strip().splitlines()[-1].startswith(f"item {bad} failed again: JSONDecodeError")
    with db.session(write=False) as session:
        kept = session.get_one(QuarantinedItem, bad)
        assert kept.failures == 2 and kept.reason.startswith("JSONDecodeError")


def test_replay_all_goes_through_every_item_and_says_what_still_fails(cli: Cli, db: Database, client: TestClient,
                                                                      story: Story) -> None:
    server_id, _ = enrol(client, story.admin_a)
    _aside(db, checkins.PIPELINE, b"not json")
    _aside(db, checkins.PIPELINE, _checkin_payload(server_id, "9.9.8"))
    other = _aside(db, "telemetry.logs", b"{}")

    replayed = cli("replay", "--all", "--pipeline", checkins.PIPELINE)
    assert replayed.returncode == 1
    assert replayed.stdout.strip().splitlines()[-1] == "1 replayed, 1 still failing"
    with db.session(write=False) as session:
        assert [summary.pipeline for summary in quarantine.counts(session)] == [checkins.PIPELINE, "telemetry.logs"]
        assert session.get(QuarantinedItem, other) is not None

    assert cli("replay", str(other), "--all").returncode == 2  # an ID or --all, not both


def test_drop_deletes_for_good_and_unknown_items_or_pipelines_are_clear_errors(cli: Cli, db: Database) -> None:
    item = _aside(db, "no.such.pipeline", b"{}")
    orphan = cli("replay", str(item))
    assert orphan.returncode == 1 and "A replayer for pipeline 'no.such.pipeline' not found" in orphan.stderr

    dropped = cli("drop", str(item))
    assert dropped.returncode == 0 and dropped.stdout.strip().splitlines()[-1] == f"item {item} dropped"
    assert cli("list").stdout.strip() == "the quarantine is empty"
    gone = cli("drop", str(item))
    assert gone.returncode == 1 and "Quarantined item not found" in gone.stderr
