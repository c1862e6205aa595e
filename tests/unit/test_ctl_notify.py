"""hmonitor-ctl's alerts, silences, acknowledgements and subscriptions against the real app
(its notifier and SQLite, a FakePoller) served over HTTP by waitress, as the dashboard serves
them: alert ids with ':' and '/' (``disk_full:gpu-a:/``) reach the ``<path:key>`` routes whole.
The real dashboard over real agents and a real SMTP server is tests/integration/test_ctl.py."""

from __future__ import annotations

import io
import json
import os
import pwd
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from builders import down, gpu, host_info, up
from flask import Flask
from webkit import TOKEN, make_app

from hmonitor.ctl.cli import main
from hmonitor.ctl.render import Style, alerts_lines, subscriptions_lines
from hmonitor.web.state import get_state

GIB = 1 << 30
NOW = 1_800_000_000.0
ME = pwd.getpwuid(os.getuid()).pw_name
HOT = "gpu_hot:gpu-a:0"
ROOT_FULL = "disk_full:gpu-a:/"
DATA_FULL = "disk_full:gpu-a:/data"
DOWN = "host_down:gpu-down"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Dash:
    url: str
    app: Flask
    home: Path

    def ctl(self, *argv: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        env = {"HOME": str(self.home), "HMONITOR_URL": self.url, "HMONITOR_TOKEN": TOKEN}
        code = main(list(argv), env=env, out=out, err=err)
        return Run(code, out.getvalue(), err.getvalue())


def failed(run: Run, code: int) -> str:
    """The one line of a failing command: its exit code, nothing on stdout."""
    assert (run.code, run.out) == (code, ""), run
    assert run.err.count("\n") == 1 and run.err.startswith("hmonitor-ctl: "), run.err
    return run.err.strip().removeprefix("hmonitor-ctl: ")


def fine(run: Run) -> str:
    assert (run.code, run.err) == (0, ""), run
    return run.out


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """``app`` over HTTP by waitress, as hmonitor-web serves it; its loop stopped before its
    sockets close (closing them under a running select() fails in its thread)."""
    import waitress  # noqa: PLC0415 - the dashboard's server; only here

    http = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            http.asyncore.loop(timeout=0.05, map=http._map, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.effective_port}"
    finally:
        stop.set()
        thread.join()
        http.close()
        http.task_dispatcher.shutdown()


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    """gpu-a (GPU 0 at 95 °C, / and /data full) and gpu-down, after one round of the notifier;
    e-mail set up (nothing is sent: the outbox is not started)."""
    folder = tmp_path_factory.mktemp("ctl-notify")
    states = [up("gpu-a", host_info("gpu-a", [gpu(0, temp=95), gpu(1)],
                                    disks=(("/", 0.95), ("/data", 0.96)))),
              down("gpu-down")]
    app = make_app(folder, states, smtp_host="127.0.0.1", smtp_port=2525,
                   smtp_security="none", mail_from="hmonitor@lab.example",
                   user_email="{user}@lab.example", alert_host_down_minutes=0)
    state = get_state(app)
    for listener in state.round_listeners:
        listener(states, time.time())
    try:
        with served(app) as url:
            yield Dash(url, app, folder / "home")
    finally:
        state.close()


def alerts(dash: Dash) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in dash.ctl("alerts", "--json").json()["alerts"]}


def test_alerts_lists_the_firing_ones_with_their_ids(dash: Dash) -> None:
    assert set(alerts(dash)) == {HOT, ROOT_FULL, DATA_FULL, DOWN}
    lines = fine(dash.ctl("alerts")).splitlines()
    assert lines[0].split() == ["ID", "STATE", "SINCE", "ALERT"]
    row = next(line for line in lines if line.startswith(HOT + " "))
    assert row.split()[1] == "firing" and "gpu-a GPU 0 is at 95 °C (alert at 90 °C)" in row


def test_silence_and_unsilence_ids_with_slashes(dash: Dash) -> None:
    for key in (ROOT_FULL, DATA_FULL):
        answer = dash.ctl("silence", key, "--minutes", "90", "--json")
        assert fine(answer) and answer.json()["silenced"] == key
        until = alerts(dash)[key]["silenced_until"]
        assert 89 * 60 < until - time.time() <= 90 * 60
    text = fine(dash.ctl("silence", ROOT_FULL))  # again: for an hour from now
    assert text.startswith(f"silenced {ROOT_FULL} until ")
    row = next(line for line in fine(dash.ctl("alerts")).splitlines()
               if line.startswith(ROOT_FULL + " "))
    assert row.split()[1] == "silenced" and "silenced until" in row and "by API 127.0.0.1" in row
    assert fine(dash.ctl("unsilence", DATA_FULL)) == f"{DATA_FULL} is no longer silenced\n"
    assert alerts(dash)[DATA_FULL]["silenced_until"] is None
    assert alerts(dash)[ROOT_FULL]["silenced_until"] is not None
    assert failed(dash.ctl("unsilence", DATA_FULL), 5) == f"{DATA_FULL!r} is not silenced"
    fine(dash.ctl("unsilence", ROOT_FULL))


