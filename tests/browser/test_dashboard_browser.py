"""The dashboard in a real headless Chromium, against real gRPC agents over loopback.

Two in-test agents (``grpc.server`` with a HostMonitor servicer) and one closed port (a down
host); the real app with its real poller, served by waitress on a free loopback port. Chromium
is Debian's (``apt-get install chromium``), driven by Playwright's sync API. The last test saves
a full-page screenshot to ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from browserkit import ARTIFACTS, BROWSER_MARKS, Dashboard, Watch, run_dashboard, text
from builders import FAR_FUTURE, H200, gpu, host_info, lost_gpu, proc
from playwright.sync_api import expect

from hmonitor._pb import hm_pb2

pytestmark = BROWSER_MARKS


def snapshot_a() -> hm_pb2.HostInfo:
    now = int(time.time())
    return host_info("gpu-a", [
        gpu(0, proc("alice", pid=1201, mem_gib=61.5, expiration=FAR_FUTURE), util=97,
            used_gib=62, temp=71, total_gib=80),
        gpu(1, proc("bob", pid=1302, mem_gib=18.0, expiration=now - 86400),
            proc("bob", pid=1303, mem_gib=4.0, expiration=now - 86400), util=64, used_gib=22.5,
            temp=66),
        gpu(2, util=0, used_gib=0.4, temp=34),
        gpu(3, proc("", pid=1404, mem_gib=7.5, expiration=0, uid=31337), util=23, used_gib=8,
            temp=51),
    ], ip="10.20.0.11", disks=(("/", 0.42), ("/data", 0.94)))


def snapshot_b() -> hm_pb2.HostInfo:
    now = int(time.time())
    return host_info("gpu-b", [
        gpu(0, proc("carol", pid=2101, mem_gib=70.2, expiration=now + 5 * 86400), util=88,
            used_gib=71, total_gib=141, name=H200, temp=62),
        gpu(1, proc("dave", pid=2202, mem_gib=33.0, expiration=1), util=45, used_gib=33.5,
            total_gib=141, name=H200, temp=57),
        lost_gpu(2, "Unknown Error (GPU has fallen off the bus)"),
        gpu(3, util=1, used_gib=0.5, total_gib=141, name=H200, temp=35),
    ], ip="10.20.0.12", disks=(("/", 0.61), ("/scratch", 0.73)))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """gpu-a and gpu-b answering snapshot_a() and snapshot_b(); gpu-down a closed port.
    (``page``, a logged-in page on it, and ``browser`` come from browserkit.)"""
    with run_dashboard(tmp_path_factory.mktemp("dashboard"),
                       {"gpu-a": snapshot_a(), "gpu-b": snapshot_b()}, ["gpu-down"],
                       "interval = 1\ntimeout = 1\n") as dash:
        yield dash


def test_sees_the_hosts_and_the_down_host_in_red(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    a = text(pg, "article[data-k='gpu-a']")
    assert "10.20.0.11" in a and "gpu-a.lab" in a
    assert "alice (62 GiB, 2100-01-01)" in a
    assert "bob \u00d72 (22 GiB, expired)" in a
    assert "uid 31337 (7.5 GiB, unknown)" in a
    b = text(pg, "article[data-k='gpu-b']")
    assert "GPU lost: Unknown Error" in b and "dave (33 GiB, never)" in b

    down = pg.locator("article[data-k='gpu-down']")
    assert "down" in (down.get_attribute("class") or "").split()
    assert "connection refused" in text(pg, "article[data-k='gpu-down'] .err")
    assert "never seen" in text(pg, "article[data-k='gpu-down'] .err")
    red = down.evaluate("el => getComputedStyle(el.querySelector('h2')).color")
    r, g, bl = (int(x) for x in re.findall(r"\d+", red)[:3])
    assert r > 150 and g < 100 and bl < 100, f"down host name should be red, is {red}"
    summary = text(pg, "#summary")
    assert "2 hosts up" in summary and "1 down" in summary and "1 lost" in summary
    assert watch.problems == []


def served_text(pg: Any, dashboard: Dashboard, host: str) -> str:
    """The text of a host's panel as the server renders it, spaces removed."""
    server_html = pg.request.get(dashboard.url + "/").text()
    served = re.search(rf'<article class="host up" data-k="{host}">.*?</article>',
                       server_html, re.S)
    assert served is not None
    words = re.sub(r"<[^>]+>", " ", served.group(0))
    return "".join(words.replace("&lt;", "<").replace("&gt;", ">").split())


