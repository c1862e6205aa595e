"""The pages' view models: what a host, GPU, process and disk look like on a page, built from the
poller's state with the rules (``web/rules.py``) and texts (``display.py``). No Flask here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hmonitor._pb import hm_pb2
from hmonitor.web.history import IdleHog
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.notes import Note
from hmonitor.web.pages.display import expiry, idle_text, moment, r0, r1, short_model, size_text
from hmonitor.web.rules import (
    FREE_UTIL_PCT,
    GIB,
    disk_is_full,
    disk_percent,
    expiry_state,
    gpu_is_free,
)
from hmonitor.wire import is_lost, is_simulated, proc_label, proc_owner

__all__ = [
    "DiskView",
    "Filters",
    "GpuView",
    "HostCounts",
    "HostView",
    "ProcView",
    "Summary",
    "TileView",
    "apply_filters",
    "hogs_by_gpu",
    "host_counts",
    "host_view",
    "summarize",
    "tile_view",
]

# (host, GPU index) -> {pid: idle seconds}
Hogs = Mapping[tuple[str, int], Mapping[int, float]]


@dataclass(slots=True)
class ProcView:
    """One user's processes on a GPU, summed: "alice \u00d72 (29 GiB, 2027-11-02)"."""

    user: str
    label: str
    mem: str
    exp_text: str
    exp_class: str
    idle: str = ""  # "idle 4h" when one of them holds the GPU idle for long
    hit: bool = False  # matches the user filter: highlighted
    title: str = ""  # pids and command lines, on pages that show few GPUs (host page, card)


@dataclass(slots=True)
class MigView:
    """One MIG instance of a GPU: "3g.71gb 12/71 GiB"."""

    profile: str
    gpu_instance: int
    compute_instance: int
    uuid: str
    mem_text: str
    sm_count: int | None
    procs: int


@dataclass(slots=True)
class GpuView:
    index: int
    model: str
    name: str
    util: int
    mem_used: float
    mem_total: float
    mem_text: str
    temp: int
    fan: str
    free: bool
    lost: bool
    procs: list[ProcView]
    mig: list[MigView] = field(default_factory=list)
    mig_enabled: bool = False  # utilization is not reported in MIG mode


@dataclass(slots=True)
class DiskView:
    mount: str
    device: str
    pct: int
    text: str
    warn: bool


@dataclass(slots=True)
class HostView:
    name: str
    address: str
    up: bool
    error: str
    seen: str
    ip: str
    hostname: str
    simulated: bool
    stale: bool
    gpus: list[GpuView]
    disks: list[DiskView]
    notes: list[Note]
    truncated: tuple[str, ...] = ()  # what the poller cut from the agent's answer
    n_gpus: int = 0
    n_free: int = 0


@dataclass
class Summary:
    hosts_up: int = 0
    hosts_down: int = 0
    gpus: int = 0
    free: int = 0
    busy: int = 0
    lost: int = 0
    users: set[str] = field(default_factory=set)


VIEWS = ("auto", "map", "panels")


