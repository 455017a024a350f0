"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

The schema is made once per backend and test run, by the real migrations. Each test then starts from
a clean database (every table emptied, the migration's ``default`` team kept), so tests never see each
other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, text, update

from hostatlas.app import create_app
from hostatlas.db import migrate
from hostatlas.db.engine import Database
from hostatlas.models import metadata
from hostatlas.settings import Settings
from hostatlas.teams.models import DEFAULT_TEAM_SLUG, Plan, Team
from tests.engines import EngineMissing, PrivateClickHouseCluster, private_clickhouse_cluster
from tests.support import CLICKHOUSE_CLUSTER, Story, make_story
from tests.topology import Topology, database_on_cluster, topology

POSTGRES_URL = os.environ.get("HOSTATLAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HOSTATLAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# One platform key for the run: the `hostatlas serve` and `worker` processes tests start must open the webhook
# secrets this process sealed (hostatlas.secretbox), and no key file lands in the working directory.
os.environ.setdefault("HOSTATLAS_SECRET_KEY", Fernet.generate_key().decode())
# The many `hostatlas serve` processes tests start run no agent of their own (tests/test_local_agent.py does).
os.environ.setdefault("HOSTATLAS_LOCAL_AGENT", "false")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the long-running modules first, longest first (their `long_running(seconds)` marker).

    `make test` hands whole modules to the xdist processes in collection order (`--dist loadfile
    --no-loadscope-reorder`); a 100 s module picked up last keeps the whole run waiting for it alone, while
    longest-first leaves the short modules to fill the gaps at the end. Stable: the rest keep their order."""
    def weight(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long_running")
        return -float(marker.args[0]) if marker else 0.0

    items.sort(key=weight)


def require_service(name: str, reachable: bool, detail: str) -> None:
    """Skip when a service is missing on a developer's machine; under CI a missing service is a failure."""
    if reachable:
        return
    message = f"{name} is not reachable ({detail})"
    if IN_CI:
        pytest.fail(f"{message}: CI requires it", pytrace=False)
    pytest.skip(f"{message}: skipping the tests that need it")


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{POSTGRES_URL}: {type(exc).__name__}"
    return None


@contextmanager
def private_postgres_schema(prefix: str = "hostatlas_test") -> Iterator[str]:
    """A schema of its own in the test database, dropped afterwards; yields a URL that uses it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A private schema in the test database, so parallel runs and leftovers never collide."""
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hostatlas.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture(scope="session")
def migrated_db(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    migrate.upgrade(db)
    yield db
    db.dispose()


def _empty_tables(db: Database) -> None:
    """Every table emptied, the default team kept and put back as the migrations made it: a test before (the
    OpenAPI fuzzer, through the API, in the same process) may have switched its ping settings or renamed it."""
    with db.session(write=True) as session:
        for table in reversed(metadata.sorted_tables):
            if table.name == Team.__tablename__:
                session.execute(delete(Team).where(Team.slug != DEFAULT_TEAM_SLUG))
                session.execute(update(Team).where(Team.slug == DEFAULT_TEAM_SLUG).values(
                    name="Default", plan=Plan.PRO.value, ping_key=None, ping_create=False))
            else:
                session.execute(table.delete())


@pytest.fixture
def db(migrated_db: Database) -> Iterator[Database]:
    _empty_tables(migrated_db)
    yield migrated_db
    _empty_tables(migrated_db)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        data_dir=tmp_path,
        rate_limit="100000/minute",
        flush_interval=3600,  # tests flush explicitly
        # A storer thread starts in no time; the storer process is tested through real `hostatlas serve`s.
        telemetry_storer="thread",
        # A read waits for the batches in flight, which close at this delay (docs/telemetry.md): keep it short.
        telemetry_batch_delay=0.05,
    )


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, db=db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def story(db: Database) -> Story:
    return make_story(db)


# Empty counts as unset: `make test` passes an empty value when scripts/clickhouse could not start one.
CLICKHOUSE_URL = os.environ.get("HOSTATLAS_TEST_CLICKHOUSE_URL") or "clickhouse://127.0.0.1:9000/default"


def _clickhouse_problem() -> str | None:
    try:
        client = Client.from_url(CLICKHOUSE_URL)
        try:
            client.execute("SELECT 1")
        finally:
            client.disconnect()
    except Exception as exc:
        return f"{CLICKHOUSE_URL}: {type(exc).__name__}"
    return None


def _clickhouse_database_url(database: str, server_url: str = CLICKHOUSE_URL) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


@contextmanager
def _clickhouse_database(database: str) -> Iterator[str]:
    admin = Client.from_url(CLICKHOUSE_URL)
    admin.execute(f"CREATE DATABASE {database}")
    try:
        yield _clickhouse_database_url(database)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """A private database on the test ClickHouse (`scripts/clickhouse start` runs one), dropped afterwards."""
    problem = _clickhouse_problem()
    require_service("ClickHouse", problem is None, problem or "")
    with _clickhouse_database(f"hostatlas_test_{uuid.uuid4().hex[:10]}") as url:
        yield url


@pytest.fixture
def clickhouse_db_url(clickhouse_url: str) -> Iterator[str]:
    """A fresh database for one test, beside the session's, so a store's tests never see each other's rows."""
    session_database = urlsplit(clickhouse_url).path.strip("/")
    with _clickhouse_database(f"{session_database}_{uuid.uuid4().hex[:6]}") as url:
        yield url


# Shard 1 of the two-shard test cluster (`scripts/clickhouse-cluster start` runs one); empty counts as unset, as above.
CLICKHOUSE_CLUSTER_URL = os.environ.get("HOSTATLAS_TEST_CLICKHOUSE_CLUSTER_URL") or "clickhouse://127.0.0.1:9101/default"
# ON CLUSTER DDL waits for every server; a shard that is down must fail the fixture, not hang it for 3 minutes.
_ON_CLUSTER_SETTINGS = {"distributed_ddl_task_timeout": 60}


def _clickhouse_cluster_problem() -> str | None:
    try:
        client = Client.from_url(CLICKHOUSE_CLUSTER_URL)
        try:
            shards = client.execute(
                "SELECT count() FROM system.clusters WHERE cluster = %(cluster)s", {"cluster": CLICKHOUSE_CLUSTER})
        finally:
            client.disconnect()
    except Exception as exc:
        return f"{CLICKHOUSE_CLUSTER_URL}: {type(exc).__name__}"
    if shards[0][0] != 2:
        return f"{CLICKHOUSE_CLUSTER_URL} has {shards[0][0]} shards in cluster {CLICKHOUSE_CLUSTER!r}, not 2"
    return None


@pytest.fixture(scope="session")
def clickhouse_cluster_url() -> str:
    """Shard 1 of the two-shard ClickHouse cluster `hostatlas` (tests.support.CLICKHOUSE_CLUSTER); its servers also
    form the one-shard, two-replica cluster `hostatlas_mirror` (deploy/clickhouse/config.d/)."""
    problem = _clickhouse_cluster_problem()
    require_service("The ClickHouse cluster", problem is None, problem or "")
    return CLICKHOUSE_CLUSTER_URL


@pytest.fixture
def clickhouse_cluster_db_url(clickhouse_cluster_url: str) -> Iterator[str]:
    """A fresh database on every server of the cluster (made and dropped ON CLUSTER); the URL is shard 1's."""
    database = f"hostatlas_test_{uuid.uuid4().hex[:10]}"
    admin = Client.from_url(clickhouse_cluster_url)
    admin.execute(f"CREATE DATABASE {database} ON CLUSTER {CLICKHOUSE_CLUSTER}", settings=_ON_CLUSTER_SETTINGS)
    try:
        yield _clickhouse_database_url(database, clickhouse_cluster_url)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database} ON CLUSTER {CLICKHOUSE_CLUSTER}",
                      settings=_ON_CLUSTER_SETTINGS)
        admin.disconnect()


