"""The dashboard keeps the API's walls, on SQLite and PostgreSQL, for every page and every form there is.

Rather than a list of forms that goes stale, the test crawls: an owner of team A opens every page (lists and the
detail of one of each resource, made through the REST API and the agent API) and collects each ``<form
method=post>``. Then:
- a read-only member of A sees none of those forms, except signing out and switching team;
- the same member posting any of them with a valid CSRF token gets 403 (a forged form);
- the owner posting any of them without the CSRF token gets 403;
- an owner of team B opening A's pages by id, or posting A's forms with B's own valid token, gets 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from hostatlas.db.engine import Database
from hostatlas.users.models import Role
from tests.dashboard.test_sessions import csrf_of, make_user, sign_in
from tests.support import Story, bearer, enrol

ALWAYS_ALLOWED = {"/logout", "/logout-everywhere", "/switch-team"}
PUBLIC_ADDRESS = "93.184.216.34"


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)


class FormCollector(HTMLParser):
    """Every POST form of a page with the values a person would send without typing (hidden fields, defaults)."""

    def __init__(self, page_path: str) -> None:
        super().__init__()
        self.page_path = page_path
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "get").lower() == "post":
            self._current = Form(a.get("action") or self.page_path)
        elif tag == "form" and a.get("hx-post"):
            self._current = Form(a["hx-post"])
        elif self._current is not None and tag in ("input", "textarea") and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self._current.fields.setdefault(a["name"], a.get("value") or ("probe" if kind != "hidden" else ""))
        elif self._current is not None and tag == "select":
            self._select = a.get("name")
        elif self._current is not None and tag == "option" and self._select:
            self._current.fields.setdefault(self._select, a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._current is not None:
            self.forms.append(self._current)
            self._current = None
        elif tag == "select":
            self._select = None


def is_form_page(path: str) -> bool:
    """A page that is only a form (a new rule, editing one): nothing to see there without the write scope."""
    return path.endswith(("/new", "/edit"))


def forms_of(client: TestClient, path: str, *, may_refuse: bool = False) -> list[Form]:
    response = client.get(path)
    if may_refuse and response.status_code == 403:
        return []
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    collector = FormCollector(path)
    collector.feed(response.text)
    return collector.forms


@dataclass
class World:
    pages: list[str]  # every page of team A, lists and details
    detail_pages: list[str]  # those that name one of A's resources by id


def make_world(client: TestClient, story: Story) -> World:
    """One of each resource in team A, made the way users and agents make them."""
    key = bearer(story.admin_a)
    server_id, _ = enrol(client, story.admin_a)
    incident = client.post("/api/v1/incidents", headers=key, json={"title": "Disk full", "severity": "critical",
                                                                    "server_id": server_id}).json()
    heartbeat = client.post("/api/v1/heartbeats", headers=key, json={"name": "nightly-backup", "interval": 86400,
                                                                      "grace": 3600}).json()
    webhook = client.post("/api/v1/webhooks", headers=key, json={"url": f"https://{PUBLIC_ADDRESS}/hook"}).json()
    rule = client.post("/api/v1/alert-rules", headers=key, json={
        "name": "CPU hot", "metric": "cpu.percent", "operator": ">=", "threshold": 90, "for_s": 60,
        "severity": "warning"}).json()
    api_key = client.post("/api/v1/api-keys", headers=key, json={"name": "CI", "scopes": ["servers:read"]}).json()
    for made in (incident, heartbeat, webhook, rule, api_key):
        assert "id" in made, made
    details = [f"/servers/{server_id}", f"/incidents/{incident['id']}", f"/heartbeats/{heartbeat['id']}",
               f"/webhooks/{webhook['id']}", f"/alerts/{rule['id']}/edit"]
    lists = ["/", "/servers", "/incidents", "/alerts", "/alerts/new", "/heartbeats", "/webhooks", "/api-keys",
             "/team"]
    return World(pages=lists + details, detail_pages=details)


@pytest.fixture
def world(client: TestClient, db: Database, story: Story) -> World:
    made = make_world(client, story)
    make_user(db, "owner@example.com", role=Role.OWNER)
    make_user(db, "reader@example.com", role=Role.READ_ONLY)
    make_user(db, "outsider@example.com", role=Role.OWNER, team="outsiders")
    return made


def all_forms(client: TestClient, pages: list[str]) -> list[Form]:
    found: dict[str, Form] = {}
    for path in pages:
        for form in forms_of(client, path):
            found.setdefault(form.action, form)
    return list(found.values())


def test_a_read_only_member_sees_no_write_control(client: TestClient, world: World) -> None:
    sign_in(client, "owner@example.com")
    owner_forms = all_forms(client, world.pages)
    assert len([f for f in owner_forms if f.action not in ALWAYS_ALLOWED]) >= 10, owner_forms  # the crawl works
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    sign_in(client, "reader@example.com")
    for path in world.pages:
        shown = [f.action for f in forms_of(client, path, may_refuse=is_form_page(path))
                 if f.action not in ALWAYS_ALLOWED]
        assert not shown, f"{path} shows write controls to a read-only member: {shown}"


def test_forged_and_tokenless_posts_are_refused(client: TestClient, world: World) -> None:
    sign_in(client, "owner@example.com")
    forms = [f for f in all_forms(client, world.pages) if f.action not in ALWAYS_ALLOWED]
    for form in forms:
        tokenless = {k: v for k, v in form.fields.items() if k != "csrf_token"}
        answer = client.post(form.action, data=tokenless, follow_redirects=False)
        assert answer.status_code == 403, f"{form.action} without a CSRF token: {answer.status_code}"
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    sign_in(client, "reader@example.com")
    token = csrf_of(client, "/")
    for form in forms:
        answer = client.post(form.action, data={**form.fields, "csrf_token": token}, follow_redirects=False)
        assert answer.status_code == 403, f"{form.action} posted by a read-only member: {answer.status_code}"
        assert "<html" in answer.text


def test_another_teams_ids_answer_404(client: TestClient, world: World) -> None:
    sign_in(client, "owner@example.com")
    id_forms = [f for f in all_forms(client, world.detail_pages) if re.search(r"/\d+(/|$)", f.action)]
    assert id_forms, "no form acts on one resource"
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    sign_in(client, "outsider@example.com")
    for path in world.detail_pages:
        assert client.get(path).status_code == 404, path
    token = csrf_of(client, "/")
    for form in id_forms:
        answer = client.post(form.action, data={**form.fields, "csrf_token": token}, follow_redirects=False)
        assert answer.status_code == 404, f"{form.action} by another team: {answer.status_code} {answer.text[:200]}"
