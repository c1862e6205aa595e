"""How the overview looks at the widths people use: from 1280 to 1920 px no column is clipped
and every process's account expiry can be read whole; on a phone the page still works.

Busy hosts with long user names, several users per GPU and every kind of expiry, through the
real app and poller, in Chromium. Screenshots go to artifacts/ (look-<width>.png)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from browserkit import ARTIFACTS, BROWSER_MARKS, Dashboard, Watch, log_in, run_dashboard
from builders import FAR_FUTURE, H200, gpu, host_info, lost_gpu, proc
from playwright.sync_api import expect

from hmonitor._pb import hm_pb2

pytestmark = BROWSER_MARKS

USERS = ["christopher.montgomery", "eva", "guo-xiaoming", "fatima.al-rashid"]


def busy(name: str) -> hm_pb2.HostInfo:
    soon = int(time.time()) + 5 * 86400
    expiries = [FAR_FUTURE, soon, 0, 1, int(time.time()) - 86400]
    gpus = [gpu(g, *(proc(USERS[(g + p) % 4], pid=1000 + 10 * g + p, mem_gib=9.5 + p * 7,
                          expiration=expiries[(g + p) % 5]) for p in range(g % 4 + 1)),
                util=(g * 13) % 100, total_gib=141, name=H200)
            for g in range(7)]
    gpus.append(lost_gpu(7, "Unknown Error (GPU has fallen off the bus)"))
    return host_info(name, gpus, disks=(("/", 0.4), ("/scratch/long/mount/point", 0.93)))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    hosts = {f"gpu-node-{i:02d}": busy(f"gpu-node-{i:02d}") for i in range(3)}
    with run_dashboard(tmp_path_factory.mktemp("look"), hosts, ["gpu-node-99"],
                       "interval = 2\ntimeout = 1\n") as dash:
        yield dash


CLIPPED = """() => {
  const out = [];
  const clipped = (el) => el.scrollWidth > el.clientWidth + 1;
  for (const cell of document.querySelectorAll('#hosts .gpus :is(th, td)')) {
    const style = getComputedStyle(cell);
    if (style.display === 'none') continue;
    // Model names may be cut (the cell's title has the full name): only this column.
    if (cell.cellIndex === 1) continue;
    if (clipped(cell)) out.push('cell ' + cell.cellIndex + ': ' + cell.textContent.trim());
  }
  for (const chip of document.querySelectorAll('#hosts .gpus td:nth-child(7) > span')) {
    const cell = chip.parentElement.getBoundingClientRect();
    const box = chip.getBoundingClientRect();
    if (clipped(chip) || box.right > cell.right + 1) out.push('chip: ' + chip.textContent);
  }
  for (const table of document.querySelectorAll('#hosts table.gpus')) {
    const panel = table.closest('article').getBoundingClientRect();
    if (table.getBoundingClientRect().right > panel.right + 1) out.push('table wider than panel');
  }
  return out;
}"""


@pytest.mark.parametrize("width", [1280, 1440, 1600, 1920])
def test_no_column_is_clipped_and_every_expiry_reads_whole(
    browser: Any, dashboard: Dashboard, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 1000})
    try:
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        watch = Watch(pg)
        log_in(pg, dashboard.url, ready="#hosts article")
        expect(pg.locator("#hosts a.spark")).to_have_count(3 * 7)  # the sparkline column is in
        assert pg.evaluate(CLIPPED) == []
        chips = pg.locator("#hosts .gpus td:nth-child(7) > span")
        texts = [str(t) for t in chips.all_text_contents()]
        assert len(texts) == 3 * sum(g % 4 + 1 for g in range(7))
        for t in texts:  # each reads whole: "user (memory, expiry)"
            assert t.rstrip().endswith(")") and t.count(", ") == 1, t
        assert any("christopher.montgomery (" in t for t in texts)
        spark = pg.locator("#hosts .gpus td:nth-child(8)").first.bounding_box()
        assert spark is not None and spark["width"] >= 70
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"look-{width}.png"), full_page=True)
        assert watch.problems == []
    finally:
        context.close()


def test_a_phone_shows_every_host_and_scrolls_a_wide_table_inside_its_panel(
    browser: Any, dashboard: Dashboard
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    try:
        pg = context.new_page()
        watch = Watch(pg)
        log_in(pg, dashboard.url, ready="#hosts article")
        expect(pg.locator("#hosts > article")).to_have_count(4)
        # The page itself does not scroll sideways: a panel takes the width of the screen.
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390 + 1
        ARTIFACTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "look-phone.png"), full_page=True)
        assert watch.problems == []
    finally:
        context.close()