@pytest.fixture
def private_schema_url() -> Iterator[str]:
    """A PostgreSQL schema of the test's own, for a topology of processes (tests/topology.py) to share."""
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema("hostatlas_private") as url:
        yield url


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[PrivateClickHouseCluster]:
    """A two-shard ClickHouse cluster and ZooKeeper of the test's own (tests/engines.py), which it may stop."""
    try:
        with private_clickhouse_cluster(tmp_path) as engine:
            yield engine
    except EngineMissing as missing:
        require_service("a private ClickHouse cluster", False, str(missing))


# The multi-node modules (tests/test_multinode*.py) each start one deployment for the whole module: their own
# PostgreSQL schema and ClickHouse database, two API nodes and two workers configured by the module's NODE_ENV
# (every process) and NODE_OVERRIDES (by process name, optional).
def _module_name(request: pytest.FixtureRequest) -> str:
    return str(request.module.__name__).rsplit(".", 1)[-1].removeprefix("test_")


@pytest.fixture(scope="module")
def install_url(request: pytest.FixtureRequest) -> Iterator[str]:
    problem = _postgres_problem()
    require_service("PostgreSQL", problem is None, problem or "")
    with private_postgres_schema(f"hostatlas_{_module_name(request)}") as url:
        yield url


@pytest.fixture(scope="module")
def cluster_database(request: pytest.FixtureRequest, clickhouse_cluster_url: str) -> Iterator[str]:
    """A database of the module's own on every server of the cluster; its name."""
    with database_on_cluster(clickhouse_cluster_url, CLICKHOUSE_CLUSTER, f"hostatlas_{_module_name(request)}") as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, install_url: str,
            clickhouse_cluster_url: str, cluster_database: str) -> Iterator[Topology]:
    require_redis()
    with topology(tmp_path_factory.mktemp(_module_name(request)), database_url=install_url, redis_url=REDIS_URL,
                  clickhouse_url=clickhouse_cluster_url.rsplit("/", 1)[0] + f"/{cluster_database}",
                  clickhouse_cluster=CLICKHOUSE_CLUSTER, nodes=2, workers=2, env=request.module.NODE_ENV,
                  node_env=getattr(request.module, "NODE_OVERRIDES", None)) as started:
        yield started


@pytest.fixture(scope="module")
def install_db(install_url: str, running: Topology) -> Iterator[Database]:
    """The install's database, for what a test sets up directly (teams, keys) and counts."""
    db = Database(install_url)
    yield db
    db.dispose()


def require_redis() -> None:
    """The shared Redis answers (skipped outside CI, a failure under CI=true, as require_service)."""
    import redis

    try:
        reachable = bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        reachable = False
    require_service("Redis", reachable, REDIS_URL)
