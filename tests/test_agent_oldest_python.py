"""The agent on the oldest Python it claims (3.9), as the wheel the project's tooling builds: the wheel's
metadata, the agent's own test suite run against the installed wheel, and the installed ``hostatlas-agent``
command against a real ``hostatlas serve``.

The 3.9 venv is cached under ``.cache/agent-py39/<key>/`` (the key hashes the agent's pyproject, uv.lock and
the interpreter), so a warm run only reinstalls the freshly built wheel. ``HOSTATLAS_TEST_AGENT_PYTHON``
names the interpreter; else ``python3.9`` on PATH, else pyenv's. Without one the tests skip, and fail under CI.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.agent_harness import FAST, AgentUnderTest, create_key, write_config
from tests.conftest import IN_CI
from tests.support import running_server

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "agent-py39"
OLDEST = (3, 9)
# Part of the cache key: bump it when the way the venv is made changes, so old venvs are not reused.
RECIPE = "1"
SERVE_ENV = {"HOSTATLAS_DATABASE_URL": "", "HOSTATLAS_TELEMETRY_BATCH_DELAY": "0.2", "HOSTATLAS_FLUSH_INTERVAL": "0.2",
             "HOSTATLAS_WORKER_TICK": "0.5", "HOSTATLAS_LOCAL_AGENT": "false"}
# Runs the agent's tests with the root pyproject's pytest options (filterwarnings=error, the timeout), then
# prints where every hostatlas_agent module the tests imported came from.
PYTEST_DRIVER = """
import json, sys, pytest
code = pytest.main(sys.argv[1:])
files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
         if name.split(".")[0] == "hostatlas_agent"}
print("AGENT-MODULES " + json.dumps(files))
sys.exit(code)
"""

# A cold cache builds a venv: more than the suite's default 120 s.
pytestmark = [pytest.mark.long_running(65), pytest.mark.timeout(300)]


def missing(what: str) -> None:
    """A developer's machine may lack it (skip); CI's machines have it (fail)."""
    if IN_CI:
        pytest.fail(f"{what}: CI requires it", pytrace=False)
    pytest.skip(f"{what}: skipping the oldest-Python agent tests")


def clean_env() -> dict[str, str]:
    """The environment without anything that could put agent/src (or another tree) ahead of the venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


def run(command: list[str], *, timeout: float = 180, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def probe_python(candidate: str) -> str | None:
    """The real executable behind ``candidate`` if it is a working 3.9 (a pyenv shim may refuse to run)."""
    try:
        done = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9), sys.executable)"],
                              capture_output=True, text=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    is_oldest, _, executable = done.stdout.strip().partition(" ")
    return executable if done.returncode == 0 and is_oldest == "True" and executable else None


def find_oldest_python() -> str:
    named = os.environ.get("HOSTATLAS_TEST_AGENT_PYTHON")
    if named:
        found = probe_python(named)
        if found is None:  # a wrong setting is a mistake to fix, on any machine
            pytest.fail(f"HOSTATLAS_TEST_AGENT_PYTHON={named} is not a working Python 3.9", pytrace=False)
        return found
    on_path = shutil.which("python3.9")
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"), reverse=True)
    for candidate in [*([on_path] if on_path else []), *map(str, pyenv)]:
        found = probe_python(candidate)
        if found:
            return found
    missing("no Python 3.9 (HOSTATLAS_TEST_AGENT_PYTHON, python3.9 on PATH, ~/.pyenv/versions/3.9*)")
    raise AssertionError("unreachable")


def find_uv() -> str:
    for candidate in (shutil.which("uv"), str(Path.home() / ".local" / "bin" / "uv")):
        if candidate and Path(candidate).exists():
            return candidate
    missing("uv is not installed (scripts/ensure-uv installs it)")
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def uv() -> str:
    return find_uv()


