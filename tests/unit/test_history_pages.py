"""The history pages as served: the GPU detail page, the host page, the users page, and the
overview's hooks for sparklines and alerts; on a real SQLite history fed through the poller's
callback (``HistoryRecorder.on_round``) with synthetic rounds whose answers are known."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from builders import FAR_FUTURE, down, gpu, host_info, proc, up
from flask import Flask
from flask.testing import FlaskClient
from webkit import login, make_app

from hmonitor._pb import hm_pb2
from hmonitor.web.hoststate import HostState
from hmonitor.web.state import get_state

INTERVAL = 60.0
ROUNDS = 121  # two hours at one round a minute: 120 intervals
PAST = int(time.time() - 86400)
EVIL_USER = '<script>alert("u")</script>'
EVIL_HOST = 'x"><img src=y onerror=alert(1)>'
EVIL_CMD = "<svg onload=alert(2)>"


def _now_states() -> list[HostState]:
    """gpu01: alice alone on GPU 0 (all along); bob and carol share GPU 2 (the last hour);
    erin holds GPU 3 without computing (all along); GPU 1 is free. gpu02 is down with its last
    snapshot. A host with a hostile name runs a process of a hostile user."""
    return [
        up("gpu01", host_info("gpu01", [
            gpu(0, proc("alice", pid=11, mem_gib=30, expiration=FAR_FUTURE), util=97,
                used_gib=31),
            gpu(1),
            gpu(2, proc("bob", pid=21, mem_gib=4, expiration=PAST),
                proc("carol", pid=22, mem_gib=8, expiration=1), util=50, used_gib=12),
            gpu(3, proc("erin", pid=77, mem_gib=5), util=0, used_gib=5),
        ])),
        down("gpu02", "no answer within 3 s", last_seen=time.time() - 120,
             info=host_info("gpu02", [gpu(0, proc("dave", pid=5, mem_gib=9), util=40)])),
        replace(up(EVIL_HOST, host_info(EVIL_HOST, [
            gpu(0, proc(EVIL_USER, pid=666, mem_gib=2, basename=EVIL_CMD), util=20),
        ])), address="10.0.0.66:9203"),  # a settings key may be any text; addresses are checked
    ]


def _round_states(k: int, states: list[HostState]) -> list[HostState]:
    """The cluster in round k: bob and carol only in the last hour (rounds 61..120: each
    sample counts the minute since the host's previous one); a host "retired" (no longer in
    settings) only in the history."""
    out = []
    for h in states:
        snap = h.info
        assert snap is not None  # gpu02 is down but keeps its last snapshot
        if h.name == "gpu01" and k <= 60:
            cut = hm_pb2.HostInfo()
            cut.CopyFrom(snap)
            del cut.gpus[2].procs[:]
            snap = cut
        out.append(up(h.name, snap, at=0.0))
    out.append(up("retired", host_info("retired", [gpu(5, proc("frank", pid=9), util=70,
                                                        name="Tesla V100-SXM2-32GB")])))
    return out


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    states = _now_states()
    app = make_app(tmp_path, states, interval=INTERVAL)
    feature = get_state(app).recorder
    first = time.time() - (ROUNDS - 1) * INTERVAL - 30
    for k in range(ROUNDS):
        feature.on_round(_round_states(k, states), first + k * INTERVAL)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    login(c)
    return c


class _Page(HTMLParser):
    """What the tests check in a page: scripts, inline styles and handlers, the users table."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[str | None, str]] = []  # (src, body)
        self.inline_style = 0
        self.handlers: list[str] = []
        self.rows: dict[str, list[str]] = {}  # users table: user -> cell texts
        self._script: str | None = None
        self._in_script = False
        self._body = ""
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "style" in a or tag == "style":
            self.inline_style += 1
        self.handlers += [k for k in a if k.startswith("on")]
        if tag == "script":
            self._in_script, self._script, self._body = True, a.get("src"), ""
        if tag == "tr" and "data-user" in a:
            self._row = a["data-user"]
            self.rows[str(self._row)] = []
        if tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.scripts.append((self._script, self._body))
            self._in_script = False
        if tag == "td" and self._row is not None and self._cell is not None:
            self.rows[self._row].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self._body += data
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def gpu_url(host: str, index: int) -> str:
    return f"/host/{quote(host, safe='')}/gpu/{index}"


# --- GPU detail page ------------------------------------------------------------------------------


