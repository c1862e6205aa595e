"""The history UI in a real headless Chromium: sparklines and alerts on the overview, the GPU
detail page's charts, the users page; and the overview's sparklines at 100 hosts x 8 GPUs.

As in test_dashboard_browser.py, with what tests/browserkit.py shares (its ``browser`` and
``page`` fixtures included): in-test gRPC agents (one closed port for a down host), the real app
with its real poller served by waitress on a free loopback port, Debian's Chromium driven by
Playwright's sync API. Before the first round, a day of synthetic rounds at the polling interval
(2 min) go through the same callback the poller calls (``HistoryRecorder.on_round``), so the
store, its rollups and the idle rule work as in production. Screenshots:
``artifacts/history-overview.png``, ``artifacts/gpu-detail.png``, ``artifacts/users.png``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browserkit import (
    ARTIFACTS,
    BROWSER_MARKS,
    TOKEN,
    Dashboard,
    Watch,
    log_in,
    run_dashboard,
    serve,
    text,
)
from builders import H200, FakePoller, cluster, down, gpu, host_info, proc, up
from flask import Flask
from playwright.sync_api import expect

from hmonitor._pb import hm_pb2
from hmonitor.web.app import create_app
from hmonitor.web.settings import load_settings
from hmonitor.web.state import get_state

INTERVAL = 120
ROUNDS = 24 * 30  # a day of rounds, the last one an interval before the poller's first
DOWN = range(450, 495)  # gpu-b does not answer in these rounds: a gap in its charts

pytestmark = BROWSER_MARKS


# --- the cluster and its history ----------------------------------------------------------------


def warm(util: float) -> int:
    """A GPU's temperature at ``util`` %: the charts' temperature line follows utilization."""
    return round(33 + util * 0.4)


def snapshots(k: int) -> dict[str, hm_pb2.HostInfo]:
    """The cluster in round k (0 .. ROUNDS - 1; later rounds look like the last one).

    gpu-a: alice trains on GPU 0 all along (memory growing); bob joins GPU 1 after three hours
    and carol shares it for the last hour; erin holds 5 GiB on GPU 2 without computing (an idle
    process); GPU 3 is free. gpu-b: dave on GPU 0 (the host is down for a while); GPU 1 free.
    """
    k = min(k, ROUNDS - 1)
    wave = math.sin(k / 9) * 0.5 + 0.5
    g1: list[hm_pb2.ProcInfo] = []
    if k >= 300:
        g1.append(proc("bob", pid=1302, mem_gib=18 + 6 * wave))
    if k >= ROUNDS - 30:
        g1.append(proc("carol", pid=1310, mem_gib=12))
    a0, a1, b0 = 70 + 28 * wave, (35 + 30 * (1 - wave)) if g1 else 0, 60 + 35 * wave
    return {
        "gpu-a": host_info("gpu-a", [
            gpu(0, proc("alice", pid=1201, mem_gib=36 + 26 * k / ROUNDS, util=90),
                util=round(a0), temp=warm(a0)),
            gpu(1, *g1, util=round(a1), temp=warm(a1)),
            gpu(2, proc("erin", pid=1501, mem_gib=5, util=0), temp=warm(0)),
            gpu(3, temp=warm(0)),
        ], ip="10.20.0.11", disks=(("/", 0.45),)),
        "gpu-b": host_info("gpu-b", [
            gpu(0, proc("dave", pid=2101, mem_gib=96 + 20 * wave, util=80), util=round(b0),
                temp=warm(b0), total_gib=141, name=H200),
            gpu(1, temp=warm(0), total_gib=141, name=H200),
        ], ip="10.20.0.12", disks=(("/scratch", 0.95),)),
    }


def seed(app: Flask, first: float) -> None:
    feature = get_state(app).recorder
    for k in range(ROUNDS):
        t = first + k * INTERVAL
        states = []
        for name, info in snapshots(k).items():
            if name == "gpu-b" and k in DOWN:
                states.append(down(name, "no answer within 1 s", last_seen=t, at=t))
            else:
                states.append(up(name, info, at=t))
        feature.on_round(states, t)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    first = time.time() - ROUNDS * INTERVAL
    with run_dashboard(tmp_path_factory.mktemp("history"), snapshots(ROUNDS), ["gpu-down"],
                       f"interval = {INTERVAL}\ntimeout = 1\n",
                       lambda app: seed(app, first)) as dash:
        yield dash


def test_overview_sparklines_alerts_and_idle_badge(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    row = "article[data-k='gpu-a'] tr[data-gpu='0']"
    line = pg.locator(f"{row} a.spark svg path.su")
    expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+L"))
    assert (pg.locator(f"{row} a.spark").get_attribute("href") == "/host/gpu-a/gpu/0")
    assert re.fullmatch(r"util avg \d+ %, mem max \d+ %, last 24 h",
                        str(pg.locator(f"{row} a.spark svg title").text_content()))
    assert (pg.locator(f"{row} a.spark svg path.sm").get_attribute("d") or "").endswith("Z")
    assert text(pg, "article[data-k='gpu-a'] thead th:nth-child(8)") == "last 24 h"
    # Every GPU row that is not lost has one; gpu-b's gap is a break in its path.
    expect(pg.locator("#hosts a.spark")).to_have_count(6)
    gap = pg.locator("article[data-k='gpu-b'] tr[data-gpu='0'] path.su").get_attribute("d")
    assert (gap or "").count("M") >= 2

    # Alerts: the down host, the full disk, erin's idle process (with a badge on her chip).
    strip = pg.locator("#alerts")
    expect(strip).to_contain_text("erin holds 5.0 GiB on gpu-a GPU 2")
    assert "gpu-down is down" in text(pg, "#alerts")
    assert "gpu-b:/scratch is 95% full" in text(pg, "#alerts")
    chip = pg.locator("article[data-k='gpu-a'] tr[data-gpu='2'] td:nth-child(7) > span")
    expect(chip.locator(".hogb")).to_have_text(re.compile(r"^idle 2[34]h$"))
    assert pg.locator("#hosts .hogb").count() == 1

    # Another window: fetched at once, kept in the URL and for the next visit.
    pg.select_option("#spark-window", "1h")
    expect(pg.locator("article[data-k='gpu-a'] thead th:nth-child(8)")).to_have_text("last 1 h")
    expect(pg.locator(f"{row} a.spark svg title")).to_contain_text("last 1 h")
    assert "window=1h" in pg.url
    pg.fill("input[name=user]", "alice")  # the filters keep the window in the URL
    expect(pg.locator("#hosts article")).to_have_count(1)
    assert "window=1h" in pg.url and "user=alice" in pg.url
    expect(pg.locator(f"{row} a.spark svg title")).to_contain_text("last 1 h")  # re-attached
    pg.goto(pg.url.split("?")[0])
    assert pg.input_value("#spark-window") == "1h", "remembered in localStorage"
    pg.select_option("#spark-window", "24h")
    expect(pg.locator(f"{row} a.spark svg title")).to_contain_text("last 24 h")
    assert "window=" not in pg.url

    expect(pg.locator("#updated")).to_have_text(re.compile("^live"))
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "history-overview.png"), full_page=True)
    assert watch.problems == []


def test_gpu_detail_page_charts_hover_and_csv(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    pg.click("article[data-k='gpu-a'] tr[data-gpu='1'] a.spark")
    pg.wait_for_url(re.compile(r"/host/gpu-a/gpu/1$"))
    assert "gpu-a · GPU 1" in text(pg, "#gpu-detail h1")
    assert "NVIDIA A100-SXM4-80GB" in text(pg, "#gpu-detail")
    assert "bob" in text(pg, "#gpu-detail table") and "carol" in text(pg, "#gpu-detail table")

    for chart in ("util", "mem", "temp", "procs"):
        expect(pg.locator(f"#chart-{chart} svg path.line").first).to_have_attribute(
            "d", re.compile(r"^M[\d.]+ [\d.]+L"))
    assert pg.locator("#chart-mem path.line").count() == 2  # used, and total dashed
    expect(pg.locator("#legend-procs span")).to_have_text(["bob", "carol"])
    assert pg.locator("#chart-util .xaxis text").count() >= 4
    assert re.fullmatch(r"\d+ %", str(pg.locator("#chart-util .ylab").last.text_content()))

    pg.click("#windows a[data-window='6h']")
    assert "window=6h" in pg.url
    csv = pg.locator("#csv-util").get_attribute("href") or ""
    assert "window=21600" in csv and "format=csv" in csv
    expect(pg.locator("#chart-status")).to_have_text(re.compile("^updated"))

    # Hovering moves a cursor and reads the values under it.
    box = pg.locator("#chart-util svg").bounding_box()
    assert box is not None
    pg.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.4)
    readout = pg.locator("#readout-util")
    expect(readout).to_have_text(re.compile(r"^([A-Z][a-z]{2} \d+ )?\d\d:\d\d · \d+ %$"))
    assert pg.locator("#chart-util .cursor").get_attribute("visibility") == "visible"
    pg.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] + 200)
    expect(readout).to_have_text(re.compile(r"^latest "))
    mem = pg.locator("#chart-mem svg").bounding_box()
    assert mem is not None
    pg.mouse.move(mem["x"] + mem["width"] * 0.9, mem["y"] + mem["height"] * 0.5)
    expect(pg.locator("#readout-mem")).to_have_text(re.compile(r"used [\d.]+ GiB · total 80 GiB$"))
    procs = pg.locator("#chart-procs svg").bounding_box()
    assert procs is not None
    pg.mouse.move(procs["x"] + procs["width"] * 0.97, procs["y"] + procs["height"] * 0.5)
    expect(pg.locator("#readout-procs")).to_have_text(re.compile(r"bob .* carol 12 GiB .*total"))

    got = pg.request.get(dashboard.url + csv)
    assert got.headers["content-type"].startswith("text/csv")
    lines = got.text().strip().splitlines()
    assert lines[0] == "time,util (%)" and len(lines) > 150  # 6 h of 2-min rounds
    by_user = pg.request.get(dashboard.url + (pg.locator("#csv-procs").get_attribute("href") or ""))
    assert by_user.text().splitlines()[0] == "time,bob (bytes),carol (bytes)"

    pg.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.5)
    pg.screenshot(path=str(ARTIFACTS / "gpu-detail.png"), full_page=True)
    pg.click("nav.crumbs >> text=gpu-a")
    pg.wait_for_url(re.compile(r"/host/gpu-a$"))
    assert pg.locator("article[data-k='gpu-a'] tbody tr").count() == 4
    assert watch.problems == []


def test_users_page_gpu_hours_and_sorting(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    pg.click("nav >> text=Users")
    pg.wait_for_url(re.compile(r"/users$"))
    alice = pg.locator("#users-table tr[data-user='alice']")
    # A day alone on a GPU, give or take a round.
    assert alice.locator("td").nth(3).text_content() == "24.0"
    assert "gpu-a:0" in str(alice.locator("td").nth(1).text_content())
    erin = pg.locator("#users-table tr[data-user='erin']")
    assert re.search(r"idle 2[34]h on gpu-a:2 \(python, pid 1501, 5\.0 GiB\)",
                     str(erin.text_content()))
    users = pg.locator("#users-table tbody tr")
    pg.click("#users-table th[data-col='0'] button")
    expect(users.first).to_have_attribute("data-user", "alice")
    assert [users.nth(i).get_attribute("data-user") for i in range(users.count())] == [
        "alice", "bob", "carol", "dave", "erin"]
    pg.click("#users-table th[data-col='3'] button")  # GPU-hours, 1 day: most first
    expect(users.first).to_have_attribute("data-user", "alice")
    assert pg.locator("#users-table th[data-col='3']").get_attribute("aria-sort") == "descending"
    pg.screenshot(path=str(ARTIFACTS / "users.png"), full_page=True)
    assert watch.problems == []


# --- 800 sparklines ----------------------------------------------------------------------------


def test_sparklines_are_drawn_for_the_panels_on_screen_only(
    browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "settings.py").write_text(
        f"servers = {{'gpu000': 'x:1'}}\ntoken = {TOKEN!r}\ninterval = {INTERVAL}\n")
    now = time.time()
    rounds = 24  # the last 48 minutes: every sparkline has a few points
    app = create_app(load_settings(tmp_path / "settings.py"),
                     poller=FakePoller(cluster(at=now, round_no=0)), start_poller=False)
    feature = get_state(app).recorder
    for k in range(rounds):
        t = now - (rounds - k) * INTERVAL
        feature.on_round(cluster(at=t, round_no=k), t)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        with serve(app) as url:
            pg = context.new_page()
            pg.set_default_timeout(30_000)
            asked: list[str] = []
            pg.on("request", lambda r: asked.append(r.url) if "/sparklines" in r.url else None)
            log_in(pg, url, ready=".tile")  # 100 hosts: the cluster map first
            assert pg.locator("#hosts a.spark").count() == 0, "the map has no sparklines"
            pg.goto(url + "/?view=panels")
            expect(pg.locator("#hosts > article")).to_have_count(100)
            first = pg.locator("article[data-k='gpu000'] path.su[d^='M']")
            expect(first).to_have_count(8)
            drawn = pg.locator("#hosts path.su[d^='M']").count()
            assert 8 <= drawn <= 8 * 12, f"{drawn} sparklines drawn: only the panels in view"
            hosts_asked = sum(u.count("host=") for u in asked)
            assert hosts_asked <= 12, asked
            draw = pg.evaluate("performance.getEntriesByName('hmonitor:sparklines')"
                               ".map(e => e.duration)")
            total = pg.evaluate("performance.getEntriesByName('hmonitor:sparklines-total')"
                                ".map(e => e.duration)")
            # Scrolled to the end: the last panels get theirs.
            pg.locator("article[data-k='gpu099']").scroll_into_view_if_needed()
            expect(pg.locator("article[data-k='gpu099'] path.su[d^='M']")).to_have_count(8)
            # A refresh that swapped a panel puts its sparklines back: timed here by hand.
            attach = pg.evaluate(
                "() => { const t0 = performance.now();"
                " document.getElementById('hosts').dispatchEvent("
                "new CustomEvent('hmonitor:rendered'));"
                " return performance.now() - t0; }")
            with capsys.disabled():
                print(f"\nsparklines of the panels in view ({drawn}): DOM work {draw[0]:.1f} ms, "
                      f"request to drawn {total[0]:.1f} ms, hosts asked {hosts_asked}; "
                      f"re-attach after a refresh {attach:.1f} ms")
            # Loose bounds: shared CI machines are slow; the numbers above are the measure.
            assert draw[0] < 500 and attach < 200
    finally:
        context.close()
        get_state(app).close()