def test_silence_warns_about_an_id_that_is_not_firing(dash: Dash) -> None:
    odd = "user_gpus:a b?c#d%e/ü//x"  # every character a URL treats specially
    run = dash.ctl("silence", odd, "--json", "--minutes", "5")
    assert run.code == 0 and run.json()["silenced"] == odd
    assert run.err == (f"hmonitor-ctl: warning: {odd} is not firing now; silenced for when it "
                       "fires (hmonitor-ctl alerts lists the ids)\n")
    assert dash.ctl("unsilence", odd, "--json").json() == {"unsilenced": odd}
    assert failed(dash.ctl("silence", "nonsense"), 2) == (
        "the dashboard says: 'nonsense' is not an alert id (such as host_down:gpu01)")
    assert failed(dash.ctl("silence", DOWN, "--minutes", str(31 * 24 * 60)), 2) == (
        "the dashboard says: minutes must be more than 0 and at most 43200")
    assert failed(dash.ctl("silence", " "), 2) == (
        "an alert id is empty (hmonitor-ctl alerts lists them)")


def test_ack_a_firing_alert_and_not_one_that_is_not(dash: Dash) -> None:
    assert fine(dash.ctl("ack", DOWN)) == (
        f"acknowledged {DOWN}: no more reminders until it ends\n")
    assert alerts(dash)[DOWN]["acked_by"] == "API 127.0.0.1"
    row = next(line for line in fine(dash.ctl("alerts")).splitlines()
               if line.startswith(DOWN + " "))
    assert row.split()[1] == "acked" and "(acknowledged by API 127.0.0.1)" in row
    assert failed(dash.ctl("ack", "host_down:gpu-z"), 5) == "no firing alert 'host_down:gpu-z'"


def test_subscribe_list_and_unsubscribe(dash: Dash) -> None:
    made = dash.ctl("subscribe", "-n", "2", "--min-mem", "40G", "--user", "carol", "--json")
    sub = made.json()
    assert (sub["email"], sub["gpus"], sub["min_free_bytes"], sub["host"], sub["by"]) == (
        "carol@lab.example", 2, 40 * GIB, "", "API 127.0.0.1")
    # Without --email or --user: the account running it. --host: the hostname works too.
    mine = fine(dash.ctl("subscribe", "--host", "gpu-a.lab"))
    mine_id = int(mine.split()[1].rstrip(":"))
    assert mine == (f"subscription {mine_id}: one e-mail to {ME}@lab.example when there are 1 "
                    "free GPU on gpu-a; then it ends\n")
    listed = dash.ctl("subscriptions", "--json").json()["subscriptions"]
    assert [s["id"] for s in listed] == [sub["id"], mine_id]
    table = fine(dash.ctl("subscriptions")).splitlines()
    assert table[0].split() == ["ID", "GPUS", "FREE", "EACH", "HOST", "E-MAIL", "BY", "SINCE"]
    assert table[1].split()[:7] == [str(sub["id"]), "2", "40", "GiB", "any", "host",
                                    "carol@lab.example"]
    assert fine(dash.ctl("unsubscribe", str(mine_id))) == f"removed subscription {mine_id}\n"
    assert dash.ctl("unsubscribe", str(sub["id"]), "--json").json() == {"deleted": sub["id"]}
    assert fine(dash.ctl("subscriptions")) == "no subscriptions\n"
    assert failed(dash.ctl("unsubscribe", str(mine_id)), 5) == f"no subscription {mine_id}"


def test_a_subscription_the_dashboard_refuses_is_one_line(dash: Dash) -> None:
    assert failed(dash.ctl("subscribe", "-n", "0"), 2) == (
        "the dashboard says: gpus must be a whole number from 1 to 64")
    assert failed(dash.ctl("subscribe", "--email", "carol"), 2) == (
        "the dashboard says: e-mail address 'carol' is malformed: addr-spec local part with "
        "no domain")
    assert failed(dash.ctl("subscribe", "--host", "nope"), 5) == (
        "no host matches 'nope' (hosts: gpu-a, gpu-down)")
    assert failed(dash.ctl("subscribe", "--host", "gpu-*"), 2) == (
        "'gpu-*' matches 2 hosts (gpu-a, gpu-down): a subscription watches one host, or any "
        "(leave out --host)")
    assert fine(dash.ctl("subscriptions")) == "no subscriptions\n"


