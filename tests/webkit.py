"""What the dashboard's tests in a test client (tests/unit, tests/integration) share: a
settings.py as an admin writes it, the real app over a ``FakePoller``, login and CSRF tokens.

The ``app`` and ``client`` fixtures built on these live in tests/conftest.py; test data (hosts,
GPUs, clusters) in tests/builders.py. Browser tests have tests/browserkit.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from builders import FakePoller
from flask import Flask
from flask.testing import FlaskClient

from hmonitor.web.app import create_app
from hmonitor.web.hoststate import HostState
from hmonitor.web.settings import load_settings

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}  # a script's credentials, for the API


def write_settings(folder: Path, servers: Mapping[str, str] | None = None,
                   **keys: Any) -> Path:
    """A settings.py in the spec's format (plus ``keys``), as an admin would write it; servers
    default to one agent on 127.0.0.1:9203; the token is ``TOKEN``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"servers = {dict(servers or {'local': '127.0.0.1:9203'})!r}",
             f"token = {TOKEN!r}"]
    lines += [f"{key} = {value!r}" for key, value in keys.items()]
    path = folder / "settings.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_app(folder: Path, states: Iterable[HostState] = (), **keys: Any) -> Flask:
    """The real app on a real settings file and SQLite in ``folder``, fed by a FakePoller."""
    states = list(states)
    servers = {h.name: h.address for h in states} or None
    settings = load_settings(write_settings(folder, servers, **keys))
    app = create_app(settings, poller=FakePoller(states), start_poller=False)
    app.config["TESTING"] = True
    return app


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "page has no CSRF token"
    return found.group(1)


def login(client: FlaskClient, token: str = TOKEN, name: str = "") -> Any:
    """Logs ``client`` in through the login form, as ``name``; returns the response."""
    page = client.get("/login")
    return client.post("/login", data={"token": token, "name": name,
                                       "csrf_token": csrf_of(page.text)})


def csrf_for(client: FlaskClient, path: str = "/notes") -> str:
    """The CSRF token of the form on ``path``, for a POST from ``client``."""
    return csrf_of(client.get(path).text)
