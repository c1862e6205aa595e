"""The load generator of bench/load.py: N concurrent HTTP clients against a running hmonitor-web.

    python bench/_load_clients.py CONFIG.json RESULTS.json

Runs in its own process, so that its CPU is not charged to the server being measured. One thread
per client, each with one keep-alive connection (plain ``http.client``), as a browser tab or a
script holds one:

* even-numbered clients are browser sessions: they log in once through the real form (GET /login
  for the form's CSRF token, POST /login, keep the session cookie), then go round the overview,
  the hosts JSON, the sparklines, a host page, the users page and the alerts, thinking ~1 s
  between requests;
* odd-numbered clients are API scripts with ``Authorization: Bearer``: hosts, one host, a GPU's
  history, users and notes, and now and then a note written with POST.

Every request is recorded (start time, latency, endpoint, ok); anything but the expected status
(200; 302 away from /login after a login), an exception or a timeout is an error, kept with its
URL. The results file is JSON: ``requests`` ([start, seconds, endpoint, ok] lists), ``errors``,
``reconnects`` (times a closed keep-alive connection was reopened) and ``polls`` (how fresh
the hosts' data was in a sample of /api/v1/hosts answers).
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
# How often a client checks a body beyond its status and content type (decompress, parse): every
# request would charge too much CPU to this process and skew the latencies it measures.
_DEEP_CHECK_EVERY = 20
_MAX_KEPT_ERRORS = 500  # all are counted; the details of the first ones are kept
_NOTE_USERS = [f"student{i:02d}" for i in range(1, 11)]
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    token: str
    clients: int
    start_at: float  # Unix time the first client starts
    duration: float  # seconds from start_at until clients stop issuing requests
    think: float  # mean think time between a client's requests, seconds
    stagger: float  # client i starts at start_at + i * stagger / clients
    timeout: float  # per request (socket timeout)
    hosts: list[str]  # every configured host name
    note_hosts: list[str]  # hosts that notes are written for (a bounded set of keys)
    seed: int


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def text(self) -> bytes:
        if self.headers.get("Content-Encoding") == "gzip":
            return gzip.decompress(self.body)
        return self.body


@dataclass
class Results:
    """Shared by all client threads; appends under one lock (a few hundred per second)."""

    requests: list[tuple[float, float, str, bool]] = field(default_factory=list)
    errors: list[tuple[float, int, str, str, str]] = field(default_factory=list)
    error_count: int = 0
    reconnects: list[float] = field(default_factory=list)
    # From /api/v1/hosts answers: [time, hosts up, median and max age of the up hosts' data].
    polls: list[tuple[float, int, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, start: float, seconds: float, endpoint: str, ok: bool) -> None:
        with self.lock:
            self.requests.append((start, seconds, endpoint, ok))

    def error(self, when: float, client: int, method: str, url: str, what: str) -> None:
        with self.lock:
            self.error_count += 1
            if len(self.errors) < _MAX_KEPT_ERRORS:
                self.errors.append((when, client, method, url, what))

    def reconnect(self, when: float) -> None:
        with self.lock:
            self.reconnects.append(when)

    def poll(self, when: float, up: int, median_age: float, max_age: float) -> None:
        with self.lock:
            self.polls.append((when, up, median_age, max_age))


def browser_steps(host: str) -> list[tuple[str, str, str]]:
    """One round of a browser session: (method, path, endpoint label)."""
    name = urllib.parse.quote(host)
    return [
        ("GET", "/", "GET /"),
        ("GET", "/api/v1/hosts", "GET /api/v1/hosts"),
        ("GET", "/api/v1/sparklines?window=24h", "GET /api/v1/sparklines?window=24h"),
        ("GET", f"/host/{name}", "GET /host/<name>"),
        ("GET", "/users", "GET /users"),
        ("GET", "/api/v1/alerts", "GET /api/v1/alerts"),
    ]


def script_steps(host: str, *, write: bool) -> list[tuple[str, str, str]]:
    """One round of an API script; `write` adds a note written with POST."""
    name = urllib.parse.quote(host)
    steps = [
        ("GET", "/api/v1/hosts", "GET /api/v1/hosts"),
        ("GET", f"/api/v1/hosts/{name}", "GET /api/v1/hosts/<name>"),
        ("GET", f"/api/v1/history?host={name}&gpu=0&window=1h", "GET /api/v1/history?window=1h"),
        ("GET", "/api/v1/users", "GET /api/v1/users"),
        ("GET", "/api/v1/notes", "GET /api/v1/notes"),
    ]
    if write:
        steps.append(("POST", "/api/v1/notes", "POST /api/v1/notes"))
    return steps


class Client:
    """One user or script: one keep-alive connection, its cookies, its request loop."""

    def __init__(self, cid: int, cfg: Config, results: Results) -> None:
        self.cid = cid
        self.cfg = cfg
        self.results = results
        self.rng = random.Random(cfg.seed * 1000 + cid)
        self.conn: http.client.HTTPConnection | None = None
        self.reused = False  # the connection has already served a request
        self.cookies: dict[str, str] = {}
        self.bearer = cid % 2 == 1
        self.count = 0
        self.end = cfg.start_at + cfg.duration

    # --- one request ----------------------------------------------------------------------

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.reused = False

    def _exchange(self, method: str, path: str, body: bytes | None,
                  headers: dict[str, str]) -> Response:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.cfg.host, self.cfg.port,
                                                   timeout=self.cfg.timeout)
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._drop()
        else:
            self.reused = True
        return Response(resp.status, resp.headers, data)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept-Encoding": "gzip", "User-Agent": "hmonitor-bench-load"}
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _keep_cookies(self, resp: Response) -> None:
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, _, value = header.split(";", 1)[0].partition("=")
            attributes = header.lower()
            if not value or "max-age=0" in attributes or "1970" in attributes:
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value.strip()

    def request(self, method: str, path: str, endpoint: str, *, body: bytes | None = None,
                content_type: str | None = None, expect: int = 200) -> tuple[Response | None, bool]:
        """Sends one request and records it; returns the response (None if none came) and
        whether it was as expected."""
        headers = self._headers(content_type)
        start = time.time()
        clock = time.perf_counter()
        resp: Response | None = None
        problem = ""
        try:
            try:
                resp = self._exchange(method, path, body, headers)
            except _RETRYABLE:
                # The server may close an idle keep-alive connection just as we reuse it; a
                # browser retries on a fresh one, and so do we (counted, not an error). A
                # fresh connection failing the same way is an error.
                if not self.reused:
                    raise
                self._drop()
                self.results.reconnect(start)
                resp = self._exchange(method, path, body, headers)
        except (OSError, http.client.HTTPException) as err:  # timeouts are OSErrors
            self._drop()
            problem = f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - clock
        if resp is not None:
            self._keep_cookies(resp)
            problem = self._check(resp, expect, path)
            # A sample of the hosts answers, parsed off the clock (a fifth: parsing costs).
            if not problem and path == "/api/v1/hosts" and self.rng.random() < 0.2:
                try:
                    self._observe_polling(resp)
                except (OSError, ValueError, KeyError, TypeError) as err:
                    problem = f"unreadable hosts JSON: {type(err).__name__}: {err}"
        self.results.add(start, seconds, endpoint, not problem)
        self.count += 1
        if problem:
            self.results.error(start, self.cid, method, path, problem)
        return resp, not problem

    def _observe_polling(self, resp: Response) -> None:
        """How old the up hosts' data is in this answer: it stays under the polling interval
        plus a round's time while the dashboard's poller keeps up (the round time itself is
        not served over HTTP)."""
        now = time.time()
        hosts = json.loads(resp.text())["hosts"]
        ages = sorted(now - h["polled_at"] for h in hosts if h["up"] and h["polled_at"])
        if ages:
            self.results.poll(now, len(ages), ages[len(ages) // 2], ages[-1])
        else:
            self.results.poll(now, 0, float("nan"), float("nan"))

    def _check(self, resp: Response, expect: int, path: str) -> str:
        if resp.status != expect:
            return f"HTTP {resp.status} (expected {expect}): {resp.text()[:120]!r}"
        if expect == 302:
            location = resp.headers.get("Location", "")
            return f"redirected to {location!r}" if "/login" in location else ""
        ctype = resp.headers.get("Content-Type", "")
        api = path.startswith("/api/")
        if ("application/json" if api else "text/html") not in ctype:
            return f"unexpected Content-Type {ctype!r}"
        if self.count % _DEEP_CHECK_EVERY == 0:
            try:
                text = resp.text()
                if api:
                    json.loads(text)
                elif b"</html>" not in text:
                    return "not a complete page"
                elif path != "/login" and b'name="token"' in text:
                    return "the login form instead of the page"
            except (OSError, ValueError) as err:
                return f"unreadable body: {type(err).__name__}: {err}"
        return ""

    # --- behaviour ------------------------------------------------------------------------

    def think(self) -> bool:
        """Waits ~think seconds (0.5-1.5x, so clients drift apart); False once the run is over."""
        left = self.end - time.time()
        if left <= 0:
            return False
        time.sleep(min(left, self.cfg.think * self.rng.uniform(0.5, 1.5)))
        return time.time() < self.end

    def host(self) -> str:
        return self.rng.choice(self.cfg.hosts)

    def login(self) -> bool:
        """The real form, once; on 429 (the login limit) waits as told and tries again."""
        while time.time() < self.end:
            form, ok = self.request("GET", "/login", "GET /login")
            found = _CSRF.search(form.text()) if form is not None and ok else None
            if form is not None and ok and found is None:
                self.results.error(time.time(), self.cid, "GET", "/login",
                                   "no csrf_token in the login form")
            if found is not None:
                body = urllib.parse.urlencode({
                    "token": self.cfg.token, "csrf_token": found.group(1).decode(),
                    "name": f"load{self.cid:03d}", "next": "/",
                }).encode()
                resp, ok = self.request("POST", "/login", "POST /login", body=body,
                                        content_type="application/x-www-form-urlencoded",
                                        expect=302)
                if ok:
                    return True
                if resp is not None and resp.status == 429:
                    # A correct login was limited (counted as an error): wait as told, retry.
                    after = resp.headers.get("Retry-After", "")
                    wait = float(after) if after.isdigit() else 60.0
                    time.sleep(max(0.0, min(wait, self.end - time.time())))
                    continue
            if not self.think():
                return False
        return False

    def step(self, method: str, path: str, endpoint: str) -> None:
        body = None
        if method == "POST":  # a note on a bounded set of keys, so the notes file stays small
            body = json.dumps({
                "user": self.rng.choice(_NOTE_USERS),
                "host": self.rng.choice(self.cfg.note_hosts),
                "note": f"load test note from client {self.cid} at {time.time():.0f}",
            }).encode()
        self.request(method, path, endpoint, body=body,
                     content_type="application/json" if body else None)

    def run_browser(self) -> None:
        if not self.login():
            return
        while True:
            for step in browser_steps(self.host()):
                self.step(*step)
                if not self.think():
                    return

    def run_script(self) -> None:
        cycle = 0
        while True:
            write = cycle % 5 == self.cid % 5  # a write every fifth round, clients out of step
            for step in script_steps(self.host(), write=write):
                self.step(*step)
                if not self.think():
                    return
            cycle += 1

    def run(self) -> None:
        delay = self.cfg.start_at + self.cid * self.cfg.stagger / self.cfg.clients - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            if self.bearer:
                self.run_script()
            else:
                self.run_browser()
        except Exception as err:  # noqa: BLE001 - a bug here must count, not end a thread quietly
            self.results.error(time.time(), self.cid, "-", "-",
                               f"client crashed: {type(err).__name__}: {err}")
        finally:
            self._drop()


def probe(cfg: Config, repeat: int) -> Results:
    """Every endpoint `repeat` times, one request at a time (a browser session and a script):
    the server's own time per endpoint, without the queueing of the load."""
    results = Results()
    browser, script = Client(0, cfg, results), Client(1, cfg, results)
    try:
        if not browser.login():
            return results
        steps = ([(browser, s) for s in browser_steps(cfg.hosts[0])]
                 + [(script, s) for s in script_steps(cfg.hosts[0], write=True)])
        for client, step in steps:
            for _ in range(repeat):
                client.step(*step)
    finally:
        browser._drop()
        script._drop()
    return results


def main() -> None:
    config_path, results_path = sys.argv[1:3]
    raw: dict[str, Any] = json.loads(Path(config_path).read_text())
    cfg = Config(**raw)
    results = Results()
    threads = [
        threading.Thread(target=Client(i, cfg, results).run, name=f"client-{i}", daemon=True)
        for i in range(cfg.clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        # Past the end only a request in flight remains, bounded by its timeout.
        t.join(max(0.0, cfg.start_at + cfg.stagger + cfg.duration + cfg.timeout + 5 - time.time()))
    stuck = [t.name for t in threads if t.is_alive()]
    for name in stuck:
        results.error(time.time(), -1, "-", "-", f"{name} did not finish")
    with results.lock:
        out = {
            "requests": results.requests,
            "errors": results.errors,
            "error_count": results.error_count,
            "reconnects": results.reconnects,
            "polls": results.polls,
        }
    Path(results_path).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
