"""HTML pages: the overview, notes and the notice board, reload of servers; the host, GPU
detail and users pages over the history (their charts are drawn in the browser from the JSON API:
static/charts.js, gpu.js, overview-history.js).

The overview is rendered here for the first paint (it works without JavaScript); ``overview.js``
then keeps it live from ``/api/v1/hosts`` with the same markup and the same rules (free GPU,
filters, expiry texts) — change one, change the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape

from hmonitor._pb import hm_pb2
from hmonitor.web import get_state
from hmonitor.web.auth import client_label, is_api_request
from hmonitor.web.history_api import get_history, users_report
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.notes import Note, NoteError, WriteFailed
from hmonitor.web.owner import owner_label
from hmonitor.web.settings import SettingsError

GIB = 1 << 30
MIB = 1 << 20
# A GPU is free when nobody runs anything on it and it is idle.
FREE_UTIL_PCT = 5
FREE_MEM_PCT = 5
DISK_WARN_PCT = 90
EXPIRY_SOON_S = 14 * 86400
LOST_PREFIX = "GPU lost:"
SIMULATED_PREFIX = "Simulated "

bp = Blueprint("views", __name__)


# --- view model ---------------------------------------------------------------------------------


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def r1(x: float) -> str:
    """One decimal, rounded half up like overview.js (format() rounds half to even)."""
    return f"{math.floor(x * 10 + 0.5) / 10:.1f}"


def r0(x: float) -> str:
    return str(math.floor(x + 0.5))


def size_text(n: int) -> str:
    """Memory of a process or disk: whole GiB from 10 GiB up, where a decimal is noise."""
    if n >= 10 * GIB:
        return f"{r0(n / GIB)} GiB"
    if n >= GIB:
        return f"{r1(n / GIB)} GiB"
    return f"{n // MIB} MiB"


def expiry(exp: int, now: float) -> tuple[str, str]:
    """The expiry as (text, css class or "" for a plain date): 0 unknown, 1 never, else a UTC
    date (shadow counts days)."""
    if exp == 0:
        return "unknown", "exp-unknown"
    if exp == 1:
        return "never", "exp-never"
    if exp <= now:
        return "expired", "exp-expired"
    text = time.strftime("%Y-%m-%d", time.gmtime(exp))
    return text, ("exp-soon" if exp - now < EXPIRY_SOON_S else "")


def user_label(p: hm_pb2.ProcInfo) -> str:
    return owner_label(p.username, p.uid)


def gpu_is_lost(g: hm_pb2.GPUInfo) -> bool:
    return g.name.startswith(LOST_PREFIX)


def gpu_is_free(g: hm_pb2.GPUInfo) -> bool:
    if gpu_is_lost(g) or len(g.procs) or g.utilization >= FREE_UTIL_PCT:
        return False
    return g.mem_total > 0 and g.mem_used * 100 < FREE_MEM_PCT * g.mem_total


def short_model(name: str) -> str:
    for prefix in ("Simulated ", "NVIDIA ", "GeForce ", "Tesla "):
        name = name.removeprefix(prefix)
    return name


@dataclass(slots=True)
class ProcView:
    user: str
    label: str
    mem: str
    exp_text: str
    exp_class: str
    hit: bool = False  # matches the user filter: highlighted


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


@dataclass(frozen=True)
class Filters:
    user: str = ""
    host: str = ""
    free: bool = False

    @classmethod
    def from_args(cls, args: Any) -> Filters:
        return cls(
            user=str(args.get("user", "")).strip()[:64],
            host=str(args.get("host", "")).strip()[:128],
            free=str(args.get("free", "")) in ("1", "on", "true"),
        )


def _procs_view(
    procs: Iterable[hm_pb2.ProcInfo], expiries: dict[int, tuple[str, str]], now: float
) -> list[ProcView]:
    """One entry per user on the GPU, with that user's processes summed.

    Hot path (100 hosts x 8 GPUs x 4 processes per page): each protobuf field is read once,
    and expiry texts are shared through ``expiries`` across the page.
    """
    by_user: dict[str, list[int]] = {}  # user -> [memory, processes, expiration]
    for p in procs:
        user = owner_label(p.username, p.uid)
        entry = by_user.get(user)
        if entry is None:
            by_user[user] = [p.mem, 1, p.expiration]
        else:
            entry[0] += p.mem
            entry[1] += 1
    out = []
    for user, (mem, count, exp) in by_user.items():
        texts = expiries.get(exp)
        if texts is None:
            texts = expiries[exp] = expiry(exp, now)
        out.append(ProcView(user, f"{user} \u00d7{count}" if count > 1 else user, size_text(mem),
                            texts[0], texts[1]))
    return out


def _gpu_view(g: hm_pb2.GPUInfo, expiries: dict[int, tuple[str, str]], now: float) -> GpuView:
    name = g.name
    lost = name.startswith(LOST_PREFIX)
    used, total = g.mem_used / GIB, g.mem_total / GIB
    fan = g.fanspeed
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
        procs=[] if lost else _procs_view(g.procs, expiries, now),
    )


def percent(part: int, whole: int) -> int:
    """Rounded half up, as overview.js does (Python's round() rounds half to even)."""
    return int(part * 100 / whole + 0.5) if whole else 0


def _disk_view(d: hm_pb2.DiskInfo) -> DiskView:
    pct = percent(d.used, d.total)
    return DiskView(
        mount=d.mount or d.device,
        device=d.device,
        pct=pct,
        text=f"{size_text(d.used)} of {size_text(d.total)}",
        warn=pct >= DISK_WARN_PCT,
    )


def gpu_rows(gpus: Iterable[GpuView], host_url: str = "") -> Markup:
    """The ``<tr>`` of each GPU, as overview.js builds them too.

    Written here rather than in the template: it is the page's hot loop (800 rows, 3,200
    processes), and Jinja spent about twice as long on it. Every text that comes from an agent
    (model name, user names) goes through ``escape``; the rest are numbers and our own words.
    Markup is lean on purpose (columns styled by position in hmonitor.css, no class per cell):
    100 hosts x 8 GPUs x 4 processes must stay well under 500 KB. Columns: index, model,
    utilization, memory, temperature, fan, processes, and an empty slot for a sparkline; a lost
    GPU's row has two cells, its index and the error. With ``host_url`` (the host page's URL,
    built once per host rather than a url_for per row) each model name links to the GPU's
    detail page.
    """
    out = []
    base = escape(host_url)
    for g in gpus:
        if g.lost:
            out.append(f'<tr class="lost" data-gpu="{g.index}"><td>{g.index}</td>'
                       f'<td colspan="6">{escape(g.name)}</td></tr>')
            continue
        chips = []
        for p in g.procs:
            exp = (f'<em class="{p.exp_class}">{p.exp_text}</em>' if p.exp_class
                   else p.exp_text)
            hit = ' class="hit"' if p.hit else ""
            chips.append(f"<span{hit}>{escape(p.label)} ({p.mem}, {exp})</span>")
        if not chips:
            chips.append('<i class="idle">free</i>' if g.free
                         else '<i class="noproc">no processes</i>')
        free = ' class="free"' if g.free else ""
        model = (f'<a href="{base}/gpu/{g.index}">{escape(g.model)}</a>' if base
                 else escape(g.model))
        out.append(
            f'<tr{free} data-gpu="{g.index}"><td>{g.index}</td>'
            f'<td title="{escape(g.name)}">{model}</td>'
            f'<td><meter max="100" value="{g.util}"></meter> {g.util}%</td>'
            f'<td><meter max="{g.mem_total}" value="{g.mem_used}"></meter> {g.mem_text}</td>'
            f"<td>{g.temp}°C</td><td>{g.fan}</td><td>{''.join(chips)}</td><td></td></tr>"
        )
    return Markup("\n".join(out))  # every part above is escaped or our own


def host_view(
    h: HostStateLike, notes: Sequence[Note], now: float,
    expiries: dict[int, tuple[str, str]] | None = None,
) -> HostView:
    info = h.info
    exp_cache = {} if expiries is None else expiries
    gpus = [_gpu_view(g, exp_cache, now) for g in info.gpus] if info is not None else []
    seen = "never seen" if h.last_seen is None else f"last seen {ago(now - h.last_seen)}"
    return HostView(
        name=h.name,
        address=h.address,
        up=h.up,
        error=h.error,
        seen=seen,
        ip=info.ip if info is not None else "",
        hostname=info.hostname if info is not None else "",
        simulated=info is not None and any(g.name.startswith(SIMULATED_PREFIX)
                                           for g in info.gpus),
        stale=not h.up and info is not None,
        gpus=gpus,
        disks=[_disk_view(d) for d in info.disks] if info is not None else [],
        notes=list(notes),
        truncated=h.truncated,
        n_gpus=len(gpus),
        n_free=sum(1 for g in gpus if g.free) if h.up else 0,
    )


def summarize(hosts: Iterable[HostStateLike]) -> Summary:
    s = Summary()
    for h in hosts:
        if not h.up:
            s.hosts_down += 1
            continue
        s.hosts_up += 1
        if h.info is None:
            continue
        for g in h.info.gpus:
            s.gpus += 1
            if gpu_is_lost(g):
                s.lost += 1
            elif gpu_is_free(g):
                s.free += 1
            else:
                s.busy += 1
            for p in g.procs:
                s.users.add(user_label(p))
    return s


def apply_filters(view: HostView, f: Filters) -> HostView | None:
    """The host as the filters show it, or None when nothing of it matches."""
    if f.host:
        needle = f.host.lower()
        if not any(needle in s.lower() for s in (view.name, view.ip, view.hostname)):
            return None
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


def overview_model(filters: Filters) -> dict[str, Any]:
    state = get_state()
    now = time.time()
    hosts = state.poller.hosts()
    notes_by_host: dict[str, list[Note]] = {}
    for n in state.notes.notes():
        notes_by_host.setdefault(n.host, []).append(n)
    views = []
    expiries: dict[int, tuple[str, str]] = {}
    for h in hosts:
        v = apply_filters(host_view(h, notes_by_host.get(h.name, ()), now, expiries), filters)
        if v is not None:
            views.append(v)
    return {
        "hosts": views,
        "total_hosts": len(hosts),
        "summary": summarize(hosts),
        "filters": filters,
    }


# --- history pages: host, GPU detail, users ---------------------------------------------------

# The detail page's windows (label -> seconds); the API takes seconds for any of them.
DETAIL_WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "10d": 10 * 86400,
                  "30d": 30 * 86400, "1y": 365 * 86400}