@dataclass(frozen=True)
class Filters:
    user: str = ""
    host: str = ""
    free: bool = False
    view: str = "auto"  # auto: panels for a few hosts, the map for many

    @classmethod
    def from_args(cls, args: Any) -> Filters:
        view = str(args.get("view", "auto"))
        return cls(
            user=str(args.get("user", "")).strip()[:64],
            host=str(args.get("host", "")).strip()[:128],
            free=str(args.get("free", "")) in ("1", "on", "true"),
            view=view if view in VIEWS else "auto",
        )

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters (with ``changes``) as URL query arguments, defaults left out."""
        values = {"user": self.user, "host": self.host, "free": "1" if self.free else "",
                  "view": "" if self.view == "auto" else self.view}
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v and not (k == "view" and v == "auto")}


def hogs_by_gpu(hogs: Iterable[IdleHog]) -> dict[tuple[str, int], dict[int, float]]:
    out: dict[tuple[str, int], dict[int, float]] = {}
    for h in hogs:
        out.setdefault((h.host, h.gpu), {})[h.pid] = h.idle_seconds
    return out


def _procs_view(
    procs: Iterable[hm_pb2.ProcInfo], expiries: dict[int, tuple[str, str]], now: float,
    idle: Mapping[int, float], detail: bool = False,
) -> list[ProcView]:
    """One entry per owner (with job or container) on the GPU, their processes summed.

    Hot path (100 hosts x 8 GPUs x 4 processes per page): each protobuf field is read once,
    and expiry texts are shared through ``expiries`` across the page.
    """
    # label -> [owner, memory, processes, expiration, pids, command lines]
    by_label: dict[str, list[Any]] = {}
    for p in procs:
        label = proc_label(p)
        entry = by_label.get(label)
        command = f"pid {p.pid}: {p.cmdline or p.basename}" if detail else ""
        if entry is None:
            by_label[label] = [proc_owner(p), p.mem, 1, p.expiration, [p.pid], [command]]
        else:
            entry[1] += p.mem
            entry[2] += 1
            entry[4].append(p.pid)
            entry[5].append(command)
    out = []
    for label, (user, mem, count, exp, pids, commands) in by_label.items():
        texts = expiries.get(exp)
        if texts is None:
            texts = expiries[exp] = expiry(exp, now)
        longest = max((idle[pid] for pid in pids if pid in idle), default=None)
        out.append(ProcView(
            user, f"{label} \u00d7{count}" if count > 1 else label, size_text(mem), texts[0],
            texts[1], f"idle {idle_text(longest)}" if longest is not None else "",
            title="\n".join(commands) if detail else "",
        ))
    return out


def _mig_views(g: hm_pb2.GPUInfo) -> list[MigView]:
    on: dict[int, int] = {}  # GPU instance -> processes on it
    for p in g.procs:
        if p.HasField("mig"):
            on[p.mig.gpu_instance] = on.get(p.mig.gpu_instance, 0) + 1
    return [MigView(m.profile, m.gpu_instance, m.compute_instance, m.uuid,
                    f"{r1(m.mem_used / GIB)}/{r0(m.mem_total / GIB)} GiB",
                    m.sm_count if m.HasField("sm_count") else None, on.get(m.gpu_instance, 0))
            for m in g.mig]


def gpu_view(g: hm_pb2.GPUInfo, expiries: dict[int, tuple[str, str]], now: float,
             idle: Mapping[int, float] | None = None, detail: bool = False) -> GpuView:
    name = g.name
    lost = is_lost(name)
    used, total = g.mem_used / GIB, g.mem_total / GIB
    fan = g.fanspeed
    procs = [] if lost else _procs_view(g.procs, expiries, now, idle or {}, detail)
    return GpuView(
        index=g.id,
        model="lost" if lost else short_model(name),
        name=name,
        util=g.utilization,
        mem_used=round(used, 1),
        mem_total=round(total, 1),
        mem_text=f"{r1(used)}/{r0(total)} GiB",
        temp=g.temp,
        fan=f"{fan}%" if fan else "—",
        free=gpu_is_free(g),
        lost=lost,
        procs=procs,
        mig=_mig_views(g) if g.mig else [],
        mig_enabled=g.mig_enabled,
    )


def _disk_view(d: hm_pb2.DiskInfo) -> DiskView:
    return DiskView(mount=d.mount or d.device, device=d.device, pct=disk_percent(d),
                    text=f"{size_text(d.used)} of {size_text(d.total)}", warn=disk_is_full(d))


def host_view(
    h: HostStateLike, notes: Sequence[Note], now: float,
    expiries: dict[int, tuple[str, str]] | None = None, hogs: Hogs | None = None,
    detail: bool = False,
) -> HostView:
    """``detail``: with each process's pid and command line on hover, for pages that show one
    host; the overview leaves them out (3,200 processes at 100 hosts)."""
    info = h.info
    exp_cache = {} if expiries is None else expiries
    hogs = hogs or {}
    gpus = ([gpu_view(g, exp_cache, now, hogs.get((h.name, g.id)), detail) for g in info.gpus]
            if info is not None else [])
    seen = "never seen" if h.last_seen is None else f"last seen {moment(h.last_seen, now)}"
    return HostView(
        name=h.name,
        address=h.address,
        up=h.up,
        error=h.error,
        seen=seen,
        ip=info.ip if info is not None else "",
        hostname=info.hostname if info is not None else "",
        simulated=info is not None and any(is_simulated(g.name) for g in info.gpus),
        stale=not h.up and info is not None,
        gpus=gpus,
        disks=[_disk_view(d) for d in info.disks] if info is not None else [],
        notes=list(notes),
        truncated=h.truncated,
        n_gpus=len(gpus),
        n_free=sum(1 for g in gpus if g.free) if h.up else 0,
    )


@dataclass(frozen=True, slots=True)
class HostCounts:
    """What one host adds to the summary bar."""

    up: bool
    gpus: int = 0
    free: int = 0
    busy: int = 0
    lost: int = 0
    users: frozenset[str] = frozenset()


def host_counts(h: HostStateLike) -> HostCounts:
    if not h.up:
        return HostCounts(False)
    if h.info is None:
        return HostCounts(True)
    free = lost = 0
    users = set()
    for g in h.info.gpus:
        if is_lost(g.name):
            lost += 1
        elif gpu_is_free(g):
            free += 1
        for p in g.procs:
            users.add(proc_owner(p))
    n = len(h.info.gpus)
    return HostCounts(True, n, free, n - free - lost, lost, frozenset(users))


def summarize(counts: Iterable[HostCounts]) -> Summary:
    s = Summary()
    for c in counts:
        if not c.up:
            s.hosts_down += 1
            continue
        s.hosts_up += 1
        s.gpus += c.gpus
        s.free += c.free
        s.busy += c.busy
        s.lost += c.lost
        s.users.update(c.users)
    return s


@dataclass(slots=True)
class TileView:
    """A host on the cluster map: a cell per GPU, named by what it is doing."""

    name: str
    up: bool
    n_free: int
    n_gpus: int
    cells: list[str]  # per GPU: free, held, lost, off (host down) or u0-u9, plus " x", " hit"


def _cell(g: hm_pb2.GPUInfo, up: bool, now: float, needle: str) -> tuple[str, bool]:
    """A GPU's cell class, and whether it is free."""
    if not up:
        return "off", False
    if is_lost(g.name):
        return "lost", False
    if gpu_is_free(g):
        return "free", True
    util = g.utilization
    kind = "held" if g.procs and util < FREE_UTIL_PCT else f"u{min(util // 10, 9)}"
    expired = hit = False
    for p in g.procs:
        expired = expired or expiry_state(p.expiration, now) == "expired"
        hit = hit or bool(needle and needle in proc_owner(p).lower())
    return kind + (" x" if expired else "") + (" hit" if hit else ""), False