def test_gpu_detail_page_shows_the_gpu_now_and_the_chart_shell(client: FlaskClient) -> None:
    resp = client.get("/host/gpu01/gpu/2")
    assert resp.status_code == 200
    html = resp.text
    assert "gpu01 · GPU 2" in html and "NVIDIA A100-SXM4-80GB" in html
    assert "50%" in html and "12.0/80 GiB" in html and "40°C" in html
    # one row per process, biggest first, with its account expiry
    procs = re.findall(r"<tr><td><a [^>]*>(\w+)</a></td><td>(\d+)</td>", html)
    assert procs == [("carol", "22"), ("bob", "21")]
    assert '<em class="exp-expired">expired</em>' in html and "never" in html
    for chart in ("util", "mem", "temp", "procs"):
        assert f'id="chart-{chart}"' in html and f'id="readout-{chart}"' in html
    # CSV of each series over the window shown (24 h unless asked)
    for metric in ("util", "mem", "temp"):
        assert (f'href="/api/v1/history?host=gpu01&amp;gpu=2&amp;metric={metric}'
                f'&amp;window=86400&amp;format=csv"') in html
    assert 'data-window="24h" data-seconds="86400" aria-current="true"' in html
    page = parse(html)
    assert [src for src, _ in page.scripts][-2:] == ["/static/charts.js", "/static/gpu.js"]
    # links back
    assert 'href="/host/gpu01"' in html and 'href="/"' in html


def test_gpu_detail_window_from_the_query(client: FlaskClient) -> None:
    html = client.get("/host/gpu01/gpu/0?window=6h").text
    assert 'data-window="6h" data-seconds="21600" aria-current="true"' in html
    assert "window=21600&amp;format=csv" in html
    for w in ("1h", "24h", "10d", "30d", "1y"):
        assert f'data-window="{w}"' in html
    unknown = client.get("/host/gpu01/gpu/0?window=3w").text
    assert 'data-window="24h" data-seconds="86400" aria-current="true"' in unknown


def test_gpu_detail_of_a_down_host_shows_its_last_values(client: FlaskClient) -> None:
    html = client.get("/host/gpu02/gpu/0").text
    assert "no answer within 3 s" in html and re.search(r"last seen \d\d:\d\d", html)
    assert 'class="now stale"' in html and "dave" in html


def test_gpu_known_only_from_history_still_has_its_page(client: FlaskClient) -> None:
    resp = client.get("/host/retired/gpu/5")
    assert resp.status_code == 200
    assert "no longer in settings.py" in resp.text
    assert "Tesla V100-SXM2-32GB" in resp.text
    assert "does not report this GPU now" in resp.text
    host = client.get("/host/retired")
    assert host.status_code == 200 and 'href="/host/retired/gpu/5"' in host.text


@pytest.mark.parametrize("path", ["/host/nope/gpu/0", "/host/gpu01/gpu/9", "/host/nope",
                                  "/host/gpu01/gpu/x"])
