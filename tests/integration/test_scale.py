"""The real ``hmonitor-web`` polling 1,100 agents while browsers load its pages.

A gRPC channel per agent puts the server's socket numbers past 1023, where waitress's default
``select()`` loop failed as soon as a browser connected. The agents are bench/_agents_farm.py
(one process, a real gRPC server on 1,100 loopback ports)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentproc import free_port

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 1_100
TOKEN = "scale-token"


@pytest.fixture
def farm() -> Iterator[list[int]]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_agents_farm.py"), "--healthy", str(AGENTS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports: list[int] = json.loads(proc.stdout.readline())["healthy"]
        yield ports
    finally:
        if proc.stdin:
            proc.stdin.close()  # the farm ends when its stdin does
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def fds(pid: int) -> list[int]:
    return [int(n) for n in os.listdir(f"/proc/{pid}/fd")]


def open_url(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def test_the_dashboard_serves_pages_while_polling_1100_agents(
    tmp_path: Path, farm: list[int]
) -> None:
    servers = {f"gpu{i:04d}": f"127.0.0.1:{port}" for i, port in enumerate(farm)}
    settings = tmp_path / "settings.py"
    settings.write_text(f"servers = {servers!r}\ntoken = {TOKEN!r}\ninterval = 5\ntimeout = 5\n"
                        f"history_addr = '127.0.0.1:{free_port()}'\n")
    port = free_port()
    log = tmp_path / "web.log"
    with log.open("w") as out:
        web = subprocess.Popen(
            [sys.executable, "-m", "hmonitor.web.cli", "--settings", str(settings), "--addr",
             "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    plain = urllib.request.build_opener()
    try:
        deadline = time.monotonic() + 90
        up = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                status, body, _ = open_url(plain, f"{base}/api/v1/hosts", headers=bearer)
                if status == 200:
                    up = sum(h["up"] for h in json.loads(body)["hosts"])
                    if up == AGENTS:
                        break
            time.sleep(1)
        assert up == AGENTS, f"{up} of {AGENTS} hosts up"
        assert max(fds(web.pid)) > 1023, "the test must put socket numbers past select()'s limit"

        # A person logs in through the form and opens the overview: the cluster map.
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        _, form, _ = open_url(browser, f"{base}/login")
        csrf = re.search(rb'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        fields = urllib.parse.urlencode({"token": TOKEN, "csrf_token": csrf.group(1).decode()})
        status, page, _ = open_url(browser, f"{base}/login", fields.encode())
        assert status == 200 and b'class="map"' in page
        assert page.count(b'class="tile up"') == AGENTS
        status, wire, headers = open_url(browser, f"{base}/", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("Content-Encoding") == "gzip"
        assert len(wire) < 300_000 and gzip.decompress(wire).count(b"<a class=\"tile") == AGENTS
        token = re.search(rb'data-token="([^"]+)"', page)
        assert token is not None
        status, live, _ = open_url(browser, f"{base}/live?since={token.group(1).decode()}")
        assert status == 200 and "units" in json.loads(live)

        # Many at once, while the poller keeps polling: every answer arrives.
        def fetch(path: str) -> int:
            return open_url(plain, base + path, headers=bearer)[0]

        paths = ["/", "/live", "/api/v1/alerts", "/host/gpu0007", "/?user=alice"] * 8
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            assert set(pool.map(fetch, paths)) == {200}
    finally:
        web.terminate()
        web.wait(timeout=30)
    text = log.read_text()
    assert web.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "out of range" not in text, text[-3000:]
