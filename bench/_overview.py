"""The overview at cluster scale, as a person gets it: the real ``hmonitor-web`` (waitress)
polling real agents, and Debian's Chromium (Playwright) loading the page and staying on it.

For bench/dashboard.py: ``run_overview(servers)`` starts the dashboard on the agents named in
``servers``, waits until every host is up, then measures

* over HTTP, as served: response time, raw and gzip bytes of the overview (the cluster map), the
  same hosts as panels (what the page used to be), ``/api/v1/hosts`` (what the page pulled
  every 5 s), a ``/live`` refresh, and Prometheus's scrape of ``/metrics`` (the first after a
  polling round, which makes the text, and the rest of the round);
* in Chromium: first paint, the bytes on the wire until the page is idle, every live refresh's
  bytes and time, and every long task (> 50 ms) Chromium reports while the page loads and
  refreshes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "bench-overview-token"
_RENDER_SECONDS = re.compile(rb"^hmonitor_dashboard_metrics_render_seconds ([0-9.e+-]+)$", re.M)
CHROMIUM = Path("/usr/bin/chromium")
# Set up before the page's own scripts: long tasks and paints are only seen by an observer.
_OBSERVE = (
    "window.__longTasks = [];"
    "new PerformanceObserver(l => l.getEntries().forEach(e => window.__longTasks.push("
    "[e.startTime, e.duration]))).observe({type: 'longtask', buffered: true});"
)


@dataclass
class Response:
    path: str
    median_ms: float
    raw: int
    gz: int


@dataclass
class Browser:
    first_paint_ms: float
    first_contentful_ms: float
    loaded_ms: float  # DOMContentLoaded: the page parsed, its scripts run
    wire_bytes: int  # everything the page fetched until then, as sent (compressed)
    refresh_bytes: list[int] = field(default_factory=list)  # each /live answer, as sent
    refresh_ms: list[float] = field(default_factory=list)  # request to swapped in
    long_tasks: list[float] = field(default_factory=list)  # durations, ms
    tiles: int = 0


@dataclass
class Overview:
    hosts: int
    responses: list[Response]
    browser: Browser | None
    note: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


@contextlib.contextmanager
def dashboard(servers: dict[str, str], interval: float) -> Iterator[str]:
    """The real hmonitor-web on ``servers``; yields its URL once every host is up."""
    with tempfile.TemporaryDirectory(prefix="hm-bench-overview-") as tmp:
        folder = Path(tmp)
        (folder / "settings.py").write_text(
            f"servers = {servers!r}\ntoken = {TOKEN!r}\ninterval = {interval}\ntimeout = 3\n"
            f"history_addr = '127.0.0.1:{_free_port()}'\n")
        port = _free_port()
        log = (folder / "web.log").open("w")
        web = subprocess.Popen(
            [sys.executable, "-m", "hmonitor.web.cli", "--settings", str(folder / "settings.py"),
             "--addr", "127.0.0.1", "--port", str(port), "--data-dir", str(folder / "data")],
            stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(OSError):
                    status, body, _ = _get(f"{url}/api/v1/hosts",
                                           {"Authorization": f"Bearer {TOKEN}"})
                    if status == 200 and all(h["up"] for h in json.loads(body)["hosts"]):
                        break
                if time.monotonic() > deadline or web.poll() is not None:
                    raise RuntimeError("the dashboard did not see every host up:\n"
                                       + (folder / "web.log").read_text()[-2000:])
                time.sleep(0.5)
            yield url
        finally:
            web.terminate()
            try:
                web.wait(30)
            except subprocess.TimeoutExpired:
                web.kill()
            log.close()


def _response(url: str, path: str, requests: int) -> Response:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    times, gz, raw = [], 0, 0
    for i in range(requests + 2):
        start = time.perf_counter()
        status, body, got = _get(url + path, headers)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
        gz = len(body)
        raw = len(gzip.decompress(body)) if got.get("Content-Encoding") == "gzip" else gz
        if i >= 2:  # the first ones render what changed since the last round, and warm up
            times.append(elapsed * 1000)
    return Response(path, statistics.median(times), raw, gz)


def _quiet_refresh(url: str, requests: int) -> Response:
    """A refresh with nothing new: what each browser's refresh costs between rounds."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    times, raw, gz = [], 0, 0
    for _ in range(requests):
        _, body, got = _get(url + "/live", headers)
        plain = gzip.decompress(body) if got.get("Content-Encoding") == "gzip" else body
        token = urllib.parse.quote(json.loads(plain)["token"])
        start = time.perf_counter()
        _, body, got = _get(f"{url}/live?since={token}", headers)
        times.append((time.perf_counter() - start) * 1000)
        gz = len(body)
        raw = len(gzip.decompress(body)) if got.get("Content-Encoding") == "gzip" else gz
    return Response("/live, nothing new", statistics.median(times), raw, gz)