def test_unknown_host_or_gpu_is_a_404_page(client: FlaskClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    assert "hmonitor" in resp.text


def test_history_pages_need_login(app: Flask) -> None:
    anonymous = app.test_client()
    for path in ("/host/gpu01/gpu/0", "/host/gpu01", "/users"):
        resp = anonymous.get(path)
        assert resp.status_code == 302
        assert resp.headers["Location"].startswith("/login?next=")


def test_host_page_shows_its_panel_with_links_to_each_gpu(client: FlaskClient) -> None:
    html = client.get("/host/gpu01").text
    assert 'data-k="gpu01"' in html
    for index in range(4):
        assert f'<a href="/host/gpu01/gpu/{index}">A100-SXM4-80GB</a>' in html


# --- users page -------------------------------------------------------------------------------


def test_users_page_gpu_hours_from_history(client: FlaskClient) -> None:
    rows = parse(client.get("/users").text).rows
    assert set(rows) == {"alice", "bob", "carol", "dave", "erin", "frank", EVIL_USER}
    # columns: user, GPUs now, expiry, GPU-h 1d/7d/30d, GiB-h 1d/7d/30d, idle
    alice = rows["alice"]
    assert alice[1] == "gpu01:0 30 GiB"
    assert alice[2] == "2100-01-01"
    assert alice[3:6] == ["2.0", "2.0", "2.0"]  # two hours alone on GPU 0
    assert alice[6:9] == ["60.0", "60.0", "60.0"]  # 30 GiB for two hours
    # bob and carol shared GPU 2 for the last hour: half a GPU-hour each
    assert rows["bob"][3] == "0.5" and rows["carol"][3] == "0.5"
    assert rows["bob"][6] == "4.0" and rows["carol"][6] == "8.0"
    assert rows["bob"][2] == "expired" and rows["carol"][2] == "never"
    # dave's host is down now: nothing held now, no expiry known (it comes with live
    # processes), but his two hours in the history count.
    assert rows["dave"][1] == "—" and rows["dave"][2] == "unknown"
    assert rows["dave"][3] == "2.0"
    assert rows["frank"][3] == "2.0" and rows["frank"][1] == "—"
    # erin: idle on GPU 3 for two hours (the rule wants more than 120 minutes: not yet)
    assert rows["erin"][9] == "—"


def test_users_page_flags_idle_processes(tmp_path: Path) -> None:
    states = _now_states()
    app = make_app(tmp_path, states, interval=INTERVAL, idle_minutes=60)
    feature = get_state(app).recorder
    first = time.time() - (ROUNDS - 1) * INTERVAL - 30
    for k in range(ROUNDS):
        feature.on_round(_round_states(k, states), first + k * INTERVAL)
    c = app.test_client()
    login(c)
    html = c.get("/users").text
    erin = parse(html).rows["erin"]
    assert erin[9] == "idle 2h on gpu01:3 (python, pid 77, 5.0 GiB)"
    assert "1 idle process" in html


def test_users_page_numbers_are_the_apis(client: FlaskClient) -> None:
    rows = parse(client.get("/users").text).rows
    api = client.get("/api/v1/users").get_json()
    for u in api["users"]:
        cells = rows[u["user"]]
        for i, w in enumerate(api["windows"]):
            assert float(cells[3 + i]) == pytest.approx(u["usage"][w]["gpu_hours"], abs=0.05)
            assert float(cells[6 + i]) == pytest.approx(u["usage"][w]["gpu_mem_gib_hours"],
                                                        abs=0.05)


def test_users_page_sort_keys_and_script(client: FlaskClient) -> None:
    html = client.get("/users").text
    assert re.search(r'<tr data-user="alice">.*?<td data-v="32212254720">', html, re.S)
    assert 'data-col="0" data-type="text"' in html and 'data-col="9"' in html
    assert ("/static/users.js", "") in parse(html).scripts
    assert 'aria-current="page">Users</a>' in html


def test_users_page_when_nobody_used_a_gpu(tmp_path: Path) -> None:
    c = make_app(tmp_path, [up("a", host_info("a", [gpu(0)]))]).test_client()
    login(c)
    assert "Nobody is using a GPU now" in c.get("/users").text


# --- overview hooks -----------------------------------------------------------------------------


def test_overview_links_gpus_and_offers_the_sparkline_window(client: FlaskClient) -> None:
    html = client.get("/").text
    assert '<a href="/host/gpu01/gpu/0">A100-SXM4-80GB</a>' in html
    assert '<option value="24h" selected>24 h</option>' in html
    assert 'id="alerts"' in html
    assert ("/static/sparklines.js", "") in parse(html).scripts
    chosen = client.get("/?window=10d").text
    assert '<option value="10d" selected>10 d</option>' in chosen
    assert '<option value="24h">24 h</option>' in chosen
    assert '<option value="24h" selected>' in client.get("/?window=bogus").text


# --- safety -----------------------------------------------------------------------------------


def test_hostile_names_are_escaped_everywhere(client: FlaskClient) -> None:
    pages = {
        "overview": client.get("/").text,
        "users": client.get("/users").text,
        "host": client.get(f"/host/{quote(EVIL_HOST, safe='')}").text,
        "gpu": client.get(gpu_url(EVIL_HOST, 0)).text,
    }
    for name, html in pages.items():
        assert "<script>alert" not in html, name
        assert "<img src=y" not in html, name
        assert "<svg onload" not in html, name
        page = parse(html)
        assert page.handlers == [], name
    assert "&lt;script&gt;alert(&#34;u&#34;)&lt;/script&gt;" in pages["users"]
    assert "&lt;svg onload=alert(2)&gt;" in pages["gpu"]
    assert "x&#34;&gt;&lt;img src=y onerror=alert(1)&gt; · GPU 0" in pages["gpu"]
    # The host's links lead to its pages (names quoted in URLs).
    assert client.get(gpu_url(EVIL_HOST, 0)).status_code == 200


@pytest.mark.parametrize("path", ["/", "/users", "/host/gpu01", "/host/gpu01/gpu/0",
                                  "/host/nope/gpu/0"])
def test_pages_have_no_inline_script_or_style(client: FlaskClient, path: str) -> None:
    page = parse(client.get(path).text)
    assert page.scripts, "every page loads theme.js"
    for src, body in page.scripts:
        assert src and src.startswith("/static/") and body.strip() == ""
    assert page.inline_style == 0
    assert page.handlers == []

