"""Shared fixtures. The fake NVML library's fixture lives in tests/fakenvml/plugin.py, the browser
tests' in tests/browserkit.py; test data in tests/builders.py, web helpers in tests/webkit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from webkit import make_app

from hmonitor.web.hoststate import HostState

pytest_plugins = ["fakenvml.plugin", "browserkit", "cgroupkit", "notifykit"]


@pytest.fixture
def app(tmp_path: Path, states: list[HostState]) -> Flask:
    """The real app (``webkit.make_app``) in ``tmp_path``, over the test module's ``states``
    fixture. A module may define its own ``app`` instead."""
    return make_app(tmp_path, states)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``, not logged in. A module may define its own (logged in, with a
    token) instead."""
    return app.test_client()
