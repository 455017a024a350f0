"""Runtime settings, read from ``HOSTATLAS_*`` environment variables and an optional ``.env`` file.

Every duration is a setting so that tests can shrink it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("hostatlas-data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOSTATLAS_", env_file=".env", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""  # empty: an SQLite file under data_dir
    clickhouse_url: str | None = None
    # A cluster named in the ClickHouse servers' remote_servers: telemetry tables are made ON CLUSTER, one
    # local table per shard and a Distributed table over them, sharded by server (docs/deploy.md).
    clickhouse_cluster: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Replicated*MergeTree local tables under this ZooKeeper/Keeper path ({shard} and {replica} are the
    # servers' macros; {database} and {table} are filled in by HostAtlas).
    clickhouse_replicated: bool = False
    clickhouse_replica_path: str = "/clickhouse/tables/{shard}/{database}/{table}"
    redis_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    # Reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed; none by default.
    trusted_proxies: str = ""
    # Fernet keys, comma-separated, the first sealing secrets at rest; unset: data_dir/secret.key (secretbox.py).
    secret_key: SecretStr | None = None

    offline_after: float = 300.0
    # Seconds between two evaluations of each alert rule (hostatlas.alerts): every rule is looked at on this grid.
    alert_interval: int = Field(default=15, ge=1, le=3600)
    # Heartbeat pings: how much of a ping's body (a job's output) is kept, and how many pings per heartbeat.
    ping_body_bytes: int = Field(default=10240, ge=0, le=1 << 20)
    ping_log_size: int = Field(default=1000, ge=1, le=100_000)
    # Pings one heartbeat may send (in-process, per heartbeat): beyond it 429, so a runaway job cannot flood the log.
    ping_rate_limit: str = "10/second"
    worker_tick: float = 1.0
    # Seconds before each retry: 5 retries, the last 24 h after the first attempt (each ±10% jitter).
    webhook_retry_schedule: str = "60,300,1800,10800,73440"
    webhook_allow_private: bool = False
    webhook_concurrency: int = Field(default=64, ge=1)  # attempts in flight per worker
    webhook_per_endpoint: int = Field(default=8, ge=1)  # of which at most this many to one webhook
    webhook_connect_timeout: float = Field(default=5.0, gt=0)
    webhook_read_timeout: float = Field(default=10.0, gt=0)
    # A claimed delivery whose worker died is taken over after this many seconds.
    webhook_lease_seconds: float = Field(default=60.0, gt=0)
    # Finished deliveries (and their attempts) stay in the delivery log this many seconds.
    webhook_log_retention: int = Field(default=30 * 86_400, ge=3600)

    rate_limit: str = "600/minute"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # The cap on a gzip or zstd request body once inflated; max_body_bytes caps it as sent.
    max_decompressed_bytes: int = Field(default=16_777_216, ge=1024)
    # How stale an API key's recorded last_used_at may get before a request refreshes it.
    key_usage_resolution: float = 60.0
    # How often buffered bookkeeping writes (key usage, check-ins) are flushed.
    flush_interval: float = 1.0
    # Answer plain check-ins without FastAPI's routing (agentapi.fastpath); off only to compare.
    agent_fast_path: bool = True
    # How often each process reloads every active agent token; revocations reach it within a flush interval.
    agent_auth_cache_seconds: float = 900.0
    default_rotation_grace: int = 86_400

    # Telemetry ingestion: what a batch may carry, and how far from now its timestamps may be.
    metrics_max_points: int = Field(default=20_000, ge=1)
    logs_max_entries: int = Field(default=10_000, ge=1)
    log_line_max_bytes: int = Field(default=16_384, ge=256)
    telemetry_max_age: float = 7 * 86_400.0
    telemetry_max_future: float = 600.0
    # Batches are answered once durable in the spool (telemetry/spool.py); the storer stores them in
    # INSERTs of at most batch_rows rows, within about batch_delay seconds.
    telemetry_batch_rows: int = Field(default=20_000, ge=1)
    telemetry_batch_delay: float = Field(default=0.5, gt=0)
    # Closed segments beyond this size (the store is down or behind) get agents a 503 and Retry-After.
    telemetry_max_backlog_bytes: int = Field(default=1 << 30, ge=1)
    telemetry_spool_dir: Path | None = None  # default: data_dir / "telemetry-spool"
    # "process": the storer parses and stores in its own process, off the serving process's GIL.
    telemetry_storer: Literal["process", "thread"] = "process"
    # fdatasync each group of appends: off trades durability on power loss (not on a crash) for speed.
    telemetry_spool_fsync: bool = True
    # Retention per tier, in seconds.
    retention_raw: int = 7 * 86_400
    retention_1m: int = 31 * 86_400
    retention_1h: int = 400 * 86_400
    retention_logs: int = 14 * 86_400
    # /readyz turns 503 once a pipeline has failed, or telemetry storage lagged, this many seconds.
    ready_stuck_after: float = Field(default=60.0, gt=0)
    # The Prometheus exposition (unauthenticated): off, or on another path.
    metrics_enabled: bool = True
    metrics_path: str = Field(default="/metrics", pattern=r"^/[A-Za-z0-9/_.-]*$")
    log_level: str = "INFO"
    log_json: bool = False
    # `serve` on SQLite also runs an agent for its own host (hostatlas.localagent); false: only --local-agent does.
    local_agent: bool = True

    # The dashboard (hostatlas.dashboard): how long a sign-in lasts, how many failed sign-ins one client or one
    # address may make, and the one-time token the first-run page asks for while no user exists (`serve` makes
    # one and prints it when this is unset; set it to choose it, e.g. for several API nodes).
    session_max_age: int = Field(default=14 * 86_400, ge=300)
    login_rate_limit: str = "5/minute"
    setup_token: SecretStr | None = None
    # How often open dashboard pages refresh their live parts (status, charts), in seconds.
    dashboard_refresh: float = Field(default=15.0, ge=0.2)

    @field_validator("database_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)

    @field_validator("clickhouse_cluster", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("secret_key", "setup_token")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hostatlas.db').as_posix()}"

    @property
    def retry_schedule(self) -> list[float]:
        return [float(part) for part in self.webhook_retry_schedule.split(",") if part.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
