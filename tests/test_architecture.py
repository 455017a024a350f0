"""The one-way import rule (docs/architecture.md), checked by import-linter's contract in pyproject.toml.

The check itself is tried on copies of the package with a wrong-way import planted, so a contract that
stopped catching anything (a typo in a layer name, a layer left out) fails here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "hostatlas"
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint(source_root: Path) -> subprocess.CompletedProcess[str]:
    """Run the contract on the package found under ``source_root`` (first on the path, before the install)."""
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_imports_run_one_way() -> None:
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


# (file to plant in, the import planted, what the report must name)
PLANTS = {
    "core imports a feature": ("http/types.py", "import hostatlas.servers.models",
                               "hostatlas.http is not allowed to import hostatlas.servers"),
    "core imports the composition": ("db/engine.py", "import hostatlas.app",
                                     "hostatlas.db is not allowed to import hostatlas.app"),
    "a feature imports a higher one": ("servers/service.py", "import hostatlas.webhooks.service",
                                       "hostatlas.servers is not allowed to import hostatlas.webhooks"),
    "a feature imports the composition": ("telemetry/routes.py", "from hostatlas import jobs",
                                          "hostatlas.telemetry is not allowed to import hostatlas.jobs"),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_a_planted_wrong_way_import_breaks_the_contract(tmp_path: Path, plant: str) -> None:
    relative, line, named = PLANTS[plant]
    copy = tmp_path / "src" / "hostatlas"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / relative
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    result = _lint(tmp_path / "src")
    assert result.returncode != 0
    assert "0 broken" not in result.stdout
    assert named in result.stdout, result.stdout


def test_a_new_package_must_be_given_its_layer(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "hostatlas"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "unplaced").mkdir()
    (copy / "unplaced" / "__init__.py").write_text('"""A feature nobody placed in the layers yet."""\n')
    result = _lint(tmp_path / "src")
    assert result.returncode != 0
    assert "hostatlas.unplaced" in result.stdout, result.stdout
