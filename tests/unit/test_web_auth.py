"""Login, sessions, Bearer tokens, CSRF, the login rate limit and the security headers."""

from __future__ import annotations

import os
import stat
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from builders import NOW, down, gpu, host_info, lost_gpu, proc, up
from flask.testing import FlaskClient
from webkit import BEARER, TOKEN, csrf_for, csrf_of, login, make_app

from hmonitor.web.auth import CONTENT_SECURITY_POLICY, SECRET_FILE
from hmonitor.web.hoststate import HostState

PAGES = ["/", "/notes", "/notes?user=alice&host=gpu01", "/?user=alice&free=1"]
APIS = ["/api/v1/hosts", "/api/v1/hosts/gpu01", "/api/v1/notes", "/api/v1/notice"]


@pytest.fixture
def states() -> list[HostState]:
    return [
        up("gpu01", host_info("gpu01", [
            gpu(0, proc("alice", expiration=1), util=90, used_gib=40),
            gpu(1, proc("", uid=4242, expiration=0), util=10),
            lost_gpu(2, "Unknown Error"),
            gpu(3),
        ], disks=(("/", 0.95),))),
        down("gpu02", "connection refused", last_seen=NOW - 300),
    ]


@pytest.fixture
def logged_in(client: FlaskClient) -> FlaskClient:
    assert login(client).status_code == 302
    return client


# --- who may see what --------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_strangers_to_the_login_page(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", APIS)
def test_api_answers_strangers_401_json(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 401
    assert "authentication required" in resp.json["error"]  # type: ignore[index]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_state_changing_requests_need_a_session_too(client: FlaskClient) -> None:
    assert client.post("/notes", data={"user": "a", "host": "b", "note": "c"}).status_code == 302
    assert client.post("/api/v1/notes", json={"user": "a", "host": "b", "note": "c"}
                       ).status_code == 401
    assert client.post("/reload").status_code == 302
    assert client.put("/api/v1/notice", json={"notice": "x"}).status_code == 401


def test_login_page_and_static_files_are_public(client: FlaskClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert 'name="token"' in page.text
    for path in ("/static/hmonitor.css", "/static/live.js"):
        with client.get(path) as resp:
            assert resp.status_code == 200


@pytest.mark.parametrize("path", PAGES + APIS)
def test_a_session_opens_everything(logged_in: FlaskClient, path: str) -> None:
    assert logged_in.get(path).status_code == 200


def test_wrong_token_is_refused(client: FlaskClient) -> None:
    resp = login(client, token="guess")
    assert resp.status_code == 401
    assert "Wrong token" in resp.text
    assert client.get("/").status_code == 302


def test_login_returns_to_the_page_asked_for_but_never_off_site(client: FlaskClient) -> None:
    first = client.get("/?user=alice")
    target = first.headers["Location"]
    page = client.get(target)
    resp = client.post("/login", data={"token": TOKEN, "next": "/?user=alice",
                                       "csrf_token": csrf_of(page.text)})
    assert resp.headers["Location"] == "/?user=alice"
    client.post("/logout", data={"csrf_token": csrf_for(client, "/")})
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example",
                 "/\t/evil.example/", "/\n/evil.example/"):
        page = client.get("/login")
        resp = client.post("/login", data={"token": TOKEN, "next": evil,
                                           "csrf_token": csrf_of(page.text)})
        assert resp.headers["Location"] == "/", evil
        client.post("/logout", data={"csrf_token": csrf_for(client, "/")})


def test_logout_ends_the_session_and_needs_post(logged_in: FlaskClient) -> None:
    assert logged_in.get("/logout").status_code == 405
    resp = logged_in.post("/logout", data={"csrf_token": csrf_for(logged_in, "/")})
    assert resp.headers["Location"] == "/login"
    assert logged_in.get("/").status_code == 302
    assert logged_in.get("/api/v1/hosts").status_code == 401


def test_session_is_permanent_with_the_configured_lifetime(tmp_path: Path) -> None:
    app = make_app(tmp_path, session_lifetime=3600)
    client = app.test_client()
    resp = login(client)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("hmonitor_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    expires = client.get_cookie("hmonitor_session").expires  # type: ignore[union-attr]
    assert expires is not None
    assert abs(expires.timestamp() - (time.time() + 3600)) < 60


# --- Bearer tokens --------------------------------------------------------------------------------


def test_bearer_token_opens_the_api_without_a_session(client: FlaskClient) -> None:
    assert client.get("/api/v1/hosts", headers=BEARER).status_code == 200
    # ... and state changes need no CSRF token: another site cannot set this header.
    resp = client.put("/api/v1/notice", json={"notice": "hi"}, headers=BEARER)
    assert resp.status_code == 200


def test_wrong_bearer_token_is_refused(client: FlaskClient) -> None:
    for header in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "):
        resp = client.get("/api/v1/hosts", headers={"Authorization": header})
        assert resp.status_code == 401, header


def test_bearer_token_opens_pages_too_and_a_wrong_one_is_refused(client: FlaskClient) -> None:
    # One rule for every route: scripts may fetch a page (or its CSV) with the token.
    assert client.get("/", headers=BEARER).status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer nope"}).status_code == 302


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/notes", {"user": "a", "host": "b", "note": "c"}),
        ("/notes/delete", {"user": "a", "host": "b"}),
        ("/notice", {"notice": "x"}),
        ("/reload", {}),
        ("/logout", {}),
    ],
)
def test_browser_posts_without_csrf_token_are_rejected(
    logged_in: FlaskClient, path: str, data: dict[str, str]
) -> None:
    resp = logged_in.post(path, data=data)
    assert resp.status_code == 400
    assert "security token" in resp.text
    assert logged_in.post(path, data={**data, "csrf_token": "forged"}).status_code == 400