DEFAULT_DETAIL_WINDOW = "24h"
# The overview's sparkline windows (the ones /api/v1/sparklines serves).
SPARK_WINDOWS = ("1h", "24h", "10d")
DEFAULT_SPARK_WINDOW = "24h"
# The charts of the detail page: (id, title, metric for the CSV link or "" for none).
DETAIL_CHARTS = (
    ("util", "Utilization", "util"),
    ("mem", "Memory", "mem"),
    ("temp", "Temperature", "temp"),
    ("procs", "Memory by user", ""),
)


@dataclass(slots=True)
class ProcRowView:
    user: str
    pid: int
    command: str
    mem: str
    util: int
    exp_text: str
    exp_class: str


@dataclass(slots=True)
class GpuDetail:
    host: str
    index: int
    host_up: bool
    host_known: bool  # still in settings (else: history only)
    host_error: str
    seen: str
    name: str  # the GPU's full model name, "" when never seen
    gpu: GpuView | None  # the current values; None when the host does not report this GPU
    stale: bool  # gpu holds the last known values of a host that is down
    procs: list[ProcRowView]


def _history_gpus(host: str) -> dict[int, str]:
    """GPU index -> model name of every GPU of ``host`` the history has seen."""
    return {idx: name for h, idx, name in get_history().store.gpus() if h == host}


