"""The dashboard as people meet it: a real ``hostatlas serve`` on loopback, driven by Debian's Chromium through
Playwright (no browser download: ``executable_path`` points at the system's). Data is made the way users and
agents make it: through the REST API and the agent API, never written into templates.

Without Chromium the browser tests are skipped with a message; under CI they fail (``.ci/run`` installs it).
Every page a test visits can be saved with ``shoot(page, name)`` under ``build/screenshots/`` to be looked at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI
from tests.support import bearer, free_port, hostatlas_command, running_server

CHROMIUM = os.environ.get("HOSTATLAS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
OWNER_EMAIL, OWNER_PASSWORD = "owner@example.com", "correct horse battery"


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if IN_CI:
        pytest.fail(f"{message}: CI requires it", pytrace=False)
    pytest.skip(f"{message}: skipping the browser tests")


def cli(workdir: Path, *args: str) -> str:
    """A ``hostatlas`` command against the site's database (the working directory's hostatlas-data)."""
    done = subprocess.run([*hostatlas_command(), *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "HOSTATLAS_DATABASE_URL": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Site:
    """A running platform: its base URL, an all-scopes API key, and the owner's sign-in."""

    base: str
    workdir: Path
    key: str
    api: httpx.Client
    log: Path
    users: dict[str, str] = field(default_factory=dict)

    def add_user(self, email: str, password: str = OWNER_PASSWORD, *, team: str = "default",
                 role: str = "member") -> str:
        cli(self.workdir, "user", "create", "--email", email, "--password", password, "--team", team, "--role", role)
        self.users[email] = password
        return email

    def agent_token(self, hostname: str = "web-prod-01", **facts: Any) -> tuple[int, str]:
        """Enrol a server through the agent API, as the agent does."""
        body = {"machine_id": f"machine-{hostname}", "hostname": hostname, "ip_address": "10.0.1.12",
                "os": "Ubuntu 22.04.3 LTS", "kernel": "6.2.0-39-generic", "cpu_cores": 4, "ram_total_mb": 8192,
                "agent_version": "1.4.2", **facts}
        response = self.api.post("/api/v1/agent/register", json=body)
        assert response.status_code == 201, response.text
        return int(response.json()["server_id"]), str(response.json()["agent_token"])


def start_site(workdir: Path, env: dict[str, str] | None = None, *, owner: bool = True) -> Iterator[Site]:
    """``hostatlas serve`` on SQLite in ``workdir`` with live parts refreshing every second, its public URL its
    real address (the ping URLs and commands the pages show work as they are)."""
    port = free_port()
    full_env = {"HOSTATLAS_PUBLIC_URL": f"http://127.0.0.1:{port}",
                "HOSTATLAS_DATA_DIR": str(workdir / "hostatlas-data"), "HOSTATLAS_DATABASE_URL": "",
                "HOSTATLAS_DASHBOARD_REFRESH": "1", "HOSTATLAS_RATE_LIMIT": "100000/minute",
                "HOSTATLAS_LOGIN_RATE_LIMIT": "1000/minute",
                "HOSTATLAS_OFFLINE_AFTER": "3600", "HOSTATLAS_TELEMETRY_STORER": "thread", **(env or {})}
    cli_env = {**os.environ, **full_env}
    subprocess.run([*hostatlas_command(), "migrate"], cwd=workdir, env=cli_env, check=True, capture_output=True)
    with running_server(workdir, full_env, port=port) as base:
        key = subprocess.run([*hostatlas_command(), "apikey", "create", "--name", "test-suite", "--scopes", "*"],
                             cwd=workdir, env=cli_env, capture_output=True, text=True, check=True
                             ).stdout.strip().splitlines()[-1]
        with httpx.Client(base_url=base, headers=bearer(key), timeout=30) as api:
            site = Site(base, workdir, key, api, log=next(workdir.glob("serve-*.log")))
            if owner:
                site.add_user(OWNER_EMAIL, OWNER_PASSWORD, role="owner")
            yield site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium_or_skip()
    yield from start_site(tmp_path_factory.mktemp("site"))


# Per module, not per session: while Playwright's sync API is open, its event loop runs in this thread and every
# asyncio.run() of a later (non-browser) test in the same xdist process fails; a module's end closes it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        # --no-sandbox: the suite may run as root (CI containers), where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class ConsoleErrors(list[str]):
    """Errors the page logged (a CSP violation, a failed script): a test fails on any it did not expect."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris",
                                  locale="en-GB")
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    errors = ConsoleErrors()
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.console_errors = errors
    yield opened
    context.close()
    unexpected = [e for e in errors if "status of 4" not in e]  # 4xx answers a test provoked on purpose
    assert not unexpected, f"the page logged errors: {unexpected}"


def sign_in(page: Any, site: Site, email: str = OWNER_EMAIL, password: str | None = None) -> None:
    page.goto(f"{site.base}/login")
    page.fill("#email", email)
    page.fill("#password", password or site.users.get(email, OWNER_PASSWORD))
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base}/")


def shoot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save what the page looks like now, to be looked at (build/screenshots/<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
