"""Sessions, CSRF and the first-run page over HTTP, on SQLite and PostgreSQL (the ``client`` fixture runs on
both): what a browser cannot easily show (expiry, forged and replayed cookies, NUL in a form, open redirects)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from fastapi.testclient import TestClient
from pydantic import SecretStr

from hostatlas.app import create_app
from hostatlas.clock import utcnow
from hostatlas.db.engine import Database
from hostatlas.settings import Settings
from hostatlas.teams import service as teams
from hostatlas.users import service as users
from hostatlas.users.models import Role, User

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def make_user(db: Database, email: str, *, role: Role = Role.OWNER, team: str = "default") -> None:
    with db.session(write=True) as session:
        users.create_user(session, email=email, password=PASSWORD, team=teams.get_team_by_slug(session, team),
                          role=role, now=utcnow())


def csrf_of(client: TestClient, path: str = "/login") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD, **extra: str) -> object:
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_of(client),
                                       **extra}, follow_redirects=False)


def test_pages_send_strangers_to_sign_in(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    response = client.get("/servers?status=online", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fservers%3Fstatus%3Donline"
    # htmx asks for fragments: it is told where to go instead of getting the sign-in page as a fragment.
    fragment = client.get("/overview/live", headers={"HX-Request": "true"}, follow_redirects=False)
    assert fragment.headers["HX-Redirect"] == "/login?next=%2Foverview%2Flive"


def test_sign_in_sets_a_hardened_cookie_and_shows_the_overview(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    response = sign_in(client, "Ann@Example.com")
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert "hostatlas_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    page = client.get("/")
    assert page.status_code == 200 and "ann@example.com" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
    assert page.headers["server-timing"].startswith("app;dur=")


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    client.get("/login")
    refused = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD})
    assert refused.status_code == 403 and "did not come from this site" in refused.text
    wrong = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": "0" * 64})
    assert wrong.status_code == 403
    assert "hostatlas_session" not in client.cookies


def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    wrong = sign_in(client, "ann@example.com", "not the password")
    unknown = sign_in(client, "nobody@example.com", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password" in wrong.text and "Wrong email or password" in unknown.text


def test_next_never_leaves_the_site(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = sign_in(client, "ann@example.com", next=target)
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith("/") and not location.startswith("//") and "evil" not in location.split("?")[0][:2]


def test_nul_and_oversized_input_get_a_page_not_a_500(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    token = csrf_of(client)
    nul = client.post("/login", data={"email": "ann\x00@example.com", "password": PASSWORD, "csrf_token": token})
    assert nul.status_code == 422 and "<html" in nul.text
    huge = client.post("/login", data={"email": "a" * 5000, "password": PASSWORD, "csrf_token": token})
    assert huge.status_code == 422
    sign_in(client, "ann@example.com")
    bad_id = client.post("/switch-team", data={"team_id": "99999999999999999999", "csrf_token": csrf_of(client, "/")})
    assert bad_id.status_code == 422 and "team_id" in bad_id.text


def test_sessions_expire(client: TestClient, db: Database, settings: Settings) -> None:
    make_user(db, "ann@example.com")
    assert sign_in(client, "ann@example.com").status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 200
    with time_machine.travel(utcnow() + timedelta(seconds=settings.session_max_age + 60)):
        assert client.get("/", follow_redirects=False).status_code == 303


def test_log_out_everywhere_ends_copies_of_the_cookie(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    sign_in(client, "ann@example.com")
    stolen = client.cookies.get("hostatlas_session")
    assert client.post("/logout-everywhere", data={"csrf_token": csrf_of(client, "/")},
                       follow_redirects=False).status_code == 303
    client.cookies.set("hostatlas_session", stolen)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_plain_log_out_only_forgets_the_cookie(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    sign_in(client, "ann@example.com")
    kept = client.cookies.get("hostatlas_session")
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.set("hostatlas_session", kept)  # a copy taken before still works until log out everywhere
    assert client.get("/", follow_redirects=False).status_code == 200


def test_a_disabled_user_is_signed_out(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    sign_in(client, "ann@example.com")
    with db.session(write=True) as session:
        session.query(User).filter(User.email == "ann@example.com").update({"disabled": True})
    assert client.get("/", follow_redirects=False).status_code == 303


def test_switching_to_a_team_one_is_not_in_answers_404(client: TestClient, db: Database) -> None:
    make_user(db, "ann@example.com")
    with db.session(write=True) as session:
        outsiders = teams.create_team(session, "outsiders").id
    sign_in(client, "ann@example.com")
    response = client.post("/switch-team", data={"team_id": str(outsiders), "csrf_token": csrf_of(client, "/")})
    assert response.status_code == 404 and "<html" in response.text


@pytest.fixture
def first_run(db: Database, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"setup_token": SecretStr("the-printed-token")}), db=db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_first_run_page_takes_only_the_printed_token_once(first_run: TestClient, db: Database) -> None:
    assert first_run.get("/login", follow_redirects=False).headers["location"] == "/setup"
    token = csrf_of(first_run, "/setup")
    form = {"email": "first@example.com", "password": PASSWORD, "csrf_token": token}
    assert first_run.post("/setup", data={**form, "token": "guess"}).status_code == 403
    made = first_run.post("/setup", data={**form, "token": "the-printed-token"}, follow_redirects=False)
    assert made.status_code == 303 and made.headers["location"] == "/"
    assert "first@example.com" in first_run.get("/").text
    with db.session(write=False) as session:
        assert [(m.role, t.slug) for m, t in users.memberships(
            session, session.query(User).one().id)] == [("owner", "default")]
    # Closed for good: the same token cannot make a second owner.
    again = first_run.post("/setup", data={**form, "email": "second@example.com", "token": "the-printed-token"},
                           follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/login"
    with db.session(write=False) as session:
        assert session.query(User).count() == 1


def test_without_a_token_the_first_run_page_explains_what_to_do(client: TestClient) -> None:
    page = client.get("/setup")
    assert page.status_code == 200 and "hostatlas user create" in page.text
    token = csrf_of(client, "/setup")
    refused = client.post("/setup", data={"email": "x@example.com", "password": PASSWORD, "token": "",
                                          "csrf_token": token})
    assert refused.status_code == 403