@pytest.fixture(scope="module")
def wheel(uv: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent's wheel, built the way the docs say (`uv build --package hostatlas-agent --wheel`)."""
    out = tmp_path_factory.mktemp("agent-wheel")
    run([uv, "build", "--package", "hostatlas-agent", "--wheel", "--out-dir", str(out)])
    built = sorted(out.glob("*.whl"))  # uv also writes a .gitignore there
    assert len(built) == 1 and built[0].match("hostatlas_agent-*-py3-none-any.whl"), built
    return built[0]


def pin_name(requirement: str) -> str:
    return re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def lock_pins(uv: str) -> dict[str, str]:
    """name -> the line uv.lock pins it with (``name==version ; marker``), for every group."""
    exported = run([uv, "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--no-annotate", "--no-header",
                    "--all-groups"]).stdout
    return {pin_name(line): line.strip() for line in exported.splitlines() if "==" in line and not line.startswith("#")}


def usable_pins(uv: str, python: str, wheel: Path) -> tuple[list[str], list[str]]:
    """The lock's pins, split into those that install on ``python`` and those that do not.

    uv.lock resolves for the platform's Python (>= 3.11), and some of its newest versions have dropped 3.9
    (anyio, cffi, pycparser, pytest did when this was written). Those are left to uv to resolve for 3.9
    within the agent's own ranges; every other package the agent needs on 3.9 gets the lock's version.
    """
    pins = lock_pins(uv)
    wanted = f"hostatlas-agent @ {wheel.as_uri()}\npytest\npytest-timeout\n"
    resolved = subprocess.run([uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--python", python,
                               "-"], input=wanted, capture_output=True, text=True, timeout=180, env=clean_env())
    assert resolved.returncode == 0, resolved.stderr
    needed = sorted({pin_name(line) for line in resolved.stdout.splitlines() if "==" in line} & pins.keys())
    kept: list[str] = []
    dropped: list[str] = []
    for name in needed:
        pin = pins[name].split(";")[0].strip()
        alone = subprocess.run([uv, "pip", "compile", "--quiet", "--python", python, "-"], input=pin,
                               capture_output=True, text=True, timeout=180, env=clean_env())
        if alone.returncode == 0:
            kept.append(pins[name])
        elif re.search(r"Python\s*[<>=!]", alone.stderr):  # the pin's Requires-Python leaves 3.9 out
            dropped.append(pins[name])
        else:  # anything else (no network, a yanked version) is not a reason to quietly unpin
            pytest.fail(f"cannot check {pin} on {python}:\n{alone.stderr}", pytrace=False)
    return kept, dropped


@dataclass
class AgentVenv:
    root: Path
    python: Path
    command: Path
    pins_dropped: list[str]


@pytest.fixture(scope="module")
def agent_venv(uv: str, wheel: Path) -> Iterator[AgentVenv]:
    """The cached 3.9 venv with the dependencies (made once per key) and this run's wheel (installed anew)."""
    python = find_oldest_python()
    version = run([python, "-c", "import sys; print(sys.version)"]).stdout
    digest = hashlib.sha256(RECIPE.encode() + python.encode() + version.encode())
    for source in (ROOT / "agent" / "pyproject.toml", ROOT / "uv.lock"):
        digest.update(source.read_bytes())
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once would reinstall the wheel under each other
        home = CACHE / digest.hexdigest()[:16]
        for stale in CACHE.iterdir():
            if stale.is_dir() and stale != home:
                shutil.rmtree(stale, ignore_errors=True)
        venv = AgentVenv(home / "venv", home / "venv" / "bin" / "python", home / "venv" / "bin" / "hostatlas-agent", [])
        constraints, ready = home / "constraints.txt", home / "ready.json"
        if not ready.exists():  # absent too after an interrupted build: start that one again from scratch
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            kept, dropped = usable_pins(uv, python, wheel)
            constraints.write_text("".join(f"{pin}\n" for pin in kept))
            run([uv, "venv", "--quiet", "--python", python, str(venv.root)])
            run([uv, "pip", "install", "--quiet", "--python", str(venv.python), "-c", str(constraints),
                 str(wheel), "pytest", "pytest-timeout"])
            ready.write_text(json.dumps({"kept": kept, "dropped": dropped}))
        venv.pins_dropped = json.loads(ready.read_text())["dropped"]
        run([uv, "pip", "install", "--quiet", "--python", str(venv.python), "-c", str(constraints),
             "--reinstall-package", "hostatlas-agent", str(wheel)])
        yield venv


def test_the_wheel_claims_python_39_and_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [metadata_name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
        names = archive.namelist()
    assert "Requires-Python: >=3.9" in metadata.splitlines(), metadata
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    assert sorted(pin_name(r) for r in requires) == ["cryptography", "httpx", "psutil", "tomli", "zstandard"]
    assert "tomli>=2.0; python_version < '3.11'" in requires
    assert "hostatlas_agent/cli.py" in names and not [n for n in names if n.startswith("hostatlas/")]


def test_the_agents_own_suite_passes_on_python_39_against_the_installed_wheel(agent_venv: AgentVenv) -> None:
    running = run([str(agent_venv.python), "-c", "import sys; print(sys.version_info[:2])"]).stdout
    assert running.strip() == str(OLDEST)
    done = subprocess.run([str(agent_venv.python), "-c", PYTEST_DRIVER, "agent/tests", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=240)
    report = f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}\n(pins the lock has but 3.9 cannot use: " \
             f"{agent_venv.pins_dropped})"
    assert done.returncode == 0, report
    summary = [line for line in done.stdout.splitlines() if re.search(r"\d+ passed", line)]
    assert summary and not re.search(r"\d+ (failed|error)", summary[-1]), report
    [modules_line] = [line for line in done.stdout.splitlines() if line.startswith("AGENT-MODULES ")]
    modules = json.loads(modules_line.removeprefix("AGENT-MODULES "))
    assert "hostatlas_agent.config" in modules, modules
    outside = {name: path for name, path in modules.items()
               if path is not None and not Path(path).resolve().is_relative_to(agent_venv.root.resolve())}
    assert not outside, f"the tests imported the agent from outside the venv: {outside}"


@dataclass
class InstalledAgent(AgentUnderTest):
    """The harness's agent, but run as the venv's ``hostatlas-agent`` console script."""

    executable: Path = field(default_factory=Path)

    def command(self, *args: str) -> list[str]:
        return [str(self.executable), "--config", str(self.config_path), *args]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=60, check=check,
                              env=clean_env())

    def start(self) -> None:
        self.log_path = self.workdir / "agent.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command("run"), stdout=log, stderr=subprocess.STDOUT,
                                            env=clean_env())


