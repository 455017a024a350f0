"""Configuration: defaults, the TOML file, HOSTATLAS_AGENT_* variables, and the platform's layer on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostatlas_agent.config import AgentConfig, ConfigError, WatchSpec, load


def test_defaults_without_a_file() -> None:
    config = load(None, {"HOSTATLAS_AGENT_CONFIG": ""})
    assert config.metrics_interval == 15 and config.checkin_interval == 60
    assert all(config.features.values())
    assert config.explicit == frozenset()


def test_the_file_then_the_variables(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('url = "https://h.example.com"\nmetrics_interval = 30\nlog_paths = ["/var/log/a.log"]\n'
                    'features = {containers = false}\n'
                    '[[watch]]\nname = "billing"\nprocess = "billing-worker"\nlog_paths = ["/srv/billing.log"]\n')
    config = load(path, {"HOSTATLAS_AGENT_METRICS_INTERVAL": "20", "HOSTATLAS_AGENT_STATE_DIR": str(tmp_path)})
    assert config.url == "https://h.example.com"
    assert config.metrics_interval == 20.0  # the variable wins over the file
    assert config.state_dir == tmp_path
    assert config.features["containers"] is False and config.features["logs"] is True
    assert config.watch == [WatchSpec(name="billing", process="billing-worker", log_paths=["/srv/billing.log"])]
    assert {"url", "metrics_interval", "log_paths", "features", "watch", "state_dir"} <= config.explicit


@pytest.mark.parametrize("text, needle", [
    ("metrics_intervall = 3\n", "unknown setting 'metrics_intervall'"),
    ("metrics_interval = -1\n", "positive"),
    ("metrics_interval = \"soon\"\n", "metrics_interval"),
    ("features = {gpu = true}\n", "unknown features"),
    ("[[watch]]\nname = \"x\"\n", "needs a process regex or a unit"),
    ("url = \n", "agent.toml"),
])
def test_a_bad_file_is_refused_with_the_setting_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load(path, {})


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.toml", {})


def test_the_platform_layer_changes_managed_fields_only_where_the_host_did_not() -> None:
    remote = {"metrics_interval": 30, "checkin_interval": 120, "log_paths": ["/var/log/app.log"],
              "features": {"containers": False}, "url": "https://elsewhere.example", "state_dir": "/tmp/x"}
    plain = AgentConfig(log_paths=["/var/log/local.log"]).with_remote(remote)
    assert (plain.metrics_interval, plain.checkin_interval) == (30.0, 120.0)
    assert plain.log_paths == ["/var/log/local.log", "/var/log/app.log"]
    assert plain.features["containers"] is False
    assert plain.url is None and str(plain.state_dir) == "/var/lib/hostatlas-agent"  # never remote
    pinned = AgentConfig(metrics_interval=1, explicit=frozenset({"metrics_interval"})).with_remote(remote)
    assert pinned.metrics_interval == 1 and pinned.checkin_interval == 120.0


def test_nonsense_from_the_platform_is_ignored() -> None:
    config = AgentConfig().with_remote({"metrics_interval": True, "checkin_interval": -5, "log_paths": "x",
                                        "features": {"bogus": True}})
    assert config == AgentConfig()
