"""What the browser tests (tests/browser) share: in-test gRPC agents, the real app served by
waitress on a free loopback port, Debian's Chromium driven by Playwright's sync API, login, and
a watch on console errors, page errors and CSP violations.

A module, not tests/browser/conftest.py: that would be a second module named "conftest" for
mypy. Its fixtures (``browser``, and ``page``, which needs the test module's own ``dashboard``
fixture) are registered by ``pytest_plugins`` in tests/conftest.py; its helpers are imported.
The agents' snapshots are built with tests/builders.py.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from flask import Flask

from hmonitor._pb import hm_pb2, hm_pb2_grpc
from hmonitor.web.app import create_app
from hmonitor.web.settings import load_settings
from hmonitor.web.state import get_state

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "browser-test-token"

# A browser test module's ``pytestmark``.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium "
                       "(apt-get install -y chromium)"),
]


class Agent(hm_pb2_grpc.HostMonitorServicer):
    """An agent answering whatever snapshot the test holds right now."""

    def __init__(self, info: hm_pb2.HostInfo) -> None:
        self.info = info

    def GetInfo(
        self, request: hm_pb2.RequestInfo, context: grpc.ServicerContext
    ) -> hm_pb2.HostInfo:
        return self.info


@dataclass
class Dashboard:
    url: str
    agents: dict[str, Agent]
    app: Flask


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """``app`` over HTTP (waitress, in a thread): yields its base URL."""
    import waitress  # noqa: PLC0415 - only the browser tests serve over HTTP

    http = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=http.run, name="waitress", daemon=True).start()
    try:
        yield f"http://127.0.0.1:{http.effective_port}"
    finally:
        http.close()
        http.task_dispatcher.shutdown()


@contextmanager
def run_dashboard(folder: Path, snapshots: Mapping[str, hm_pb2.HostInfo], down: list[str],
                  settings: str,
                  prepare: Callable[[Flask], None] | None = None,
                  real: Mapping[str, str] | None = None) -> Iterator[Dashboard]:
    """The real app and poller over agents answering ``snapshots``, closed ports ``down`` and
    real agents ``real`` (name -> address); ``settings`` are more lines of settings.py;
    ``prepare(app)`` runs before the poller's first round. Yields once every host has been
    polled (or after 10 s)."""
    agents = {name: Agent(info) for name, info in snapshots.items()}
    servers: dict[str, str] = {}
    grpc_servers = []
    for name, agent in agents.items():
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        hm_pb2_grpc.add_HostMonitorServicer_to_server(agent, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        grpc_servers.append(server)
        servers[name] = f"127.0.0.1:{port}"
    for name in down:
        servers[name] = f"127.0.0.1:{closed_port()}"
    servers.update(real or {})
    (folder / "settings.py").write_text(f"servers = {servers!r}\ntoken = {TOKEN!r}\n{settings}")
    app = create_app(load_settings(folder / "settings.py"), start_poller=False)
    state = get_state(app)
    if prepare is not None:
        prepare(app)
    state.poller.start()
    state.started_poller = True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(h.polled_at is None for h in state.poller.hosts()):
        time.sleep(0.05)
    try:
        with serve(app) as url:
            yield Dashboard(url, agents, app)
    finally:
        state.close()
        for server in grpc_servers:
            server.stop(grace=None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only when not skipped

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Console errors, page errors and CSP violations seen by one page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # Runs from the devtools protocol, so the page's CSP does not apply to it.
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")


def log_in(pg: Any, url: str, token: str = TOKEN, ready: str = "#hosts article") -> None:
    """Logs in from ``url``'s overview, then waits for ``ready`` and a first live refresh."""
    from playwright.sync_api import expect  # noqa: PLC0415 - only when not skipped

    pg.goto(url + "/")
    assert "/login" in pg.url
    pg.fill("input[name=token]", token)
    pg.fill("input[name=name]", "browser")
    pg.click("button[type=submit]")
    pg.wait_for_selector(ready)
    # The live refresh ran at least once. (Waiting uses locators: the page's CSP forbids the
    # eval that wait_for_function with an expression needs.)
    expect(pg.locator("#updated")).to_have_text(re.compile("^live"))


@pytest.fixture
def page(browser: Any, dashboard: Dashboard) -> Iterator[tuple[Any, Watch]]:
    """A logged-in page on the test module's ``dashboard`` (which has a host gpu-a), and its
    watch."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    watch = Watch(pg)
    try:
        log_in(pg, dashboard.url, ready="article[data-k='gpu-a']")
        yield pg, watch
    finally:
        context.close()


def text(page: Any, selector: str) -> str:
    # textContent, not innerText: the words as written, not as CSS capitalises them.
    return " ".join(str(page.text_content(selector)).split())