def _metrics_per_round(url: str, interval: float, rounds: int) -> list[Response]:
    """/metrics as Prometheus gets it (gzip), the first scrape after each polling round, and
    how long the dashboard took to make each round's text (its
    ``hmonitor_dashboard_metrics_render_seconds``): the work a scrape waited for when the text
    was made on request, done after each round while scrapers come."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    times, made, raw, gz = [], [], 0, 0
    for _ in range(rounds):
        time.sleep(interval + 0.2)  # a new round has landed: the text is stale
        start = time.perf_counter()
        status, body, got = _get(url + "/metrics", headers)
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise RuntimeError(f"/metrics: HTTP {status}")
        text = gzip.decompress(body) if got.get("Content-Encoding") == "gzip" else body
        gz, raw = len(body), len(text)
        found = _RENDER_SECONDS.search(text)
        if found:
            made.append(float(found.group(1)) * 1000)
    return [Response("/metrics, first of a round", statistics.median(times), raw, gz),
            Response("/metrics, made after a round",
                     statistics.median(made) if made else float("nan"), raw, gz)]


def _browse(url: str, refreshes: int) -> Browser:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only when Chromium is

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            context = chromium.new_context(viewport={"width": 1920, "height": 1080})
            page = context.new_page()
            page.set_default_timeout(60_000)
            # Log in first, then measure a fresh load of the overview with the session.
            page.goto(url + "/login")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#hosts")
            page.add_init_script(_OBSERVE)
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            urls: dict[str, str] = {}
            sizes: dict[str, int] = {}
            cdp.on("Network.requestWillBeSent",
                   lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
            cdp.on("Network.loadingFinished",
                   lambda e: sizes.__setitem__(e["requestId"], int(e["encodedDataLength"])))
            page.goto(url + "/", wait_until="networkidle")
            wire = sum(sizes.values())
            paints = {p["name"]: p["startTime"] for p in page.evaluate(
                "performance.getEntriesByType('paint').map(p => ({name: p.name,"
                " startTime: p.startTime}))")}
            nav: dict[str, Any] = page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return {loaded: n.domContentLoadedEventEnd}; })()")
            tiles = page.locator("#hosts > .tile, #hosts > article").count()
            before = set(sizes)
            # Stay on the page while the dashboard polls: the refreshes it makes on its own.
            # (Polled with evaluate: the page's CSP forbids the eval wait_for_function needs.)
            deadline = time.monotonic() + (refreshes + 2) * 10
            while page.evaluate("performance.getEntriesByName('hmonitor:refresh').length") \
                    <= refreshes and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            page.wait_for_timeout(500)
            live = [sizes[k] for k in sizes if k not in before and "/live" in urls.get(k, "")]
            measures = page.evaluate(
                "performance.getEntriesByName('hmonitor:refresh-total').map(e => e.duration)")
            long_tasks = [d for _, d in page.evaluate("window.__longTasks")]
            return Browser(
                first_paint_ms=paints.get("first-paint", float("nan")),
                first_contentful_ms=paints.get("first-contentful-paint", float("nan")),
                loaded_ms=float(nav["loaded"]), wire_bytes=wire, refresh_bytes=live,
                refresh_ms=[float(m) for m in measures[1:]],  # [0]: the one at load
                long_tasks=[float(d) for d in long_tasks], tiles=tiles)
        finally:
            chromium.close()


def run_overview(servers: dict[str, str], *, interval: float = 5.0, requests: int = 5,
                 refreshes: int = 3) -> Overview:
    with dashboard(servers, interval) as url:
        responses = [_response(url, path, requests) for path in
                     ("/", "/?view=panels", "/api/v1/hosts")]
        responses.append(_quiet_refresh(url, requests))
        responses.append(_response(url, "/metrics", requests))
        responses += _metrics_per_round(url, interval, 3)
        browser = _browse(url, refreshes) if CHROMIUM.exists() else None
        note = "" if browser else f"no Chromium at {CHROMIUM}: browser rows skipped"
        return Overview(len(servers), responses, browser, note)
