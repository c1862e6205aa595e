"""The pages as a user sees them: overview (first paint without JS), filters, notes, notice,
reload of servers; and the page's size and speed at 100 hosts x 8 GPUs."""

from __future__ import annotations

import gzip
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from builders import FAR_FUTURE, NOW, FakePoller, cluster, down, gpu, host_info, lost_gpu, proc, up
from flask import Flask
from flask.testing import FlaskClient
from webkit import csrf_for, login, make_app, write_settings

from hmonitor.web.hoststate import HostState
from hmonitor.web.state import get_state

SOON = int(NOW + 3 * 86400)
PAST = int(NOW - 86400)


@pytest.fixture
def states() -> list[HostState]:
    return [
        up("gpu01", host_info("gpu01", [
            gpu(0, proc("alice", expiration=FAR_FUTURE, mem_gib=30), util=97, used_gib=31),
            gpu(1),  # free
            gpu(2, proc("bob", pid=7, expiration=PAST), proc("bob", pid=8, expiration=PAST),
                util=50, used_gib=12),
            gpu(3, proc("", uid=4242, expiration=0), util=12, used_gib=3),
            gpu(4, util=3, used_gib=6),  # no processes but 7.5 % memory used: not free
        ], ip="10.0.0.1", disks=(("/", 0.45), ("/data", 0.93), ("/home", 0.89)))),
        down("gpu02", "connection refused (no agent listening on that port?)",
             last_seen=time.time() - 7 * 60),  # now, not at import: the suite is long
        up("gpu03", host_info("gpu03", [
            gpu(0, proc("carol", expiration=SOON), util=80, used_gib=40),
            lost_gpu(1, "Unknown Error (fallen off the bus)"),
            gpu(2, proc("dave", expiration=1), util=60, used_gib=20),
        ], ip="10.0.0.3")),
        up("sim01", host_info("sim01", [gpu(0, name="Simulated NVIDIA H100 80GB HBM3")],
                              ip="127.0.0.1")),
        down("gpu04", "no answer within 3 s", last_seen=None),
    ]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Logged in, as "tester"."""
    c = app.test_client()
    login(c, name="tester")
    return c


class _Panels(HTMLParser):
    """Splits the overview into host panels: name -> (css classes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: dict[str, tuple[str, str]] = {}
        self._current: str | None = None
        self._classes = ""
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article" and a.get("data-k"):
            self._current, self._classes, self._text = a["data-k"], a.get("class") or "", []

    def handle_endtag(self, tag: str) -> None:
        if tag == "article" and self._current:
            self.panels[self._current] = (self._classes, " ".join("".join(self._text).split()))
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current:
            self._text.append(data)


def panels(html: str) -> dict[str, tuple[str, str]]:
    p = _Panels()
    p.feed(html)
    return p.panels


# --- overview -----------------------------------------------------------------------------


def test_summary_counts_hosts_gpus_and_users(client: FlaskClient) -> None:
    html = client.get("/").text
    summary = " ".join(re.sub(r"<[^>]+>", " ", html.split('id="summary"')[1]
                              .split('id="updated"')[0]).split())
    # 3 up, 2 down; 9 GPUs on up hosts: 2 free (gpu01/1, sim01/0), 1 lost, 6 busy.
    assert "3 hosts up" in summary and "2 down" in summary
    assert "9 GPUs" in summary and "2 free" in summary and "6 busy" in summary
    assert "1 lost" in summary
    assert "5 active users" in summary  # alice, bob, uid 4242, carol, dave


def test_down_host_is_red_with_reason_and_last_seen(client: FlaskClient) -> None:
    p = panels(client.get("/").text)
    classes, text = p["gpu02"]
    assert "down" in classes.split()
    assert "connection refused (no agent listening on that port?)" in text
    # A fixed time, not "7 min ago": the fragment changes only when the data does.
    assert re.search(r"last seen \d\d:\d\d", text), text
    classes4, text4 = p["gpu04"]
    assert "down" in classes4.split() and "never seen" in text4
    assert "up" in p["gpu01"][0].split()


def test_gpu_rows_show_model_numbers_and_processes(client: FlaskClient) -> None:
    text = panels(client.get("/").text)["gpu01"][1]
    assert "10.0.0.1" in text and "gpu01.lab" in text
    assert "A100-SXM4-80GB" in text
    assert "97%" in text and "31.0/80 GiB" in text and "40°C" in text
    assert "alice (30 GiB, 2100-01-01)" in text


def test_expiry_texts(client: FlaskClient) -> None:
    html = client.get("/").text
    text = panels(html)["gpu01"][1] + panels(html)["gpu03"][1]
    assert "bob \u00d72 (8.0 GiB, expired)" in text  # both of bob's processes, summed
    assert '<em class="exp-expired">expired</em>' in html  # highlighted
    assert "(4.0 GiB, unknown)" in text
    assert "dave (4.0 GiB, never)" in text
    soon = time.strftime("%Y-%m-%d", time.gmtime(SOON))
    assert f'<em class="exp-soon">{soon}</em>' in html


def test_processes_of_unknown_owners_are_shown_by_uid(client: FlaskClient) -> None:
    assert "uid 4242 (4.0 GiB, unknown)" in panels(client.get("/").text)["gpu01"][1]


def test_lost_gpu_is_shown_as_lost(client: FlaskClient) -> None:
    html = client.get("/").text
    assert "GPU lost: Unknown Error (fallen off the bus)" in panels(html)["gpu03"][1]
    assert re.search(r'<tr class="lost" data-gpu="1">', html)
    # ... and the other GPUs of that host are still there.
    assert "carol" in panels(html)["gpu03"][1] and "dave" in panels(html)["gpu03"][1]


def test_free_gpus_are_marked_and_counted(client: FlaskClient) -> None:
    html = client.get("/").text
    text = panels(html)["gpu01"][1]
    assert "1/5 free" in text
    assert '<tr class="free" data-gpu="1">' in html
    assert "no processes" in text  # GPU 4: idle but its memory is in use
    help_text = html.split('class="help"')[1]
    assert "no processes" in help_text and "below 5 %" in help_text and "5 %" in help_text


def test_disks_get_a_warning_from_90_percent(client: FlaskClient) -> None:
    html = client.get("/").text
    disks = re.findall(r'<li( class="warn")? title="[^"]*"><span>([^<]+)</span>', html)
    warn = {mount for cls, mount in disks if cls}
    assert "/data" in warn
    assert "/home" not in warn and "/" not in warn


def test_text_from_agents_is_escaped(tmp_path: Path) -> None:
    evil = '"><img src=x onerror=alert(1)>'
    states = [up("x", host_info("x", [
        gpu(0, proc(evil, uid=1), name=evil),
        lost_gpu(1, evil),
    ], disks=((evil, 0.5),)))]
    c = make_app(tmp_path, states).test_client()
    login(c)
    html = c.get("/").text
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 4


def test_simulated_host_is_labelled(client: FlaskClient) -> None:
    p = panels(client.get("/").text)
    assert "simulated" in p["sim01"][1]
    assert "simulated" not in p["gpu01"][1]


def test_first_paint_has_the_numbers_as_text_for_browsers_without_js(
    client: FlaskClient,
) -> None:
    html = client.get("/").text
    assert '<meter max="100" value="97"></meter> 97%' in html
    assert 'src="/static/live.js" defer' in html


# --- filters, server-side ---------------------------------------------------------------


def test_filter_by_user(client: FlaskClient) -> None:
    html = client.get("/?user=bob").text
    p = panels(html)
    assert list(p) == ["gpu01"]
    assert "bob \u00d72" in p["gpu01"][1]
    assert "alice" not in p["gpu01"][1], "only the GPUs the user runs on"
    assert '<span class="hit">bob \u00d72' in html, "the user's processes are highlighted"
    assert 'name="user" value="bob"' in html
    assert "1 of 5 hosts" in html


def test_filter_by_user_finds_unknown_owners_by_uid(client: FlaskClient) -> None:
    assert list(panels(client.get("/?user=uid+4242").text)) == ["gpu01"]


def test_filter_by_host_name_or_ip(client: FlaskClient) -> None:
    assert list(panels(client.get("/?host=GPU0").text)) == ["gpu01", "gpu02", "gpu03", "gpu04"]
    assert list(panels(client.get("/?host=10.0.0.3").text)) == ["gpu03"]


def test_free_gpus_only(client: FlaskClient) -> None:
    html = client.get("/?free=1").text
    p = panels(html)
    assert list(p) == ["gpu01", "sim01"]
    assert "alice" not in p["gpu01"][1]
    assert 'name="free" value="1" checked' in html


def test_filters_combine_and_say_when_nothing_matches(client: FlaskClient) -> None:
    html = client.get("/?user=alice&free=1").text
    assert panels(html) == {}
    assert "No host matches the filters." in html


# --- notes and notice ---------------------------------------------------------------------


def test_notes_show_beside_their_host_escaped(app: Flask, client: FlaskClient) -> None:
    get_state(app).notes.put("alice", "gpu01", "<script>alert(1)</script>")
    html = client.get("/").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "alice <script>alert(1)</script>" in panels(html)["gpu01"][1]
    notes_page = client.get("/notes").text
    assert "<script>alert(1)</script>" not in notes_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in notes_page


def test_add_edit_and_remove_a_note(app: Flask, client: FlaskClient) -> None:
    token = csrf_for(client)
    resp = client.post("/notes", data={"user": "alice", "host": "gpu01",
                                       "note": "until Friday", "csrf_token": token},
                       follow_redirects=True)
    assert "Saved the note for alice@gpu01" in resp.text
    assert "until Friday" in resp.text
    note = get_state(app).notes.get("alice", "gpu01")
    assert note is not None and note.updated_by == "tester"

    form = client.get("/notes?user=alice&host=gpu01").text
    assert "Edit the note" in form and ">until Friday</textarea>" in form
    client.post("/notes", data={"user": "alice", "host": "gpu01", "note": "until Monday",
                                "csrf_token": token})
    assert "until Monday" in panels(client.get("/").text)["gpu01"][1]

    resp = client.post("/notes/delete", data={"user": "alice", "host": "gpu01",
                                              "csrf_token": token}, follow_redirects=True)
    assert "Removed the note for alice@gpu01" in resp.text
    assert get_state(app).notes.notes() == []


def test_an_empty_note_is_refused_with_a_message(client: FlaskClient) -> None:
    resp = client.post("/notes", data={"user": "alice", "host": "gpu01", "note": " ",
                                       "csrf_token": csrf_for(client)}, follow_redirects=True)
    assert "Note not saved: note is empty." in resp.text


def test_notice_is_shown_on_every_page_escaped(app: Flask, client: FlaskClient) -> None:
    resp = client.post("/notice", data={"notice": "Down on <b>Monday</b>",
                                        "csrf_token": csrf_for(client)}, follow_redirects=True)
    assert "Notice saved." in resp.text
    for path in ("/", "/notes", "/?free=1"):
        html = client.get(path).text
        assert '<span id="notice-text">Down on &lt;b&gt;Monday&lt;/b&gt;</span>' in html
    client.post("/notice", data={"notice": "", "csrf_token": csrf_for(client)})
    assert 'id="notice" hidden' in client.get("/").text


def test_notice_form_address_leads_to_the_form(client: FlaskClient) -> None:
    resp = client.get("/notice")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/notes#notice-form")


# --- reload of servers --------------------------------------------------------------------


def test_reload_button_hands_the_edited_servers_to_the_poller(
    app: Flask, client: FlaskClient
) -> None:
    state = get_state(app)
    write_settings(state.settings.path.parent, {"gpu01": "gpu01:9203", "new": "10.0.0.9:9203"})
    resp = client.post("/reload", data={"csrf_token": csrf_for(client)}, follow_redirects=True)
    assert "Reloaded servers: 2 hosts; added: new; removed: gpu02, gpu03, sim01, gpu04" in resp.text
    poller = state.poller
    assert isinstance(poller, FakePoller)
    assert poller.servers[-1] == {"gpu01": "gpu01:9203", "new": "10.0.0.9:9203"}


def test_reload_of_a_broken_settings_file_keeps_the_hosts(
    app: Flask, client: FlaskClient
) -> None:
    state = get_state(app)
    state.settings.path.write_text("servers = {'a': 'nope'}\ntoken = 'x'\n")
    resp = client.post("/reload", data={"csrf_token": csrf_for(client)}, follow_redirects=True)
    assert "settings.py not reloaded" in resp.text and "bad address" in resp.text
    assert isinstance(state.poller, FakePoller) and state.poller.servers == []


# --- size and speed ---------------------------------------------------------------------------


@pytest.fixture
def big(tmp_path: Path) -> FlaskClient:
    c = make_app(tmp_path, cluster(100, 8, 4)).test_client()
    login(c)
    return c


def test_big_cluster_overview_stays_small_and_fast(big: FlaskClient) -> None:
    # 100 hosts: the cluster map by default, every host's panel on request.
    cluster_map = big.get("/").text
    assert cluster_map.count('class="tile up"') == 100 and "<article" not in cluster_map
    assert len(cluster_map) <= 100_000
    big.get("/?view=panels")
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        resp = big.get("/?view=panels")
        best = min(best, time.perf_counter() - start)
    assert resp.status_code == 200
    assert resp.text.count("<article") == 100
    assert resp.text.count("data-gpu=") == 800
    assert len(resp.data) <= 500_000
    # The target is 60 ms (bench/dashboard.py measures it); here only a loose bound, as CI
    # machines are shared and noisy.
    assert best < 0.5


def test_pages_and_api_are_gzipped_on_the_wire(big: FlaskClient) -> None:
    for path in ("/", "/api/v1/hosts"):
        resp = big.get(path, headers={"Accept-Encoding": "gzip"})
        assert resp.headers["Content-Encoding"] == "gzip"
        plain = gzip.decompress(resp.data)
        assert len(resp.data) < len(plain) / 5