def tile_view(h: HostStateLike, f: Filters, now: float) -> TileView | None:
    """The host's tile, or None when the user and free filters leave nothing of it. The
    filters pick hosts; the tile shows all of the host's GPUs, the user's highlighted."""
    info = h.info
    gpus = list(info.gpus) if info is not None else []
    needle = f.user.lower()
    cells = []
    n_free = 0
    for g in gpus:
        cell, free = _cell(g, h.up, now, needle)
        cells.append(cell)
        n_free += free
    if (f.user or f.free) and not h.up:
        return None
    if f.user and not any(c.endswith(" hit") for c in cells):
        return None
    if f.free and not n_free:
        return None
    return TileView(h.name, h.up, n_free, len(gpus), cells)


def host_matches(h: HostStateLike, f: Filters) -> bool:
    """Whether ``h`` shows under the host filter (name, IP or hostname contains it)."""
    if not f.host:
        return True
    needle = f.host.lower()
    info = h.info
    names = (h.name, info.ip, info.hostname) if info is not None else (h.name,)
    return any(needle in s.lower() for s in names)


def apply_filters(view: HostView, f: Filters) -> HostView | None:
    """The host as the user and free filters show it, or None when nothing of it matches."""
    if not (f.user or f.free):
        return view
    if not view.up:
        return None
    gpus = view.gpus
    if f.free:
        gpus = [g for g in gpus if g.free]
    if f.user:
        needle = f.user.lower()
        matching = []
        for g in gpus:
            for p in g.procs:
                p.hit = needle in p.user.lower()
            if any(p.hit for p in g.procs):
                matching.append(g)
        gpus = matching
    if not gpus:
        return None
    view.gpus = gpus
    return view