def test_api_writes_from_a_session_need_the_csrf_header(logged_in: FlaskClient) -> None:
    body = {"user": "a", "host": "b", "note": "c"}
    resp = logged_in.post("/api/v1/notes", json=body)
    assert resp.status_code == 400
    assert "CSRF" in resp.json["error"]  # type: ignore[index]
    token = csrf_for(logged_in, "/")
    assert logged_in.post("/api/v1/notes", json=body, headers={"X-CSRFToken": token}
                          ).status_code == 200


def test_login_form_needs_its_csrf_token(client: FlaskClient) -> None:
    client.get("/login")
    assert client.post("/login", data={"token": TOKEN}).status_code == 400
    assert client.get("/").status_code == 302


# --- rate limit -------------------------------------------------------------------------------


def test_login_attempts_are_limited_per_client_address(client: FlaskClient) -> None:
    for _ in range(10):
        assert login(client, token="guess").status_code == 401
    blocked = login(client)  # even the right token: the client must wait
    assert blocked.status_code == 429
    assert "Too many failed login attempts" in blocked.text
    assert client.get("/").status_code == 302
    # Another address is not affected.
    page = client.get("/login", environ_base={"REMOTE_ADDR": "10.9.9.9"})
    resp = client.post("/login", environ_base={"REMOTE_ADDR": "10.9.9.9"},
                       data={"token": TOKEN, "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 302


def test_wrong_bearer_tokens_count_against_the_limit(client: FlaskClient) -> None:
    for _ in range(10):
        assert client.get("/api/v1/hosts", headers={"Authorization": "Bearer x"}
                          ).status_code == 401
    assert client.get("/api/v1/hosts", headers=BEARER).status_code == 429
    assert client.get("/api/v1/hosts", headers=BEARER,
                      environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 200


def test_right_bearer_tokens_are_not_limited(client: FlaskClient) -> None:
    for _ in range(15):
        assert client.get("/api/v1/notice", headers=BEARER).status_code == 200


# --- secret -------------------------------------------------------------------------------------


def test_missing_secret_is_generated_once_kept_private_and_reused(tmp_path: Path) -> None:
    first = make_app(tmp_path)
    path = tmp_path / SECRET_FILE
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 64
    client = first.test_client()
    login(client)
    # A restarted dashboard (a new app on the same data dir) still accepts the session.
    second = make_app(tmp_path)
    assert second.config["SECRET_KEY"] == secret
    cookie = client.get_cookie("hmonitor_session")
    assert cookie is not None
    again = second.test_client()
    again.set_cookie("hmonitor_session", cookie.value)
    assert again.get("/").status_code == 200


def test_configured_secret_is_used_and_nothing_written(tmp_path: Path) -> None:
    app = make_app(tmp_path, secret="from-settings")
    assert app.config["SECRET_KEY"] == "from-settings"
    assert not (tmp_path / SECRET_FILE).exists()


def test_changing_the_token_logs_everybody_out(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    login(client)
    cookie = client.get_cookie("hmonitor_session")
    assert cookie is not None
    # Restarted with the same kept secret but a new token in settings.py.
    restarted = make_app(tmp_path, token="rotated").test_client()
    restarted.set_cookie("hmonitor_session", cookie.value)
    assert restarted.get("/").status_code == 302
    same = make_app(tmp_path).test_client()
    same.set_cookie("hmonitor_session", cookie.value)
    assert same.get("/").status_code == 200


# --- headers and the markup CSP depends on ------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/static/hmonitor.css", "/api/v1/hosts"])
def test_security_headers_everywhere(client: FlaskClient, path: str) -> None:
    resp = client.get(path, headers=BEARER)
    resp.close()
    assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in resp.headers["Content-Security-Policy"]
    assert "object-src 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "same-origin"


def test_private_answers_are_not_cached(logged_in: FlaskClient) -> None:
    for path in ("/", "/notes", "/api/v1/hosts"):
        assert logged_in.get(path).headers["Cache-Control"] == "no-store"


class _Markup(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, styles and handlers, off-site
    assets."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}={value!r}>")
            if name in ("src", "href", "action") and value and (
                    value.startswith("//") or ":" in value.split("/")[0]):
                self.problems.append(f"off-site {name}: {value}")
        if tag == "script":
            self.scripts += 1
            self._in_script = True
            if not names.get("src"):
                self.problems.append("<script> without src")
        if tag == "style":
            self.problems.append("<style> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script: {data[:40]!r}")


@pytest.mark.parametrize("path", ["/", "/?user=alice&host=gpu&free=1", "/notes",
                                  "/notes?user=alice&host=gpu01", "/login"])
def test_no_page_has_inline_script_style_or_off_site_assets(
    logged_in: FlaskClient, path: str
) -> None:
    logged_in.post("/api/v1/notes", headers=BEARER,
                   json={"user": "alice", "host": "gpu01", "note": "<b onclick=x>hi</b>"})
    if path == "/login":
        logged_in.post("/logout", data={"csrf_token": csrf_for(logged_in, "/")})
    resp = logged_in.get(path)
    assert resp.status_code == 200
    parser = _Markup()
    parser.feed(resp.text)
    assert parser.problems == []
    assert parser.scripts >= 1, "the page should load its scripts from files"


def test_error_page_has_no_inline_script_either(logged_in: FlaskClient) -> None:
    resp = logged_in.post("/notice", data={"notice": "x"})
    assert resp.status_code == 400
    parser = _Markup()
    parser.feed(resp.text)
    assert parser.problems == []
