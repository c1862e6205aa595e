"""What is wrong now, as conditions with a stable key: the notification rules of settings.py
(``alert_rules``) applied to one polling round.

A condition's key names what it is about (``host_down:gpu01``, ``disk_full:gpu01:/data``,
``gpu_hot:gpu01:3``...), so the same problem in the next round is the same alert, and a silence
set on a key holds for it. Thresholds the pages show (disk full, idle hogs) are the pages' own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from hmonitor.web.history import IdleHog
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.notify.config import NotifySettings
from hmonitor.web.rules import GIB, disk_percent
from hmonitor.wire import EXPIRATION_NEVER, EXPIRATION_UNKNOWN, is_lost, proc_owner

__all__ = ["HOT_HYSTERESIS_C", "Condition", "detect"]

HOT_HYSTERESIS_C = 5  # a hot GPU counts as cooled down this much under the threshold


@dataclass(frozen=True)
class Condition:
    key: str
    rule: str
    host: str  # "" for a user's condition (account expiring, too many GPUs)
    user: str  # the user concerned, "" for none
    text: str


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if abs(days) >= 2 else f"{seconds / 3600:.0f} hours"


def detect(states: Sequence[HostStateLike], hogs: Iterable[IdleHog], now: float,
           config: NotifySettings, firing: Collection[str] = (),
           expirations: Iterable[tuple[str, int]] = ()) -> list[Condition]:
    """Every enabled rule's conditions in this round. ``firing``: keys firing now (a hot GPU
    stays hot until it is HOT_HYSTERESIS_C under the threshold). ``expirations``: (user,
    expiration) of every user seen, for account_expiring with all_users."""
    rules = config.rules
    out: list[Condition] = []
    expiring = rules["account_expiring"]
    soon = now + expiring.options["days"] * 86400 if expiring.enabled else 0.0
    # 32,000 processes at 1,000 hosts: owners are worked out only where a rule needs them.
    count_holders = rules["user_gpus"].enabled
    holders: dict[str, int] = {}  # user -> GPUs held
    expiry: dict[str, int] = {}  # user -> earliest dated expiry among their processes
    for h in states:
        if not h.up:
            if rules["host_down"].enabled:
                out.append(Condition(f"host_down:{h.name}", "host_down", h.name, "",
                                     f"{h.name} is down: {getattr(h, 'error', '')}"))
            continue
        info = h.info
        if info is None:
            continue
        if info.err and rules["gpu_lost"].enabled:
            out.append(Condition(f"nvml:{h.name}", "gpu_lost", h.name, "",
                                 f"{h.name}: the agent cannot read its GPUs: {info.err}"))
        if rules["disk_full"].enabled:
            limit = rules["disk_full"].options["percent"]
            for d in info.disks:
                pct = disk_percent(d)
                if pct >= limit:
                    out.append(Condition(
                        f"disk_full:{h.name}:{d.mount}", "disk_full", h.name, "",
                        f"{h.name}:{d.mount} is {pct}% full "
                        f"({(d.total - d.used) / GIB:.1f} GiB left)"))
        hot = rules["gpu_hot"]
        for g in info.gpus:
            if is_lost(g.name):
                if rules["gpu_lost"].enabled:
                    out.append(Condition(f"gpu_lost:{h.name}:{g.id}", "gpu_lost", h.name, "",
                                         f"{h.name} GPU {g.id}: {g.name}"))
                continue
            key = f"gpu_hot:{h.name}:{g.id}"
            limit = hot.options["celsius"]
            if hot.enabled and (g.temp >= limit or
                                (key in firing and g.temp > limit - HOT_HYSTERESIS_C)):
                out.append(Condition(key, "gpu_hot", h.name, "",
                                     f"{h.name} GPU {g.id} is at {g.temp} °C "
                                     f"(alert at {limit:g} °C)"))
            if count_holders:
                for user in {proc_owner(p) for p in g.procs}:
                    holders[user] = holders.get(user, 0) + 1
            if soon:  # owners only of the few accounts expiring soon, and the GPUs they hold
                expiring_here = set()
                for p in g.procs:
                    if EXPIRATION_NEVER < p.expiration < soon:
                        user = proc_owner(p)
                        expiry[user] = min(expiry.get(user, p.expiration), p.expiration)
                        expiring_here.add(user)
                if not count_holders:
                    for user in expiring_here:
                        holders[user] = holders.get(user, 0) + 1

    if rules["idle_hog"].enabled:
        for hog in hogs:
            out.append(Condition(
                f"idle_hog:{hog.host}:{hog.gpu}:{hog.pid}", "idle_hog", hog.host, hog.user,
                f"{hog.user} holds {hog.mem / GIB:.1f} GiB on {hog.host} GPU {hog.gpu} "
                f"({hog.basename or 'a process'}, pid {hog.pid}) idle for "
                f"{hog.idle_seconds / 3600:.1f} h"))

    rule = rules["account_expiring"]
    if rule.enabled:
        if rule.options["all_users"]:
            for user, when in expirations:
                if when > EXPIRATION_NEVER and user:
                    expiry[user] = min(expiry.get(user, when), when)
        horizon = rule.options["days"] * 86400
        for user, when in sorted(expiry.items()):
            if when == EXPIRATION_UNKNOWN or when - now >= horizon:
                continue
            text = (f"{user}'s account expired {_days(now - when)} ago" if when <= now else
                    f"{user}'s account expires in {_days(when - now)}")
            if user in holders:
                text += f", while holding {holders[user]} GPU(s)"
            out.append(Condition(f"account_expiring:{user}", "account_expiring", "", user, text))

    rule = rules["user_gpus"]
    if rule.enabled:
        for user, n in sorted(holders.items()):
            if n > rule.options["max"]:
                out.append(Condition(f"user_gpus:{user}", "user_gpus", "", user,
                                     f"{user} holds {n} GPUs (more than {rule.options['max']:g})"))
    return out