def test_subscriptions_need_smtp_on_the_dashboard(tmp_path: Path) -> None:
    app = make_app(tmp_path, [up("gpu-a", host_info("gpu-a"))])
    try:
        with served(app) as url:
            run = Dash(url, app, tmp_path).ctl("subscribe", "--email", "a@lab.example")
    finally:
        get_state(app).close()
    assert failed(run, 2) == ("the dashboard says: subscriptions are told by e-mail, and "
                              "smtp_host is not set")


@pytest.mark.parametrize("argv", [
    ["subscribe", "-n", "2"], ["subscriptions"], ["unsubscribe", "3"], ["alerts"],
    ["silence", DOWN], ["unsilence", DOWN], ["ack", DOWN],
])
def test_direct_mode_says_these_need_the_dashboard(argv: list[str], tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--agent", "gpu01=127.0.0.1:9", *argv], env={"HOME": str(tmp_path)},
                out=out, err=err)
    assert (code, out.getvalue()) == (2, "")
    keeps = "subscriptions" if "subscri" in argv[0] else "alerts"
    assert err.getvalue() == (f"hmonitor-ctl: {argv[0]} needs the dashboard (the agents keep "
                              f"no {keeps}): set HMONITOR_URL and leave out --agent\n")


@pytest.mark.parametrize("argv", [
    ["silence", DOWN, "--minutes", "0"], ["silence", DOWN, "--minutes", "nan"],
    ["silence", DOWN, "--minutes", "inf"], ["silence", DOWN, "--minutes", "-5"],
    ["silence"], ["subscribe", "--email", "a@b.c", "--user", "a"], ["subscribe", "-n", "two"],
    ["unsubscribe", "x"], ["subscribe", "--min-mem", "lots"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv, env={})
    assert exit_.value.code == 2
    assert "usage: hmonitor-ctl" in capsys.readouterr().err


def test_the_text_of_alerts_and_subscriptions() -> None:
    items = [
        {"id": "host_down:gpu02", "text": "gpu02 is down: timeout", "state": "firing",
         "started": NOW - 600, "acked_by": None, "silenced_until": None},
        {"id": "disk_full:gpu01:/data", "text": "gpu01:/data is 93% full", "state": "firing",
         "started": NOW - 7200, "acked_by": "ann", "silenced_until": NOW + 3600,
         "silenced_by": "bob"},
        {"id": "gpu_hot:gpu01:3", "text": "gpu01 GPU 3 is at 91 °C", "state": "resolved",
         "started": NOW - 90000, "ended": NOW - 86400 - 60},
    ]
    lines = alerts_lines(items, Style(False), all_=True, now=NOW)
    until = time.strftime("%H:%M", time.localtime(NOW + 3600))
    assert lines == [
        "ID                     STATE     SINCE       ALERT",
        "host_down:gpu02        firing    10 min ago  gpu02 is down: timeout",
        "disk_full:gpu01:/data  silenced  2 h ago     gpu01:/data is 93% full (acknowledged by "
        f"ann; silenced until {until} by bob)",
        "gpu_hot:gpu01:3        ended     1 d ago     gpu01 GPU 3 is at 91 °C (ended 1 d ago)",
    ]
    assert alerts_lines([], Style(False)) == ["no alerts firing"]
    assert alerts_lines([], Style(False), all_=True) == ["no alerts this week"]
    assert "\x1b[31mfiring" in alerts_lines(items[:1], Style(True), now=NOW)[1]
    subs = [{"id": 7, "created": NOW - 120, "by": "API 10.0.0.5", "email": "c@lab.example",
             "gpus": 2, "min_free_bytes": 40 * GIB, "host": ""},
            {"id": 12, "created": NOW - 5, "by": "carol", "email": "c@lab.example",
             "gpus": 1, "min_free_bytes": 0, "host": "gpu01"}]
    assert subscriptions_lines(subs, Style(False), now=NOW) == [
        "ID  GPUS  FREE EACH  HOST      E-MAIL         BY            SINCE",
        " 7     2     40 GiB  any host  c@lab.example  API 10.0.0.5  2 min ago",
        "12     1          -  gpu01     c@lab.example  carol         5 s ago",
    ]
    assert subscriptions_lines([], Style(False)) == ["no subscriptions"]