def live_text(pg: Any, host: str) -> str:
    """The same panel in the live page, less what sparklines.js adds to the rows (the
    sparkline column)."""
    live = pg.locator(f"article[data-k='{host}']").evaluate(
        "el => { const c = el.cloneNode(true);"
        " c.querySelectorAll('.gpus :is(th, td):nth-child(8)')"
        ".forEach(n => n.replaceChildren());"
        " return c.textContent; }")
    return "".join(str(live).split())


def markers(pg: Any) -> dict[str, str]:
    """What a person checks on gpu-a and gpu-b, read off the page as shown."""
    return {
        "unknown owner": text(pg, "article[data-k='gpu-a'] tr[data-gpu='3'] td:nth-child(7)"),
        "expired": text(pg, "article[data-k='gpu-a'] tr[data-gpu='1'] .exp-expired"),
        "never": text(pg, "article[data-k='gpu-b'] tr[data-gpu='1'] .exp-never"),
        "free": text(pg, "article[data-k='gpu-a'] tr.free[data-gpu='2'] td:nth-child(7)"),
        "lost": text(pg, "article[data-k='gpu-b'] tr.lost[data-gpu='2']"),
        "free count": text(pg, "article[data-k='gpu-a'] .freec"),
    }


def test_display_rules_read_the_same_before_and_after_a_live_refresh(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    expected = {
        "unknown owner": "uid 31337 (7.5 GiB, unknown)",
        "expired": "expired",
        "never": "never",
        "free": "free",
        "lost": "2GPU lost: Unknown Error (GPU has fallen off the bus)",  # index, error
        "free count": "1/4 free",
    }
    assert markers(pg) == expected
    # Something else changes on both hosts: their panels are swapped in by the live refresh.
    a, b = snapshot_a(), snapshot_b()
    a.gpus[0].utilization, b.gpus[0].utilization = 41, 42
    dashboard.agents["gpu-a"].info, dashboard.agents["gpu-b"].info = a, b
    try:
        expect(pg.locator("article[data-k='gpu-a'] tr[data-gpu='0']")).to_contain_text(
            "41%", timeout=20_000)
        expect(pg.locator("article[data-k='gpu-b'] tr[data-gpu='0']")).to_contain_text(
            "42%", timeout=20_000)
        assert markers(pg) == expected
    finally:
        dashboard.agents["gpu-a"].info, dashboard.agents["gpu-b"].info = snapshot_a(), snapshot_b()
    assert watch.problems == []


def test_live_refresh_swaps_in_the_servers_panel_and_follows_the_agents(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    # The test before restored the agents' snapshots: within a round or two, the page shows
    # what the server serves (the page may have loaded just before that round).
    for host in ("gpu-a", "gpu-b"):
        deadline = time.monotonic() + 20
        while (shown := live_text(pg, host)) != (served := served_text(pg, dashboard, host)):
            assert time.monotonic() < deadline, (shown, served)
            pg.wait_for_timeout(250)

    # A new job on gpu-a appears without a reload.
    pg.evaluate("window.__marker = 1")
    info = snapshot_a()
    info.gpus[2].procs.append(proc("zoe", pid=1999, mem_gib=12.0, expiration=FAR_FUTURE))
    info.gpus[2].utilization = 77
    dashboard.agents["gpu-a"].info = info
    expect(pg.locator("article[data-k='gpu-a']")).to_contain_text("zoe", timeout=20_000)
    assert pg.evaluate("window.__marker") == 1, "the page must not have reloaded"
    assert live_text(pg, "gpu-a") == served_text(pg, dashboard, "gpu-a")
    dashboard.agents["gpu-a"].info = snapshot_a()
    assert watch.problems == []


def test_an_agent_sending_too_much_is_shown_cut_and_marked_truncated(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    flood = snapshot_b()
    flood.gpus[0].name = "NVIDIA " + "H" * 5_000_000
    flood.gpus[1].procs.extend(proc(f"u{i}", pid=5000 + i, mem_gib=0.1, expiration=FAR_FUTURE)
                               for i in range(1000))
    dashboard.agents["gpu-b"].info = flood
    try:
        panel = pg.locator("article[data-k='gpu-b']")
        expect(panel.locator(".tag.cut")).to_have_text("truncated", timeout=20_000)
        said = text(pg, "article[data-k='gpu-b'] p.cut")
        assert "GPU name: 5,000,007 characters, cut to 128" in said
        assert "GPU 1: 1,001 processes, the 256 using most memory shown" in said
        assert live_text(pg, "gpu-b") == served_text(pg, dashboard, "gpu-b")
        assert len(pg.request.get(dashboard.url + "/").body()) < 200_000
    finally:
        dashboard.agents["gpu-b"].info = snapshot_b()
    expect(pg.locator("article[data-k='gpu-b'] .tag.cut")).to_have_count(0, timeout=20_000)
    assert watch.problems == []


def test_the_cluster_map_shows_a_tile_per_host_and_the_panel_on_hover(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    pg.select_option("#view", "map")
    expect(pg.locator("#hosts.map > a.tile")).to_have_count(3)
    assert "view=map" in pg.url
    a = pg.locator(".tile[data-k='gpu-a']")
    assert text(pg, ".tile[data-k='gpu-a'] .fc") == "1/4"
    cells = a.locator(".cells i")
    assert [cells.nth(i).get_attribute("class") for i in range(4)] == [
        "u9", "u6 x", "free", "u2"]  # 97 %, 64 % with an expired owner, free, 23 %
    assert "down" in (pg.locator(".tile[data-k='gpu-down']").get_attribute("class") or "")
    a.hover()
    expect(pg.locator(".card article[data-k='gpu-a']")).to_be_visible()
    assert "alice (62 GiB, 2100-01-01)" in text(pg, ".card")
    # A change on the host reaches its tile with the next refresh.
    info = snapshot_a()
    info.gpus[2].procs.append(proc("zoe", pid=1999, mem_gib=12.0, expiration=FAR_FUTURE))
    info.gpus[2].utilization = 77
    dashboard.agents["gpu-a"].info = info
    try:
        expect(cells.nth(2)).to_have_class("u7", timeout=20_000)
        expect(pg.locator(".tile[data-k='gpu-a'] .fc")).to_have_text("0/4")
    finally:
        dashboard.agents["gpu-a"].info = snapshot_a()
    pg.select_option("#view", "auto")
    expect(pg.locator("#hosts.panels > article")).to_have_count(3)
    assert watch.problems == []


def test_filters_by_user_in_place_and_in_the_url(page: tuple[Any, Watch]) -> None:
    pg, watch = page
    pg.fill("input[name=user]", "carol")
    expect(pg.locator("#hosts article")).to_have_count(1)
    assert pg.locator("#hosts article").get_attribute("data-k") == "gpu-b"
    assert pg.locator("article[data-k='gpu-b'] tbody tr").count() == 1
    expect(pg.locator("#hosts .hit")).to_have_text(re.compile(r"^carol \("))
    assert "user=carol" in pg.url
    # The filter survives a reload (and is then applied by the server).
    pg.reload()
    pg.wait_for_selector("article[data-k='gpu-b']")
    assert pg.input_value("input[name=user]") == "carol"
    assert pg.locator("#hosts article").count() == 1
    pg.fill("input[name=user]", "")
    pg.check("input[name=free]")
    expect(pg.locator("#hosts article")).to_have_count(2)
    assert "free=1" in pg.url and "user=" not in pg.url
    assert pg.locator("#hosts tbody tr").count() == 2  # gpu-a/2 and gpu-b/3
    assert watch.problems == []


def test_notes_notice_theme_and_screenshot(page: tuple[Any, Watch], dashboard: Dashboard) -> None:
    pg, watch = page
    pg.click("nav >> text=Notes")
    pg.fill("input[name=user]", "alice")
    pg.fill("input[name=host]", "gpu-a")
    pg.fill("textarea[name=note]", "fine-tuning until Friday, please leave GPU 0 <3")
    pg.click("text=Save note")
    assert "Saved the note for alice@gpu-a" in text(pg, ".flashes")
    assert "by browser" in text(pg, "#notes-table")

    pg.fill("textarea[name=notice]", "gpu-down is in for repair until Monday.")
    pg.click("text=Save notice")
    assert text(pg, "#notice-text") == "gpu-down is in for repair until Monday."

    pg.click("nav >> text=Overview")
    pg.wait_for_selector("article[data-k='gpu-a'] .notes")
    assert "alice fine-tuning until Friday, please leave GPU 0 <3" in text(
        pg, "article[data-k='gpu-a'] .notes")
    assert "repair until Monday" in text(pg, "#notice-text")
    expect(pg.locator("#updated")).to_have_text(re.compile("^live"))

    toggle = pg.locator("#theme-toggle")
    toggle.click()
    assert pg.evaluate("document.documentElement.dataset.theme") == "light"
    toggle.click()
    assert pg.evaluate("document.documentElement.dataset.theme") == "dark"
    pg.reload()
    assert pg.evaluate("document.documentElement.dataset.theme") == "dark", "kept in storage"
    toggle = pg.locator("#theme-toggle")
    toggle.click()  # back to the system's (light) theme for the screenshot
    assert pg.evaluate("document.documentElement.dataset.theme") is None

    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert watch.problems == []