def test_the_installed_command_runs_against_a_real_platform(agent_venv: AgentVenv, tmp_path: Path) -> None:
    shebang = agent_venv.command.read_text().splitlines()[0]
    assert shebang == f"#!{agent_venv.python}", shebang
    version = run([str(agent_venv.command), "--version"])
    assert version.stdout.strip() == "hostatlas-agent 0.1.0"

    platform = tmp_path / "platform"
    platform.mkdir()
    key = create_key(platform)
    with running_server(platform, SERVE_ENV) as base:
        log = tmp_path / "app.log"
        log.write_text("")
        settings = {"url": base, "state_dir": tmp_path / "state", "nginx_configs": [], "apache_configs": [],
                    "certificate_paths": [], "docker_socket": str(tmp_path / "no-docker.sock"), **FAST,
                    "log_paths": [str(log)]}
        agent = InstalledAgent(tmp_path, write_config(tmp_path / "agent.toml", settings), base, key,
                               executable=agent_venv.command)
        agent.enrol()
        agent.start()
        process = agent.process
        assert process is not None
        try:
            agent.eventually(lambda: str(log) in agent.status().get("tailed_files", []), "the log file tailed")
            agent.eventually(lambda: [s for s in agent.api(f"/api/v1/servers/{agent.server_id}/metrics",
                                                           metric="cpu.percent", **{"from": "-5m"})["data"]
                                      if s["points"]], "cpu.percent points from the 3.9 agent")
            with log.open("a") as handle:
                handle.write("oldestpythonword a line from the agent on Python 3.9\n")
            agent.eventually(lambda: agent.api("/api/v1/logs", q="oldestpythonword", source=str(log),
                                               **{"from": "-1h"})["data"], "the appended line, searchable")
            agent.eventually(lambda: "last metrics:" in agent.cli("status").stdout, "status with a metrics success")
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"no exit within 10 s of SIGTERM; output:\n{agent.output()[-4000:]}")
            assert code == 0, agent.output()[-4000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Traceback" not in agent.output(), agent.output()[-4000:]