def gpu_detail_model(name: str, index: int, now: float) -> GpuDetail | None:
    """The detail page's server-rendered part; None for a GPU neither polled nor in history."""
    h = get_state().poller.host(name)
    info = h.info if h is not None else None
    live = next((g for g in info.gpus if g.id == index), None) if info is not None else None
    past = _history_gpus(name) if live is None else {}
    if live is None and index not in past:
        return None
    view = _gpu_view(live, {}, now) if live is not None else None
    procs = []
    if live is not None and not gpu_is_lost(live):
        for p in sorted(live.procs, key=lambda p: (-p.mem, p.pid)):
            text, cls = expiry(p.expiration, now)
            procs.append(ProcRowView(user_label(p), p.pid, p.basename, size_text(p.mem),
                                     p.utilization, text, cls))
    seen = ""
    if h is not None:
        seen = "never seen" if h.last_seen is None else f"last seen {ago(now - h.last_seen)}"
    return GpuDetail(
        host=name,
        index=index,
        host_up=h is not None and h.up,
        host_known=h is not None,
        host_error=h.error if h is not None else "",
        seen=seen,
        name=live.name if live is not None else past.get(index, ""),
        gpu=view,
        stale=view is not None and h is not None and not h.up,
        procs=procs,
    )


@dataclass(slots=True)
class UserRow:
    user: str
    gpus: list[tuple[str, int, str, str]]  # host, GPU, memory text, title (pids and commands)
    mem_now: int  # bytes held now, for sorting
    exp_text: str
    exp_class: str
    exp_sort: int  # sorts unknown < expired < dates < never
    usage: dict[str, tuple[float, float]]  # window -> (GPU-hours, GiB-hours)
    hogs: list[str]  # one text per idle process


