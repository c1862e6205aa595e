"""The dashboard client's failures in words and exit codes, against a small HTTP server that
answers what a broken or foreign server would; the real dashboard is in
tests/integration/test_ctl.py."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hmonitor.ctl.client import DashboardClient
from hmonitor.ctl.errors import (
    EXIT_AUTH,
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CtlError,
)

HOSTS = {"hosts": [{"name": "gpu01", "address": "h:1", "up": True, "info": {"gpus": []}}]}
# path -> (status, content type, body, gzip it)
ANSWERS: dict[str, tuple[int, str, bytes, bool]] = {
    "/api/v1/hosts": (200, "application/json", json.dumps(HOSTS).encode(), True),
    "/api/v1/hosts/nope": (404, "application/json", b'{"error": "unknown host \'nope\'"}', False),
    "/api/v1/alerts": (200, "application/json", b'{"alerts": "many"}', False),
    "/api/v1/notes": (400, "application/json", b'{"error": "note is required"}', False),
    "/html/api/v1/hosts": (200, "text/html", b"<html>login</html>", False),
    "/wrong/api/v1/hosts": (401, "application/json", b'{"error": "authentication"}', False),
    "/busy/api/v1/hosts": (429, "application/json", b'{"error": "too many"}', False),
    "/broken/api/v1/hosts": (500, "text/plain", b"Internal Server Error", False),
}


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/slow"):
            time.sleep(1.0)
        seen.append((self.command, path, self.headers.get("Authorization", "")))
        status, kind, body, zipped = ANSWERS.get(path, (404, "text/html", b"<h1>404</h1>",
                                                        False))
        if zipped and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if zipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet: no request log
        pass


seen: list[tuple[str, str, str]] = []


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client that gave up on /slow closed its end: expected, not news


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def fails(call: object, code: int) -> str:
    assert callable(call)
    with pytest.raises(CtlError) as caught:
        call()
    assert caught.value.exit_code == code
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_hosts_with_the_token_and_gzip(server: str) -> None:
    seen.clear()
    hosts = DashboardClient(server + "/", "tok", 5).hosts()
    assert [h.name for h in hosts] == ["gpu01"]
    assert seen == [("GET", "/api/v1/hosts", "Bearer tok")]


def test_a_wrong_token_and_too_many(server: str) -> None:
    text = fails(DashboardClient(server + "/wrong", "x", 5).hosts, EXIT_AUTH)
    assert text == (f"the dashboard at {server}/wrong rejected the token (check HMONITOR_TOKEN:"
                    " it is settings.py's token)")
    assert "too many wrong tokens" in fails(DashboardClient(server + "/busy", "x", 5).hosts,
                                            EXIT_AUTH)


def test_not_a_dashboard(server: str) -> None:
    assert "not with JSON: is it an hmonitor dashboard?" in fails(
        DashboardClient(server + "/html", "t", 5).hosts, EXIT_UNREACHABLE)
    assert "has no /api/v1/hosts: is it an hmonitor dashboard" in fails(
        DashboardClient(server + "/elsewhere", "t", 5).hosts, EXIT_UNREACHABLE)
    assert "answered HTTP 500" in fails(DashboardClient(server + "/broken", "t", 5).hosts,
                                        EXIT_UNREACHABLE)
    client = DashboardClient(server, "t", 5)
    assert "without an alerts list" in fails(lambda: client.cluster(alerts=True),
                                             EXIT_UNREACHABLE)


def test_the_dashboards_own_errors_pass_through(server: str) -> None:
    client = DashboardClient(server, "t", 5)
    assert fails(lambda: client.host("nope"), EXIT_NOT_FOUND) == (
        "unknown host 'nope' (known: gpu01)")
    assert fails(lambda: client.send_json("POST", "/api/v1/notes", {}), EXIT_USAGE) == (
        "the dashboard says: note is required")


def test_down_and_silent_dashboards(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"http://127.0.0.1:{closed}"
    assert fails(DashboardClient(url, "t", 5).hosts, EXIT_UNREACHABLE) == (
        f"cannot reach the dashboard at {url}: connection refused (is hmonitor-web running?)")
    started = time.monotonic()
    text = fails(DashboardClient(server + "/slow", "t", 0.3).hosts, EXIT_UNREACHABLE)
    assert text == f"the dashboard at {server}/slow did not answer within 0.3 s"
    assert time.monotonic() - started < 0.9


def test_a_peer_that_does_not_speak_http(server: str) -> None:
    """HMONITOR_URL pointing at an agent's gRPC port: one line, not a traceback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def garbage() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00garbage\r\n\r\n")

        threading.Thread(target=garbage, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert fails(DashboardClient(url, "t", 5).hosts, EXIT_UNREACHABLE) == (
            f"{url} answered, but not in HTTP: is it an hmonitor dashboard (and not an agent's "
            "gRPC port)?")
