"""Reports built from the live hosts and the history: who uses the GPUs (users) and what needs
attention (alerts). They return dataclasses; the API turns them into JSON, the pages into HTML.

Domain code: no Flask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from hmonitor.web.history.backend import IdleHog, UsageTotals
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.rules import GIB, disk_is_full, disk_percent
from hmonitor.wire import EXPIRATION_UNKNOWN, proc_owner

__all__ = [
    "USAGE_WINDOWS",
    "Alert",
    "HeldGpu",
    "UsageSource",
    "UserReport",
    "alerts_report",
    "users_report",
]

USAGE_WINDOWS = {"1d": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}


class UsageSource(Protocol):
    """What the users report needs of the history."""

    def user_usage(
        self, now: float, windows: Sequence[float]
    ) -> dict[str, dict[float, UsageTotals]]: ...


@dataclass(frozen=True)
class HeldGpu:
    """A process of the user on a GPU, now."""

    host: str
    gpu: int
    mem: int  # bytes
    pid: int
    basename: str


@dataclass
class UserReport:
    user: str
    expiration: int  # as ProcInfo.expiration; unknown for users seen only in the history
    gpus_now: list[HeldGpu] = field(default_factory=list)
    idle_hogs: list[IdleHog] = field(default_factory=list)
    usage: dict[str, UsageTotals] = field(default_factory=dict)  # window label -> totals

    @property
    def mem_now(self) -> int:
        return sum(g.mem for g in self.gpus_now)


def users_report(
    hosts: Iterable[HostStateLike], history: UsageSource, hogs: Iterable[IdleHog], now: float,
) -> list[UserReport]:
    """Per user: GPUs held now (live), expiry, usage over 1/7/30 days (history), idle processes.
    Sorted by GPU-hours over 7 days, most first."""
    users: dict[str, UserReport] = {}
    zero = UsageTotals(0.0, 0.0)

    def entry(name: str) -> UserReport:
        found = users.get(name)
        if found is None:
            found = users[name] = UserReport(name, EXPIRATION_UNKNOWN,
                                             usage=dict.fromkeys(USAGE_WINDOWS, zero))
        return found

    for host in hosts:
        if not host.up or host.info is None:
            continue
        for gpu in host.info.gpus:
            for proc in gpu.procs:
                user = entry(proc_owner(proc))
                user.gpus_now.append(HeldGpu(host.name, gpu.id, proc.mem, proc.pid,
                                             proc.basename))
                if proc.expiration:
                    user.expiration = proc.expiration
    for name, per_window in history.user_usage(now, list(USAGE_WINDOWS.values())).items():
        user = entry(name)
        for label, seconds in USAGE_WINDOWS.items():
            user.usage[label] = per_window.get(seconds, zero)
    for hog in hogs:
        entry(hog.user).idle_hogs.append(hog)
    return sorted(users.values(), key=lambda u: (-u.usage["7d"].gpu_hours, u.user))


AlertKind = Literal["host_down", "disk_full", "idle_hog", "storage"]


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    host: str
    message: str
    since: float | None = None
    # The kind's own fields: host_down {error}; disk_full {mount, used, total};
    # idle_hog {gpu, pid, user, basename, mem, since, idle_seconds}; storage {path}: a data file
    # of the dashboard itself cannot be written (host is "").
    detail: dict[str, object] = field(default_factory=dict)


def alerts_report(hosts: Iterable[HostStateLike], hogs: Sequence[IdleHog],
                  storage: Mapping[str, str] | None = None) -> list[Alert]:
    """The dashboard's own data files that cannot be written (``storage``: path -> the fault in
    one line), hosts down, disks at the warning level or fuller, processes holding an idle GPU."""
    alerts = [Alert("storage", "", message, detail={"path": path})
              for path, message in (storage or {}).items()]
    for host in hosts:
        if not host.up:
            alerts.append(Alert("host_down", host.name, f"{host.name} is down: {host.error}",
                                host.last_seen, {"error": host.error}))
            continue
        if host.info is None:
            continue
        for disk in host.info.disks:
            if disk_is_full(disk):
                alerts.append(Alert(
                    "disk_full", host.name,
                    f"{host.name}:{disk.mount} is {disk_percent(disk)}% full "
                    f"({(disk.total - disk.used) / GIB:.1f} GiB left)",
                    detail={"mount": disk.mount, "used": disk.used, "total": disk.total}))
    for hog in hogs:
        alerts.append(Alert(
            "idle_hog", hog.host,
            f"{hog.user} holds {hog.mem / GIB:.1f} GiB on {hog.host} GPU {hog.gpu} "
            f"({hog.basename}, pid {hog.pid}) idle for {hog.idle_seconds / 3600:.1f} h",
            hog.since,
            {"gpu": hog.gpu, "pid": hog.pid, "user": hog.user, "basename": hog.basename,
             "mem": hog.mem, "idle_seconds": round(hog.idle_seconds)}))
    return alerts
