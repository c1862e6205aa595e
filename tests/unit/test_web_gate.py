"""The one gate, walked over every route and method: no way around the login, failed attempts
limited wherever they are made, sessions that end when they should (issue 7, items 1, 2, 10,
12)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import cluster
from flask import Flask
from flask.testing import FlaskClient
from webkit import BEARER, TOKEN, csrf_for, csrf_of, login, make_app

from hmonitor.web.hoststate import HostState

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PUBLIC = {"static", "auth.login"}
WRONG_BEARER = {"Authorization": "Bearer not-the-token"}
_addresses = (f"10.{a}.{b}.{c}" for a, b, c in itertools.product(range(1, 255), repeat=3))


@pytest.fixture
def states() -> list[HostState]:
    return cluster(2, 2, 1)


def routes(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(endpoint, a concrete URL, method) for every rule and every method, plus unknown paths."""
    for rule in app.url_map.iter_rules():
        url = rule.rule.replace("<path:name>", "gpu000").replace("<int:index>", "0")
        url = url.replace("<path:filename>", "hmonitor.css")
        for method in METHODS:
            yield rule.endpoint, url, method
    for method in METHODS:
        yield "", "/api/v1/no-such-thing", method
        yield "", "/no-such-page", method


def fresh(client: FlaskClient, method: str, url: str, **kw: object) -> int:
    """One request from an address never seen before, so earlier failures do not interfere."""
    env = {"REMOTE_ADDR": next(_addresses)}
    return client.open(url, method=method, environ_base=env, **kw).status_code  # type: ignore[arg-type]


def refused(status: int, url: str) -> bool:
    """Programs (the API, a Prometheus scrape) get 401; browsers the login page."""
    return status == 401 if url.startswith("/api/") or url == "/metrics" else status == 302


def test_every_route_and_method_refuses_strangers(app: Flask, client: FlaskClient) -> None:
    walked = 0
    for endpoint, url, method in routes(app):
        if endpoint in PUBLIC:
            continue
        for headers in ({}, WRONG_BEARER, {"Authorization": "Basic eDp5"},
                        {"Authorization": "Bearer"}):
            status = fresh(client, method, url, headers=headers)
            assert refused(status, url), (method, url, headers, status)
            walked += 1
    assert walked > 150


def test_wrong_bearer_tokens_are_limited_on_every_route(app: Flask, client: FlaskClient) -> None:
    for endpoint, url, method in routes(app):
        if endpoint in PUBLIC:
            continue
        env = {"REMOTE_ADDR": next(_addresses)}
        for _ in range(10):
            client.open(url, method=method, headers=WRONG_BEARER, environ_base=env)
        blocked = client.open(url, method=method, headers=BEARER, environ_base=env)
        assert blocked.status_code == 429, (method, url)
        if url.startswith("/api/") and method != "HEAD":
            assert "too many failed attempts" in blocked.json["error"]  # type: ignore[index]


def test_failures_on_one_route_count_on_every_other(client: FlaskClient) -> None:
    env = {"REMOTE_ADDR": "10.0.0.7"}
    for url in ("/api/v1/history", "/api/v1/users", "/api/v1/nope", "/users", "/notes"):
        client.get(url, headers=WRONG_BEARER, environ_base=env)
    for _ in range(5):
        login_page = client.get("/login", environ_base=env)
        client.post("/login", environ_base=env,
                    data={"token": "guess", "csrf_token": csrf_of(login_page.text)})
    assert client.get("/api/v1/hosts", headers=BEARER, environ_base=env).status_code == 429


def test_head_login_is_no_login_attempt(client: FlaskClient) -> None:
    # HEAD used to run the POST branch: a guess outside the limit and CSRF, and with the right
    # token a working session cookie.
    page = client.get("/login")
    form = {"token": TOKEN, "csrf_token": csrf_of(page.text)}
    for _ in range(30):
        resp = client.head("/login", data=form, query_string=form)
        assert resp.status_code == 200
        assert "hmonitor_session" not in resp.headers.get("Set-Cookie", "") or \
            client.get("/").status_code == 302
    assert client.get("/").status_code == 302
    assert login(client).status_code == 302  # 30 HEADs spent no attempt


def test_successful_logins_never_count(client: FlaskClient) -> None:
    for _ in range(25):
        assert login(client).status_code == 302
        client.post("/logout", data={"csrf_token": csrf_for(client, "/")})
    for _ in range(25):
        assert client.get("/api/v1/hosts", headers=BEARER).status_code == 200


def test_others_failures_lock_out_only_for_the_documented_window(tmp_path: Path) -> None:
    app = make_app(tmp_path, cluster(1, 1, 1), failed_login_limit="3 per 2 seconds")
    client = app.test_client()
    for _ in range(3):
        assert login(client, token="guess").status_code == 401
    assert login(client).status_code == 429
    assert client.get("/api/v1/hosts", headers=BEARER).status_code == 429
    time.sleep(2.2)
    assert login(client).status_code == 302
    assert client.get("/api/v1/hosts", headers=BEARER).status_code == 200


def test_logout_ends_a_copied_session_cookie(app: Flask, client: FlaskClient) -> None:
    assert login(client).status_code == 302
    cookie = client.get_cookie("hmonitor_session")
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie("hmonitor_session", cookie.value)
    assert thief.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_for(client, "/")})
    assert thief.get("/").status_code == 302
    assert thief.get("/api/v1/hosts").status_code == 401


def test_logout_ends_the_session_after_a_restart_too(tmp_path: Path) -> None:
    first = make_app(tmp_path, cluster(1, 1, 1))
    client = first.test_client()
    login(client)
    cookie = client.get_cookie("hmonitor_session")
    assert cookie is not None
    client.post("/logout", data={"csrf_token": csrf_for(client, "/")})
    again = make_app(tmp_path, cluster(1, 1, 1)).test_client()
    again.set_cookie("hmonitor_session", cookie.value)
    assert again.get("/").status_code == 302


def test_sessions_expire_on_the_server_whatever_the_cookie_says(tmp_path: Path) -> None:
    app = make_app(tmp_path, cluster(1, 1, 1), session_lifetime=1)
    client = app.test_client()
    login(client)
    assert client.get("/").status_code == 200
    time.sleep(1.2)
    # The browser would drop the cookie by now; a copy kept by someone else must not work.
    cookie = client.get_cookie("hmonitor_session")
    other = app.test_client()
    if cookie is not None:
        other.set_cookie("hmonitor_session", cookie.value)
    assert other.get("/").status_code == 302


def test_a_bad_failed_login_limit_names_the_key(tmp_path: Path) -> None:
    from hmonitor.web.settings import SettingsError  # noqa: PLC0415

    for bad in ("often", "0/minute", "10/minute;5/hour", 10):
        with pytest.raises(SettingsError, match="failed_login_limit"):
            make_app(tmp_path, failed_login_limit=bad)
