"""The agent's configuration: built-in defaults, then the config file (``/etc/hostatlas/agent.toml`` or
``--config``), then ``HOSTATLAS_AGENT_*`` variables, then what the platform serves at ``GET /agent/config``.

The remote layer only touches what the platform manages (intervals, extra log paths, feature flags), so a
server-side change can never point the agent at another platform or another state directory."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised by the Python 3.9 run of the agent's tests
    import tomli as tomllib

log = logging.getLogger("hostatlas_agent.config")

DEFAULT_CONFIG_PATH = Path("/etc/hostatlas/agent.toml")
DEFAULT_STATE_DIR = Path("/var/lib/hostatlas-agent")
ENV_PREFIX = "HOSTATLAS_AGENT_"
FEATURES = ("logs", "discovery", "containers", "certificates", "crash_reports")


class ConfigError(ValueError):
    """The file or a variable holds something the agent cannot run with; the message names it."""


@dataclass
class WatchSpec:
    """A service to watch for crashes besides the ones discovery finds running."""

    name: str
    process: str | None = None  # regex searched in the process name and its space-joined command line
    unit: str | None = None  # systemd unit
    log_paths: list[str] = field(default_factory=list)


@dataclass
class AgentConfig:
    url: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    metrics_interval: float = 15
    checkin_interval: float = 60
    config_interval: float = 60
    log_interval: float = 2
    discovery_interval: float = 60  # a snapshot is taken this often and sent when it changed...
    discovery_max_age: float = 3600  # ...or when the last one sent is this old
    crash_interval: float = 5
    crash_followup_interval: float = 300
    log_paths: list[str] = field(default_factory=list)
    features: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(FEATURES, True))
    nginx_configs: list[str] = field(default_factory=lambda: ["/etc/nginx/nginx.conf"])
    apache_configs: list[str] = field(
        default_factory=lambda: ["/etc/apache2/apache2.conf", "/etc/httpd/conf/httpd.conf"])
    certificate_paths: list[str] = field(default_factory=lambda: [
        "/etc/letsencrypt/live/*/fullchain.pem", "/etc/ssl/private/*.pem", "/etc/ssl/*.crt",
        "/etc/pki/tls/certs/*.crt"])
    docker_socket: str = "/var/run/docker.sock"
    served_certificates: bool = True
    watch: list[WatchSpec] = field(default_factory=list)
    log_batch_lines: int = 1000
    log_batch_bytes: int = 512 * 1024
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_max_age: float = 6 * 86400  # the platform refuses telemetry older than 7 days
    request_timeout: float = 10
    ca_file: str | None = None  # a CA bundle to verify the platform with, instead of the host's trust store
    retry_max_backoff: float = 60  # the longest wait between tries while the platform is away
    log_level: str = "INFO"
    # What the file or a variable set on this host: the platform's config never overrides those.
    explicit: frozenset[str] = field(default_factory=frozenset, compare=False, repr=False)

    def with_remote(self, remote: Mapping[str, Any]) -> AgentConfig:
        """This config with the platform's managed fields applied, except where this host's own file or
        variables set them (the person who wrote a host's file meant it for that host). Log paths add up."""
        changes: dict[str, Any] = {}
        for name in ("metrics_interval", "checkin_interval"):
            value = remote.get(name)
            if name in self.explicit:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
                changes[name] = float(value)
        paths = remote.get("log_paths")
        if isinstance(paths, list):
            local = [p for p in self.log_paths if p not in paths]
            changes["log_paths"] = local + [p for p in paths if isinstance(p, str)]
        flags = remote.get("features")
        if isinstance(flags, dict) and "features" not in self.explicit:
            changes["features"] = {**self.features, **{k: bool(v) for k, v in flags.items() if k in FEATURES}}
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig) if f.name != "explicit"}
_FLOAT_FIELDS = {"metrics_interval", "checkin_interval", "config_interval", "log_interval", "discovery_interval",
                 "discovery_max_age", "crash_interval", "crash_followup_interval", "spool_max_age", "request_timeout",
                 "retry_max_backoff"}


def _default_of(name: str) -> Any:
    spec = _FIELDS[name]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _coerce(name: str, value: Any, source: str) -> Any:
    """One value from a file or a variable, as the field's default says its type is."""
    default = _default_of(name)
    try:
        if name == "state_dir":
            return Path(str(value))
        if name == "watch":
            return [_watch_spec(item) for item in value]
        if isinstance(default, list):
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            return [str(item) for item in value]
        if isinstance(default, dict):
            if isinstance(value, str):  # "logs=false,containers=true"
                pairs = (part.split("=", 1) for part in value.split(",") if part.strip())
                value = {key.strip(): _truthy(flag) for key, flag in pairs}
            unknown = sorted(set(value) - set(FEATURES))
            if unknown:
                raise ConfigError(f"{source}: unknown features {unknown}; known: {list(FEATURES)}")
            return {**dict.fromkeys(FEATURES, True), **{key: bool(flag) for key, flag in value.items()}}
        if isinstance(default, bool):
            return _truthy(value) if isinstance(value, str) else bool(value)
        if isinstance(default, int) and not isinstance(default, float) and name not in _FLOAT_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            number = float(value)
            if not number > 0 or number != number or number == float("inf"):
                raise ConfigError(f"{source}: {name} must be a positive number of seconds")
            return number
        return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: {name}: {exc}") from exc


def _watch_spec(item: Any) -> WatchSpec:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ConfigError("watch entries need a name")
    if not item.get("process") and not item.get("unit"):
        raise ConfigError(f"watch {item['name']!r} needs a process regex or a unit")
    return WatchSpec(name=item["name"], process=item.get("process"), unit=item.get("unit"),
                     log_paths=[str(p) for p in item.get("log_paths", [])])


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Defaults, then the file (if it exists; a path given explicitly must exist), then the variables."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(ENV_PREFIX + "CONFIG"))
    path = path or Path(environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG_PATH)
    values: dict[str, Any] = {}
    if path.exists():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        for key, value in document.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, str(path))
    elif explicit:
        raise ConfigError(f"{path}: no such file")
    for name in _FIELDS:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and name != "watch":
            values[name] = _coerce(name, raw, ENV_PREFIX + name.upper())
    return AgentConfig(**values, explicit=frozenset(values))