def _hours(x: float) -> str:
    """GPU-hours as the users page shows them: one decimal, whole hours from 100 up."""
    return r0(x) if x >= 100 else r1(x)


def users_model(now: float) -> dict[str, Any]:
    """The users page, from the same report as ``GET /api/v1/users``."""
    report = users_report(now)
    windows = list(report[0]["usage"]) if report else ["1d", "7d", "30d"]
    rows = []
    for u in report:
        held: dict[tuple[str, int], list[Any]] = {}
        for g in u["gpus_now"]:
            entry = held.setdefault((g["host"], g["gpu"]), [0, []])
            entry[0] += g["mem"]
            entry[1].append(f"pid {g['pid']} {g['basename']}")
        exp = int(u["expiration"])
        text, cls = expiry(exp, now)
        rows.append(UserRow(
            user=u["user"],
            gpus=[(host, gpu, size_text(mem), ", ".join(titles))
                  for (host, gpu), (mem, titles) in sorted(held.items())],
            mem_now=sum(mem for mem, _ in held.values()),
            exp_text=text,
            exp_class=cls,
            exp_sort=-1 if exp == 0 else (2**62 if exp == 1 else exp),
            usage={w: (float(u["usage"][w]["gpu_hours"]),
                       float(u["usage"][w]["gpu_mem_gib_hours"])) for w in windows},
            hogs=[f"idle {idle_text(h['idle_seconds'])} on {h['host']}:{h['gpu']} "
                  f"({h['basename']}, pid {h['pid']}, {size_text(h['mem'])})"
                  for h in u["idle_hogs"]],
        ))
    return {"rows": rows, "windows": windows, "now": now,
            "n_holding": sum(1 for r in rows if r.gpus),
            "n_hogs": sum(len(r.hogs) for r in rows)}


def idle_text(seconds: float) -> str:
    """How long a process has been idle, as its badge says it (overview-history.js too)."""
    s = max(0, int(seconds))
    return f"{s // 3600}h" if s >= 3600 else f"{s // 60}m"


# --- pages --------------------------------------------------------------------------------------


@bp.app_context_processor
def _common() -> dict[str, Any]:
    return {"notice": get_state().notes.notice(), "free_util": FREE_UTIL_PCT,
            "free_mem": FREE_MEM_PCT, "disk_warn": DISK_WARN_PCT}


@bp.route("/")
def overview() -> ResponseReturnValue:
    window = request.args.get("window", "")
    return render_template("overview.html", **overview_model(Filters.from_args(request.args)),
                           spark_windows=SPARK_WINDOWS,
                           spark_window=window if window in SPARK_WINDOWS
                           else DEFAULT_SPARK_WINDOW)


