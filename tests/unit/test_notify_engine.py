"""The notifier's rounds on a real SQLite store: when alerts start, are recalled and end, what
is grouped into one message, silences and acknowledgements, a restart, subscriptions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from builders import GIB, down, gpu, host_info, lost_gpu, proc, up

from hmonitor.web.history import IdleHog
from hmonitor.web.hoststate import HostState
from hmonitor.web.notify.config import NotifySettings, check_notify
from hmonitor.web.notify.engine import Notifier
from hmonitor.web.notify.store import AlertStore, Delivery

T0 = 1_800_000_000.0


def settings(**keys: Any) -> NotifySettings:
    base = {"smtp_host": "smtp.lab.example", "mail_from": "hmonitor@lab.example",
            "admin_emails": ["admin@lab.example"], "webhooks": ["https://hooks.example/in"],
            "user_email": "{user}@lab.example", "alert_host_down_minutes": 2,
            "alert_remind_minutes": 60}
    config, problems = check_notify({**base, **keys})
    assert problems == []
    return config


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("hmonitor.web.notify.engine.time.time", c)
    return c


class Rig:
    def __init__(self, path: Path, config: NotifySettings, clock: Clock) -> None:
        self.store = AlertStore(path)
        self.hogs: list[IdleHog] = []
        self.clock = clock
        self.notifier = Notifier(self.store, config, hogs=lambda now: self.hogs)
        self.seen = 0

    def round(self, states: Sequence[HostState], minutes: float = 0) -> list[Delivery]:
        """Advance the clock, run a round; the messages it queued."""
        self.clock.now += minutes * 60
        self.notifier.on_round(list(states), self.clock.now)
        new = [d for d in self.store.deliveries(1000) if d.id > self.seen]
        self.seen = max([self.seen, *(d.id for d in new)])
        return sorted(new, key=lambda d: d.id)


@pytest.fixture
def rig(tmp_path: Path, clock: Clock) -> Rig:
    return Rig(tmp_path / "alerts.sqlite", settings(), clock)


def healthy(name: str) -> HostState:
    return up(name, host_info(name, [gpu(0)]))


def events(d: Delivery) -> list[tuple[str, str]]:
    return [(e["event"], e["id"]) for e in d.payload["events"]]


def test_a_host_down_is_told_once_it_lasted_its_minutes_then_once_back(rig: Rig) -> None:
    assert rig.round([healthy("a"), healthy("b")]) == []
    assert rig.round([down("a", "connection refused"), healthy("b")]) == []  # pending
    assert rig.round([down("a", "connection refused"), healthy("b")], minutes=1) == []
    sent = rig.round([down("a", "connection refused"), healthy("b")], minutes=1.5)
    assert [(d.channel, d.recipients) for d in sent] == [
        ("email", ("admin@lab.example",)), ("webhook:0", ())]
    assert all(events(d) == [("firing", "host_down:a")] for d in sent)
    assert sent[0].subject == "[hmonitor] New: a is down: connection refused"
    assert rig.round([down("a", "connection refused"), healthy("b")], minutes=1) == []
    back = rig.round([healthy("a"), healthy("b")], minutes=1)
    assert [events(d) for d in back] == [[("resolved", "host_down:a")]] * 2
    assert "over after" in back[0].body
    assert rig.round([healthy("a"), healthy("b")], minutes=1) == []


def test_a_blip_shorter_than_the_minutes_sends_nothing(rig: Rig) -> None:
    rig.round([down("a")])
    assert rig.round([healthy("a")], minutes=1) == []
    assert rig.store.alerts(rig.clock.now) == []


def test_ten_hosts_down_together_are_one_message_per_destination(rig: Rig) -> None:
    names = [f"gpu{i:02d}" for i in range(10)]
    rig.round([down(n) for n in names])
    sent = rig.round([down(n) for n in names], minutes=3)
    assert len(sent) == 2  # one e-mail to the admins, one webhook post
    assert all(len(d.payload["events"]) == 10 for d in sent)
    assert sent[0].subject.startswith("[hmonitor] 10 new: gpu00 is down")
    assert sent[0].body.count("\nNEW") == 9 and sent[0].body.startswith("NEW")


def test_reminders_until_acknowledged_and_silence(rig: Rig) -> None:
    hot = [up("a", host_info("a", [gpu(0, temp=95), gpu(1, temp=50)]))]
    first = rig.round(hot)
    assert [events(d) for d in first] == [[("firing", "gpu_hot:a:0")]] * 2
    assert rig.round(hot, minutes=30) == []
    reminder = rig.round(hot, minutes=31)
    assert [events(d) for d in reminder] == [[("reminder", "gpu_hot:a:0")]] * 2
    assert rig.store.ack("gpu_hot:a:0", "ann", rig.clock.now)
    assert rig.round(hot, minutes=61) == []  # acknowledged: no more reminders
    rig.store.silence("gpu_hot:a:0", rig.clock.now + 3600, "ann", rig.clock.now)
    cooled = [up("a", host_info("a", [gpu(0, temp=60), gpu(1, temp=50)]))]
    assert rig.round(cooled, minutes=1) == []  # silenced: its end is not told either


def test_a_hot_gpu_stays_hot_until_it_cools_below_the_margin(rig: Rig) -> None:
    def at(t: int) -> list[HostState]:
        return [up("a", host_info("a", [gpu(0, temp=t)]))]

    assert rig.round(at(91))
    assert rig.round(at(88), minutes=1) == []  # within 5 °C of 90: still firing
    assert next(events(d) for d in rig.round(at(84), minutes=1)) == [
        ("resolved", "gpu_hot:a:0")]


def test_an_alert_that_fired_while_silenced_is_told_when_the_silence_ends(rig: Rig) -> None:
    rig.store.silence("gpu_lost:a:1", T0 + 600, "ann", T0)  # set before it happens
    lost = [up("a", host_info("a", [gpu(0), lost_gpu(1, "GPU is lost")]))]
    assert rig.round(lost) == []
    told = rig.round(lost, minutes=11)
    assert [events(d) for d in told] == [[("firing", "gpu_lost:a:1")]] * 2


def test_a_restart_neither_sends_again_nor_forgets(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "alerts.sqlite"
    first = Rig(path, settings(), clock)
    first.round([down("a")])
    assert first.round([down("a")], minutes=3)
    first.store.close()
    again = Rig(path, settings(), clock)  # the dashboard restarted
    again.seen = 10**9
    assert again.round([down("a")], minutes=1) == []
    again.seen = 0
    back = [d for d in again.round([healthy("a")], minutes=1) if d.payload["events"][0]["event"]
            == "resolved"]
    assert len(back) == 2


def test_the_user_concerned_gets_their_own_mail_and_can_opt_out(tmp_path: Path,
                                                                clock: Clock) -> None:
    owner = proc("alice", mem_gib=30, expiration=int(T0 + 3 * 86400))
    states = [up("a", host_info("a", [gpu(0, owner, util=50)]))]
    rig = Rig(tmp_path / "a.sqlite", settings(), clock)
    sent = rig.round(states)
    assert {(d.channel, d.recipients) for d in sent} == {
        ("email", ("admin@lab.example",)), ("webhook:0", ()), ("email", ("alice@lab.example",))}
    mine = next(d for d in sent if d.recipients == ("alice@lab.example",))
    assert events(mine) == [("firing", "account_expiring:alice")]
    assert "expires in 3 days, while holding 1 GPU(s)" in mine.body
    quiet = Rig(tmp_path / "b.sqlite", settings(user_email_opt_out=["alice"]), clock)
    assert all(d.recipients != ("alice@lab.example",) for d in quiet.round(states))


def test_idle_hogs_and_a_user_over_the_gpu_limit(tmp_path: Path, clock: Clock) -> None:
    config = settings(alert_rules={"user_gpus": {"enabled": True, "max": 1, "to": "user"},
                                   "idle_hog": {"to": "user"}})
    rig = Rig(tmp_path / "a.sqlite", config, clock)
    rig.hogs = [IdleHog(host="a", gpu=1, pid=77, user="bob", basename="python", mem=40 * GIB,
                        since=T0 - 9000, idle_seconds=9000)]
    states = [up("a", host_info("a", [gpu(0, proc("bob", pid=76)), gpu(1, proc("bob", pid=77))]))]
    sent = rig.round(states)
    assert [(d.recipients, sorted(events(d))) for d in sent] == [
        (("bob@lab.example",), [("firing", "idle_hog:a:1:77"), ("firing", "user_gpus:bob")])]


def test_a_subscription_is_told_once_and_removed(rig: Rig) -> None:
    busy = [up("a", host_info("a", [gpu(0, proc("x")), gpu(1, proc("y")), gpu(2)]))]
    sub = rig.notifier.subscribe("carol", "carol@lab.example", 2, 40 * GIB)
    assert rig.round(busy) == []
    freed = [up("a", host_info("a", [gpu(0), gpu(1, proc("y")), gpu(2)]))]
    sent = rig.round(freed, minutes=1)
    assert [(d.recipients, events(d)) for d in sent] == [
        (("carol@lab.example",), [("subscription", f"subscription:{sub.id}")])]
    assert "CUDA_VISIBLE_DEVICES=0,2" in sent[0].body
    assert rig.store.subscriptions() == []
    assert rig.round(freed, minutes=1) == []


def test_webhook_payload_is_json_with_every_event(rig: Rig) -> None:
    rig.round([down("a")])
    hook = next(d for d in rig.round([down("a")], minutes=3) if d.channel == "webhook:0")
    body = json.loads(json.dumps(hook.payload))
    assert body["source"] == "hmonitor" and body["events"][0]["host"] == "a"
    assert body["events"][0]["rule"] == "host_down"


@pytest.mark.parametrize(("keys", "key", "problem"), [
    ({"alert_rules": {"gpu_warm": {}}}, "alert_rules", "unknown rule 'gpu_warm'"),
    ({"alert_rules": {"gpu_hot": {"celcius": 80}}}, "alert_rules", "unknown option 'celcius'"),
    ({"alert_rules": {"disk_full": {"to": "everyone"}}}, "alert_rules", "must be one of"),
    ({"smtp_host": "m", "smtp_port": 70000, "mail_from": "a@b.example"}, "smtp_port",
     "1 to 65535"),
    ({"smtp_host": "m", "smtp_port": "25", "mail_from": "a@b.example"}, "smtp_port",
     "port number"),
    ({"smtp_security": "tls"}, "smtp_security", "must be one of"),
    ({"webhooks": ["hooks.example/in"]}, "webhooks", "http:// or https://"),
    ({"webhooks": "https://hooks.example/in"}, "webhooks", "must be a list"),
    ({"smtp_host": "m", "mail_from": "a@b.example", "user_email": "@lab.example"},
     "user_email", "has no {user}"),
    ({"admin_emails": ["admin"]}, "admin_emails", "malformed"),
    ({"admin_emails": ["a@lab.example"]}, "admin_emails", "needs smtp_host"),
    ({"smtp_host": "m"}, "smtp_host", "needs mail_from"),
    ({"smtp_host": "m", "mail_from": "a@b.example", "smtp_user": "u"}, "smtp_user",
     "needs smtp_password"),
    ({"alert_host_down_minutes": -1}, "alert_host_down_minutes", "at least 0"),
])
def test_bad_notification_settings_are_named(keys: dict[str, Any], key: str,
                                             problem: str) -> None:
    _, problems = check_notify(keys)
    assert any(k == key and problem in p for k, p in problems), problems
