"""The agent distribution stands alone: no platform, web or database imports."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_agent_declares_no_platform_dependency() -> None:
    project = tomllib.loads((ROOT / "agent" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "hostatlas-agent"
    assert project["scripts"]["hostatlas-agent"] == "hostatlas_agent.cli:main"
    banned = ("hostatlas", "fastapi", "sqlalchemy", "uvicorn", "pydantic")
    assert not [dep for dep in project["dependencies"] if dep.split(">")[0].split("=")[0].strip() in banned]


def test_agent_imports_nothing_from_the_platform() -> None:
    probe = ("import sys, hostatlas_agent.cli; "
             "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('hostatlas', 'fastapi', 'sqlalchemy', 'starlette', 'pydantic')); print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_agent_command_reports_its_version() -> None:
    result = subprocess.run([sys.executable, "-c", "from hostatlas_agent.cli import main; main(['--version'])"],
                            capture_output=True, text=True, timeout=30)
    assert "hostatlas-agent 0.1.0" in result.stdout