@bp.route("/host/<path:name>")
def host_page(name: str) -> ResponseReturnValue:
    h = get_state().poller.host(name)
    past = _history_gpus(name)
    if h is None and not past:
        return _not_found(f"There is no host {name!r}: it is not in settings.py and has no "
                          "history.")
    notes = [n for n in get_state().notes.notes() if n.host == name]
    return render_template(
        "host.html", name=name, view=host_view(h, notes, time.time()) if h is not None else None,
        past=sorted(past.items()),
    )


@bp.route("/host/<path:name>/gpu/<int:index>")
def gpu_detail(name: str, index: int) -> ResponseReturnValue:
    model = gpu_detail_model(name, index, time.time())
    if model is None:
        return _not_found(f"There is no GPU {index} on {name!r}, now or in the history.")
    window = request.args.get("window", DEFAULT_DETAIL_WINDOW)
    if window not in DETAIL_WINDOWS:
        window = DEFAULT_DETAIL_WINDOW
    return render_template("gpu.html", d=model, window=window, windows=DETAIL_WINDOWS,
                           charts=DETAIL_CHARTS)


@bp.route("/users")
def users() -> ResponseReturnValue:
    return render_template("users.html", **users_model(time.time()))


def _not_found(message: str) -> ResponseReturnValue:
    return render_template("error.html", title="Not found", message=message), 404


@bp.route("/notes")
def notes() -> ResponseReturnValue:
    state = get_state()
    edit_user = request.args.get("user", "")
    edit_host = request.args.get("host", "")
    editing = state.notes.get(edit_user, edit_host) if edit_user and edit_host else None
    return render_template(
        "notes.html",
        notes=state.notes.notes(),
        editing=editing,
        form_user=edit_user,
        form_host=edit_host,
        host_names=[h.name for h in state.poller.hosts()],
        settings_path=state.settings.path,
    )


@bp.route("/notes", methods=["POST"])
def save_note() -> ResponseReturnValue:
    f = request.form
    try:
        note = get_state().notes.put(
            f.get("user", ""), f.get("host", ""), f.get("note", ""), by=client_label()
        )
    except NoteError as err:
        flash(f"Note not saved: {err}.", "error")
        return redirect(url_for("views.notes", user=f.get("user", ""), host=f.get("host", "")))
    flash(f"Saved the note for {note.user}@{note.host}.", "ok")
    return redirect(url_for("views.notes"))


@bp.route("/notes/delete", methods=["POST"])
def delete_note() -> ResponseReturnValue:
    user, host = request.form.get("user", ""), request.form.get("host", "")
    if get_state().notes.delete(user, host):
        flash(f"Removed the note for {user}@{host}.", "ok")
    else:
        flash(f"There was no note for {user}@{host}.", "error")
    return redirect(url_for("views.notes"))


@bp.route("/notice", methods=["GET"])
def notice_form() -> ResponseReturnValue:
    return redirect(url_for("views.notes", _anchor="notice-form"))


@bp.route("/notice", methods=["POST"])
def save_notice() -> ResponseReturnValue:
    try:
        saved = get_state().notes.set_notice(request.form.get("notice", ""), by=client_label())
    except NoteError as err:
        flash(f"Notice not saved: {err}.", "error")
    else:
        flash("Notice saved." if saved.text else "Notice cleared.", "ok")
    return redirect(url_for("views.notes", _anchor="notice-form"))


@bp.route("/reload", methods=["POST"])
def reload_servers() -> ResponseReturnValue:
    try:
        result = get_state().reload_servers()
    except SettingsError as err:
        flash(f"settings.py not reloaded: {err}", "error")
    else:
        flash(f"Reloaded servers: {result.summary()}.", "ok")
    return redirect(url_for("views.notes", _anchor="admin"))


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _write_failed(err: WriteFailed) -> ResponseReturnValue:
    """A save the disk refused (full, read-only): 507 with the one-line reason, page or API."""
    if is_api_request():
        return jsonify(error=f"not saved: {err}"), 507
    return render_template("error.html", title="Not saved", message=f"Nothing was changed: "
                           f"{err}. Pages keep working; try again once this is fixed."), 507


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(WriteFailed, _write_failed)
    app.add_template_filter(when)
    app.add_template_global(gpu_rows)
    app.add_template_global(_hours, "hours")
