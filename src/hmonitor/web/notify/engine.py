"""After every polling round: which alerts start, go on and end, and who is told.

``Notifier.on_round`` (a round listener, on the poller's notifier thread, never on the polling
loop) compares the round's conditions (``rules.detect``) with the alerts kept in SQLite:

* a new condition fires at once, or, for a host down, once it has lasted
  ``alert_host_down_minutes``: one message;
* a firing alert not acknowledged is recalled every ``alert_remind_minutes`` (0: never);
* a condition gone ends its alert: one message, if its start was told;
* a silenced alert sends nothing while the silence lasts; one that fired during it is told
  when the silence ends, if it still fires.

The round's messages are grouped per destination: ten hosts going down together are one e-mail
to the admins and one post to each webhook; a user concerned gets one e-mail of their own.
Subscriptions ("K GPUs with X GiB free on one host") are checked in the same pass, told once
and removed. Messages go to the outbox (``outbox.Outbox``), which sends them on its own threads.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hmonitor.web.history import IdleHog
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.notify.config import NotifySettings
from hmonitor.web.notify.rules import Condition, detect
from hmonitor.web.notify.senders import check_email_address
from hmonitor.web.notify.store import AlertRow, AlertStore, Subscription
from hmonitor.web.rules import GIB, gpu_is_free

__all__ = ["Event", "Notifier", "NotifyError", "free_gpus"]

log = logging.getLogger(__name__)

_WORDS = {"firing": "NEW", "reminder": "STILL", "resolved": "RESOLVED", "subscription": "FREE"}


@dataclass(frozen=True)
class Event:
    kind: str  # firing, reminder, resolved, subscription
    key: str
    rule: str
    host: str
    user: str
    text: str
    since: float | None  # when the alert started

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "id": self.key, "rule": self.rule, "host": self.host,
                "user": self.user, "text": self.text, "since": self.since}

    def line(self) -> str:
        return f"{_WORDS[self.kind]:<9} {self.text}"


def free_gpus(states: Iterable[HostStateLike], min_free: float,
              host: str = "") -> dict[str, list[int]]:
    """Per up host (or only ``host``), its GPUs free by the dashboard's rule with at least
    ``min_free`` bytes of memory free."""
    out: dict[str, list[int]] = {}
    for h in states:
        if not h.up or h.info is None or (host and h.name != host):
            continue
        ids = [g.id for g in h.info.gpus
               if gpu_is_free(g) and g.mem_total - g.mem_used >= min_free]
        if ids:
            out[h.name] = ids
    return out


class Notifier:
    def __init__(self, store: AlertStore, config: NotifySettings,
                 hogs: Callable[[float], Sequence[IdleHog]],
                 expirations: Callable[[float], Iterable[tuple[str, int]]] = lambda now: (),
                 wake: Callable[[], None] = lambda: None, dashboard_url: str = "") -> None:
        self.store = store
        self.config = config
        self._hogs = hogs
        self._expirations = expirations
        self._wake = wake
        self.dashboard_url = dashboard_url

    def on_round(self, states: Sequence[HostStateLike], started: float) -> None:
        now = time.time()
        hogs = self._hogs(now) if self.config.rules["idle_hog"].enabled else []
        every_user = self.config.rules["account_expiring"].options["all_users"]
        expirations = list(self._expirations(now)) if every_user else []
        with self.store.tx() as conn:
            open_ = self.store.open_alerts(conn, now)
            firing = {k for k, a in open_.items() if a.state == "firing"}
            found = detect(states, hogs, now, self.config, firing, expirations)
            events = self._alerts(conn, open_, found, now)
            events += self._subscriptions(conn, states, now)
            queued = self._enqueue(conn, events, now)
            self.store.prune(conn, now)
        if queued:
            log.info("notifications: %d event(s), %d message(s) queued", len(events), queued)
            self._wake()

    # --- alerts -------------------------------------------------------------------------------

    def _alerts(self, conn: sqlite3.Connection, open_: dict[str, AlertRow],
                found: list[Condition], now: float) -> list[Event]:
        events: list[Event] = []
        remind = self.config.remind_minutes * 60
        wait = self.config.rules["host_down"].options["minutes"] * 60
        seen = set()
        for c in found:
            if c.key in seen:
                continue
            seen.add(c.key)
            a = open_.get(c.key)
            if a is None:
                conn.execute("INSERT OR REPLACE INTO alerts (key, rule, host, user, text, state, "
                             "first_seen) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                             (c.key, c.rule, c.host, c.user, c.text, now))
                first_seen, state, last_sent, acked = now, "pending", None, None
                silenced = self.store.silenced(conn, c.key, now)  # set ahead (maintenance)
            else:
                first_seen, state, last_sent = a.first_seen, a.state, a.last_sent
                acked, silenced = a.acked_by, a.silenced_until
                if a.text != c.text:  # a disk filling further, a hotter GPU
                    conn.execute("UPDATE alerts SET text = ? WHERE key = ?", (c.text, c.key))
            if state == "pending":
                if c.rule == "host_down" and now - first_seen < wait:
                    continue
                conn.execute("UPDATE alerts SET state = 'firing', started = ? WHERE key = ?",
                             (now, c.key))
                state, started = "firing", now
            else:
                started = a.started if a is not None and a.started is not None else now
            if silenced:
                continue
            kind = None
            if last_sent is None:
                kind = "firing"
            elif remind > 0 and not acked and now - last_sent >= remind:
                kind = "reminder"
            if kind is not None:
                conn.execute("UPDATE alerts SET last_sent = ? WHERE key = ?", (now, c.key))
                events.append(Event(kind, c.key, c.rule, c.host, c.user, c.text, started))
        for key, a in open_.items():
            if key in seen:
                continue
            if a.state == "pending":
                conn.execute("DELETE FROM alerts WHERE key = ?", (key,))
                continue
            conn.execute("UPDATE alerts SET state = 'resolved', ended = ? WHERE key = ?",
                         (now, key))
            if a.last_sent is not None and not a.silenced_until:
                took = _duration(now - (a.started or now))
                events.append(Event("resolved", key, a.rule, a.host, a.user,
                                    f"{a.text} — over after {took}", a.started))
        return events

    # --- subscriptions ------------------------------------------------------------------------

    def _subscriptions(self, conn: sqlite3.Connection, states: Sequence[HostStateLike],
                       now: float) -> list[Event]:
        events = []
        for s in self.store.subscriptions(conn):
            hosts = free_gpus(states, s.min_free, s.host)
            fits = {h: ids for h, ids in hosts.items() if len(ids) >= s.gpus}
            if not fits:
                continue
            host, ids = next(iter(sorted(fits.items(), key=lambda kv: -len(kv[1]))))
            chosen = ",".join(map(str, ids[: s.gpus]))
            events.append(Event(
                "subscription", f"subscription:{s.id}", "subscription", host, s.email,
                f"{s.gpus} GPU(s) with {s.min_free / GIB:.0f} GiB free on {host}: GPUs "
                f"{chosen} (CUDA_VISIBLE_DEVICES={chosen})", s.created))
            self.store.unsubscribe(s.id, conn)
        return events

    # --- messages -----------------------------------------------------------------------------

    def _enqueue(self, conn: sqlite3.Connection, events: list[Event], now: float) -> int:
        """Group the round's events per destination and queue one message each."""
        cfg = self.config
        groups: dict[tuple[str, tuple[str, ...]], list[Event]] = {}
        admin_channels = [f"{kind}:{i}" for kind, items in
                          (("webhook", cfg.webhooks), ("apprise", cfg.apprise_urls))
                          for i in range(len(items))]
        for e in events:
            if e.kind == "subscription":  # e.user holds the subscriber's address
                if cfg.email:
                    groups.setdefault(("email", (e.user,)), []).append(e)
                continue
            rule = cfg.rules[e.rule]
            if rule.to_admins:
                if cfg.email and cfg.admin_emails:
                    groups.setdefault(("email", cfg.admin_emails), []).append(e)
                for channel in admin_channels:
                    groups.setdefault((channel, ()), []).append(e)
            if rule.to_user and cfg.email:
                address = cfg.user_address(e.user)
                if address and address not in cfg.admin_emails:
                    groups.setdefault(("email", (address,)), []).append(e)
        for (channel, recipients), group in groups.items():
            subject, body, payload = self._compose(group, now)
            self.store.enqueue(conn, now, channel, recipients, subject, body, payload)
        return len(groups)

    def _compose(self, events: list[Event], now: float) -> tuple[str, str, dict[str, Any]]:
        counts: dict[str, int] = {}
        for e in events:
            counts[e.kind] = counts.get(e.kind, 0) + 1
        if len(events) == 1:
            e = events[0]
            subject = f"[hmonitor] {_WORDS[e.kind].capitalize()}: {e.text}"
        else:
            parts = [f"{n} {_WORDS[k].lower()}" for k, n in counts.items()]
            subject = f"[hmonitor] {', '.join(parts)}: " + "; ".join(e.text for e in events)
        if len(subject) > 160:
            subject = subject[:159] + "…"
        lines = [e.line() for e in events]
        if self.dashboard_url:
            lines += ["", f"Dashboard: {self.dashboard_url}/alerts"]
        payload = {"source": "hmonitor", "time": now, "summary": subject.removeprefix(
            "[hmonitor] "), "events": [e.as_dict() for e in events]}
        return subject, "\n".join(lines) + "\n", payload

    # --- for the pages and the API ------------------------------------------------------------

    def subscribe(self, by: str, email: str, gpus: int, min_free: float,
                  host: str = "") -> Subscription:
        """"Tell ``email`` when ``gpus`` GPUs with ``min_free`` bytes free each are free on one
        host (``host``, or any)"; NotifyError for what cannot be."""
        if not self.config.email:
            raise NotifyError("subscriptions are told by e-mail, and smtp_host is not set")
        try:
            check_email_address(email)
        except ValueError as err:
            raise NotifyError(str(err)) from None
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= 64:
            raise NotifyError("gpus must be a whole number from 1 to 64")
        if isinstance(min_free, bool) or not isinstance(min_free, int | float) or not (
                0 <= min_free <= 1 << 50):
            raise NotifyError("min_free must be a number of bytes, 0 or more")
        mine = [s for s in self.store.subscriptions() if s.by == by]
        if len(mine) >= MAX_SUBSCRIPTIONS:
            raise NotifyError(f"{by} already has {len(mine)} subscriptions (at most "
                              f"{MAX_SUBSCRIPTIONS})")
        return self.store.subscribe(time.time(), by, email, gpus, float(min_free), host)

    def subscribe_from(self, form: Mapping[str, Any], by: str,
                       hosts: Collection[str]) -> Subscription:
        """``subscribe`` from a request (the API's JSON, the page's form): ``email``, or the
        address of ``user`` (else of ``by``) by settings.py's user_email; ``gpus``;
        ``min_free_gib`` or ``min_free_bytes``; ``host`` (one of ``hosts``, or any)."""
        email, user = form.get("email") or "", form.get("user") or ""
        if not isinstance(email, str) or not isinstance(user, str):
            raise NotifyError("email and user must be strings")
        email = email.strip() or self.config.user_address(user or by) or ""
        if not email:
            raise NotifyError("give an e-mail address (settings.py's user_email does not map "
                              f"{user or by!r} to one)")
        gpus = _number(form.get("gpus", 1), "gpus", whole=True)
        if "min_free_bytes" in form:
            min_free = _number(form["min_free_bytes"], "min_free_bytes")
        else:
            min_free = _number(form.get("min_free_gib") or 0, "min_free_gib") * GIB
        host = form.get("host") or ""
        if not isinstance(host, str):
            raise NotifyError("host must be a string")
        if host and host not in hosts:
            raise NotifyError(f"no host {host!r} in settings.py")
        return self.subscribe(by, email, int(gpus), min_free, host)

    def silence(self, key: str, minutes: float, by: str) -> float:
        """Silence ``key`` (a current alert, or one to come) for ``minutes``; until when."""
        if not _KEY.fullmatch(key):
            raise NotifyError(f"{key!r} is not an alert id (such as host_down:gpu01)")
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not (
                0 < minutes <= MAX_SILENCE_MINUTES):
            raise NotifyError(f"minutes must be more than 0 and at most {MAX_SILENCE_MINUTES}")
        now = time.time()
        until = now + minutes * 60
        self.store.silence(key, until, by, now)
        return until


class NotifyError(ValueError):
    """A request the notifier cannot take, in one line (the API's 400)."""


def _number(value: Any, name: str, *, whole: bool = False) -> float:
    """A number from JSON or a form field (text)."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise NotifyError(f"{name} must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NotifyError(f"{name} must be a number")
    if whole and value != int(value):
        raise NotifyError(f"{name} must be a whole number")
    return float(value)


MAX_SUBSCRIPTIONS = 20  # per person: a subscription is checked every round
MAX_SILENCE_MINUTES = 30 * 24 * 60
_KEY = re.compile(r"(host_down|disk_full|idle_hog|account_expiring|gpu_lost|nvml|gpu_hot|"
                  r"user_gpus):[^\x00-\x1f]{1,600}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
