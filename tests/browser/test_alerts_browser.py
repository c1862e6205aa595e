"""The Alerts page in a real headless Chromium, as a person on call uses it: what fires, silence
one alert for an hour, acknowledge another, ask for an e-mail when GPUs free up and take it back.

As in test_dashboard_browser.py, with what tests/browserkit.py shares (its ``browser`` and
``page`` fixtures included): an in-test gRPC agent and a closed port (a down host), the real app
with its real poller and notifier (a round listener) served by waitress, Debian's Chromium driven
by Playwright's sync API. E-mail goes to a real SMTP server (aiosmtpd, tests/notifykit.py), with
the outbox running as in production; nobody is an admin, so nothing should reach it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from browserkit import BROWSER_MARKS, Dashboard, Watch, run_dashboard, text
from builders import FAR_FUTURE, gpu, host_info, proc
from flask import Flask
from notifykit import SmtpServer, wait_for
from playwright.sync_api import expect

from hmonitor.web.state import get_state

pytestmark = BROWSER_MARKS

HOT = "gpu_hot:gpu-a:0"
DOWN = "host_down:gpu-down"
HOT_TEXT = "gpu-a GPU 0 is at 95 °C (alert at 90 °C)"
DOWN_TEXT = "gpu-down is down: connection refused"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Dashboard]:
    """gpu-a: GPU 0 busy and at 95 °C, GPU 1 free (one free GPU: a subscription for two stays
    open); gpu-down: a closed port, an alert at once. Yields once both alerts fire."""
    snapshot = host_info("gpu-a", [
        gpu(0, proc("alice", pid=1201, mem_gib=60, expiration=FAR_FUTURE), util=97, temp=95),
        gpu(1, temp=38),
    ])
    settings = (f"interval = 0.5\ntimeout = 1\nalert_host_down_minutes = 0\n"
                f"smtp_host = {smtp.host!r}\nsmtp_port = {smtp.port}\nsmtp_security = 'none'\n"
                "mail_from = 'hmonitor@lab.example'\nuser_email = '{user}@lab.example'\n")

    def start_outbox(app: Flask) -> None:
        outbox = get_state(app).outbox
        assert outbox is not None
        outbox.start()

    with run_dashboard(tmp_path_factory.mktemp("alerts"), {"gpu-a": snapshot}, ["gpu-down"],
                       settings, prepare=start_outbox) as dash:
        notifier = get_state(dash.app).notifier
        assert notifier is not None
        wait_for(lambda: {a.key for a in notifier.store.alerts(time.time())} >= {HOT, DOWN}, 10,
                 "the first round's alerts")
        yield dash


def row(pg: Any, table: str, key: str) -> Any:
    return pg.locator(f"#{table}-table tbody tr[data-id='{key}']")


def flash(pg: Any) -> str:
    return text(pg, ".flash")


def test_silences_one_alert_and_acknowledges_the_other(
    page: tuple[Any, Watch], dashboard: Dashboard
) -> None:
    pg, watch = page
    pg.goto(dashboard.url + "/alerts")
    current = pg.locator("nav a[aria-current='page']")
    expect(current).to_have_text("Alerts")
    expect(pg.locator("#firing-table tbody tr")).to_have_count(2)
    assert HOT_TEXT in text(pg, f"#firing-table tr[data-id='{HOT}']")
    assert DOWN_TEXT in text(pg, f"#firing-table tr[data-id='{DOWN}']")
    expect(pg.get_by_role("heading", name="Firing (2)")).to_be_visible()
    expect(pg.get_by_text("Nothing is silenced.")).to_be_visible()

    hot = row(pg, "firing", HOT)
    hot.get_by_label("Silence for").select_option(label="1 hour")
    hot.get_by_role("button", name="Silence").click()
    expect(pg.locator(".flash")).to_have_text(f"Silenced {HOT}.")
    expect(pg.get_by_role("heading", name="Silenced (1)")).to_be_visible()
    silenced = row(pg, "silenced", HOT)
    expect(silenced).to_be_visible()
    expect(silenced).to_contain_text(HOT_TEXT)
    told = re.search(r"silenced until (\d{4}-\d\d-\d\d \d\d:\d\d) by browser",
                     text(pg, f"#silenced-table tr[data-id='{HOT}']"))
    assert told is not None, text(pg, "#silenced-table")
    an_hour = [time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 3600 + d))
               for d in (-60, 0)]
    assert told.group(1) in an_hour
    expect(silenced.get_by_role("button", name="Unsilence")).to_be_visible()
    expect(pg.locator("#firing-table tbody tr")).to_have_count(1)

    down = row(pg, "firing", DOWN)
    down.get_by_role("button", name="Acknowledge").click()
    expect(pg.locator(".flash")).to_have_text(
        f"Acknowledged {DOWN}: no more reminders until it ends.")
    down = row(pg, "firing", DOWN)
    expect(down).to_contain_text("acknowledged by browser")
    expect(down.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(down.get_by_role("button", name="Silence")).to_be_visible()  # still firing
    expect(pg.get_by_role("heading", name="Firing (1)")).to_be_visible()
    assert watch.problems == []


def test_subscribes_to_two_gpus_and_removes_it(
    page: tuple[Any, Watch], dashboard: Dashboard, smtp: SmtpServer
) -> None:
    pg, watch = page
    pg.goto(dashboard.url + "/alerts")
    form = pg.locator("#subscribe-form")
    # The address settings.py's user_email gives the name logged in with.
    expect(form.get_by_label("E-mail")).to_have_value("browser@lab.example")
    expect(pg.locator("#subscriptions-table")).to_have_count(0)
    form.get_by_label("GPUs").fill("2")
    form.get_by_label("GiB free each").fill("40")
    form.get_by_label("Host").select_option(label="any host")
    form.get_by_label("E-mail").fill("carol@lab.example")
    form.get_by_role("button", name="Subscribe").click()
    expect(pg.locator(".flash")).to_have_text(
        "You will get one e-mail at carol@lab.example when 2 GPU(s) with 40 GiB free each are "
        "free on any host.")
    rows = pg.locator("#subscriptions-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("2 \u00d7 40.0 GiB on any host")  # a times sign
    expect(rows.first).to_contain_text("carol@lab.example")
    expect(rows.first).to_contain_text("by browser")

    time.sleep(1.2)  # rounds go by: one free GPU is not two, so it stays
    pg.reload()
    expect(rows).to_have_count(1)
    rows.first.get_by_role("button", name="Remove").click()
    expect(pg.locator(".flash")).to_have_text("Subscription removed.")
    expect(pg.locator("#subscriptions-table")).to_have_count(0)
    assert smtp.mails == []
    assert watch.problems == []
