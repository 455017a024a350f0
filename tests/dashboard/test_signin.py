"""Signing in, in a real browser: the first-run page with serve's token, sign-in and out, wrong passwords refused
and rate limited, log out everywhere, the team switcher."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import (
    OWNER_EMAIL,
    OWNER_PASSWORD,
    Site,
    chromium_or_skip,
    cli,
    shoot,
    sign_in,
    start_site,
)
from tests.support import wait_until


@pytest.fixture(scope="module")
def fresh_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A platform nobody can sign in to yet: the first-run state."""
    chromium_or_skip()
    yield from start_site(tmp_path_factory.mktemp("fresh"), owner=False)


def printed_setup_link(site: Site) -> str:
    pattern = re.compile(r"http://\S+/setup\?token=\S+")
    wait_until(lambda: pattern.search(site.log.read_text()), what="serve's setup link")
    found = pattern.search(site.log.read_text())
    assert found is not None
    return found.group(0)


def test_first_run_needs_the_printed_token_then_makes_the_owner(fresh_site: Site, page: Any) -> None:
    link = printed_setup_link(fresh_site)
    assert "token=" in link and "setup_token" not in fresh_site.log.read_text().replace(link, "")
    page.goto(f"{fresh_site.base}/")
    page.wait_for_url(re.compile(r"/setup$"))  # nobody can sign in: / leads to the first-run page
    shoot(page, "setup")
    page.fill("#token", "not-the-token")
    page.fill("#email", "first@example.com")
    page.fill("#password", "a long enough password")
    page.click("button[type=submit]")
    assert "not the one serve printed" in page.inner_text(".alert-error")
    assert page.evaluate("document.querySelector('#token').value") == ""

    page.goto(link)
    page.fill("#email", "first@example.com")
    page.fill("#password", "short")
    page.evaluate("document.querySelector('#password').removeAttribute('minlength')")
    page.click("button[type=submit]")
    assert "12 to 1024" in page.inner_text(".field-error")

    page.fill("#password", "a long enough password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{fresh_site.base}/")
    assert "first@example.com" in page.inner_text(".who")
    assert "owner" in page.inner_text(".role")
    # Once somebody can sign in, the first-run page is closed for good, token or not.
    page.goto(link)
    page.wait_for_url(re.compile(r"/login$"))


def test_sign_in_and_out(site: Site, page: Any) -> None:
    page.goto(f"{site.base}/incidents?status=open")
    page.wait_for_url(re.compile(r"/login\?next="))
    shoot(page, "login")
    page.fill("#email", OWNER_EMAIL.upper())  # addresses are compared lower-cased
    page.fill("#password", OWNER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/incidents\?status=open$"))  # back where the visit started
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["hostatlas_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert cookies["hostatlas_csrf"]["httpOnly"] and cookies["hostatlas_csrf"]["sameSite"] == "Strict"
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(f"{site.base}/")
    page.wait_for_url(re.compile(r"/login$"))


def test_wrong_password_is_refused_then_rate_limited(tmp_path: Path, page: Any) -> None:
    chromium_or_skip()
    for site in start_site(tmp_path, {"HOSTATLAS_LOGIN_RATE_LIMIT": "3/minute"}):
        page.goto(f"{site.base}/login")
        for _ in range(3):
            page.fill("#email", OWNER_EMAIL)
            page.fill("#password", "wrong password!!")
            with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
                page.click("button[type=submit]")
            assert answer.value.status == 401
            assert "Wrong email or password" in page.inner_text(".alert-error")
        # The fourth attempt is refused before the password is even looked at: even the right one.
        page.fill("#email", OWNER_EMAIL)
        page.fill("#password", OWNER_PASSWORD)
        with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
            page.click("button[type=submit]")
        assert answer.value.status == 429
        assert int(answer.value.headers["retry-after"]) > 0
        assert "Too many sign-in attempts" in page.inner_text(".alert-error")
        shoot(page, "login-rate-limited")
        assert "wrong password" not in site.log.read_text()  # passwords never reach the log


def test_log_out_everywhere_ends_every_session(site: Site, browser: Any, page: Any) -> None:
    email = site.add_user("everywhere@example.com", role="member")
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        sign_in(elsewhere, site, email)
        sign_in(page, site, email)
        page.goto(f"{site.base}/team")
        page.click("text=Log out everywhere")
        page.wait_for_url(re.compile(r"/login$"))
        # The other browser's open overview polls its live part every second: the next poll finds the session
        # gone and sends that page to the sign-in page by itself. (Navigating it meanwhile races that redirect.)
        elsewhere.wait_for_url(re.compile(r"/login\?next="))
        # And a page opened anew with the other browser's cookie is refused too.
        fresh = other.new_page()
        fresh.goto(f"{site.base}/")
        fresh.wait_for_url(re.compile(r"/login$"))
        sign_in(page, site, email)  # a new sign-in works again
    finally:
        other.close()


def test_team_switcher_changes_what_every_page_shows(site: Site, page: Any) -> None:
    cli(site.workdir, "team", "create", "ops", "--name", "Ops team")
    email = site.add_user("switcher@example.com", role="owner")
    site.add_user(email, team="ops", role="read-only")
    sign_in(page, site, email)
    assert page.input_value("#team-switch") != ""
    # The select submits itself; the answer is a new page (the URL stays /, so wait for the navigation itself).
    with page.expect_navigation():
        page.select_option("#team-switch", label="Ops team")
    assert "read-only" in page.inner_text(".role")
    with page.expect_navigation():
        page.select_option("#team-switch", label="Default")
    assert "owner" in page.inner_text(".role")


def test_a_forged_session_cookie_is_not_a_session(site: Site) -> None:
    with httpx.Client(base_url=site.base) as anonymous:
        anonymous.cookies.set("hostatlas_session", "WzEsMSwxNzAwMDAwMDAwXQ.forged.signature")
        response = anonymous.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
