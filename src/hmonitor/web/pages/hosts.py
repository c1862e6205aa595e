"""A host's page (its panel and the GPUs its history knows), its card (the panel alone, shown
over the cluster map), and a GPU's detail page (now, and charts drawn from the JSON API)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flask import Blueprint, Response, render_template, request
from flask.typing import ResponseReturnValue

from hmonitor._pb import hm_pb2
from hmonitor.web.history.windows import DEFAULT_DETAIL_WINDOW, DETAIL_WINDOWS
from hmonitor.web.pages.display import expiry, gpu_facts, host_facts, moment, size_text
from hmonitor.web.pages.markup import host_panel
from hmonitor.web.pages.views import GpuView, gpu_view, hogs_by_gpu, host_view
from hmonitor.web.state import get_state
from hmonitor.wire import container_label, is_lost, proc_label, proc_owner

# The charts of the detail page: (id, title, metric for the CSV link or "" for none).
DETAIL_CHARTS = (
    ("util", "Utilization", "util"),
    ("mem", "Memory", "mem"),
    ("temp", "Temperature", "temp"),
    ("procs", "Memory by user", ""),
)


@dataclass(slots=True)
class ProcRowView:
    user: str  # the owner, for the user filter's link
    label: str  # "alice · job 81234", "container 3f2a… (docker)"
    pid: int
    command: str
    cmdline: str  # "" when the agent sends none (--no-cmdline, or an older agent)
    mem: str
    util: int
    exp_text: str
    exp_class: str
    started: str  # "" when unknown
    job: str  # "81234 (step batch)"
    container: str  # "container 3f2a… (docker) · pod 7c1d…"
    mig: str  # "GPU instance 1, compute instance 0"


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
    facts: list[tuple[str, str]]  # UUID, PCI, power, clocks, throttling, ECC ...


def _history_gpus(host: str) -> dict[int, str]:
    """GPU index -> model name of every GPU of ``host`` the history has seen."""
    return {idx: name for h, idx, name in get_state().backend.gpus() if h == host}


def gpu_detail_model(name: str, index: int, now: float) -> GpuDetail | None:
    """The detail page's server-rendered part; None for a GPU neither polled nor in history."""
    h = get_state().poller.host(name)
    info = h.info if h is not None else None
    live = next((g for g in info.gpus if g.id == index), None) if info is not None else None
    past = _history_gpus(name) if live is None else {}
    if live is None and index not in past:
        return None
    view = gpu_view(live, {}, now) if live is not None else None
    procs = []
    if live is not None and not is_lost(live.name):
        for p in sorted(live.procs, key=lambda p: (-p.mem, p.pid)):
            procs.append(_proc_row(p, now))
    seen = ""
    if h is not None:
        seen = "never seen" if h.last_seen is None else f"last seen {moment(h.last_seen, now)}"
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
        facts=gpu_facts(live) if live is not None and not is_lost(live.name) else [],
    )


def _proc_row(p: hm_pb2.ProcInfo, now: float) -> ProcRowView:
    text, cls = expiry(p.expiration, now)
    job = box = mig = ""
    if p.HasField("job"):
        job = f"{p.job.id} (step {p.job.step})" if p.job.step else str(p.job.id)
    if p.HasField("container"):
        c = p.container
        box = container_label(c) + (f" · pod {c.pod}" if c.pod else "")
        if c.host_user:
            box += f" · owned by {c.host_user}"
    if p.HasField("mig"):
        mig = f"GPU instance {p.mig.gpu_instance}, compute instance {p.mig.compute_instance}"
    return ProcRowView(proc_owner(p), proc_label(p), p.pid, p.basename, p.cmdline,
                       size_text(p.mem), p.utilization, text, cls,
                       moment(p.start_time, now) if p.start_time else "", job, box, mig)


def _not_found(message: str) -> ResponseReturnValue:
    return render_template("error.html", title="Not found", message=message), 404


def _panel(name: str) -> str | None:
    state = get_state()
    h = state.poller.host(name)
    if h is None:
        return None
    now = time.time()
    notes = state.notes.notes(host=name)
    return str(host_panel(host_view(h, notes, now, hogs=hogs_by_gpu(state.idle_hogs(now)),
                                    detail=True)))


def add_routes(bp: Blueprint) -> None:
    @bp.get("/host/<path:name>")
    def host(name: str) -> ResponseReturnValue:
        panel = _panel(name)
        past = _history_gpus(name)
        if panel is None and not past:
            return _not_found(f"There is no host {name!r}: it is not in settings.py and has no "
                              "history.")
        h = get_state().poller.host(name)
        facts = host_facts(h.info) if h is not None and h.info is not None else []
        return render_template("host.html", name=name, panel=panel, past=sorted(past.items()),
                               facts=facts)

    @bp.get("/card/<path:name>")
    def card(name: str) -> ResponseReturnValue:
        """The host's panel alone: the cluster map shows it on hover."""
        panel = _panel(name)
        if panel is None:
            return Response(f"no host {name!r}", status=404, mimetype="text/plain")
        return Response(panel, mimetype="text/html")

    @bp.get("/host/<path:name>/gpu/<int:index>")
    def gpu(name: str, index: int) -> ResponseReturnValue:
        model = gpu_detail_model(name, index, time.time())
        if model is None:
            return _not_found(f"There is no GPU {index} on {name!r}, now or in the history.")
        window = request.args.get("window", DEFAULT_DETAIL_WINDOW)
        if window not in DETAIL_WINDOWS:
            window = DEFAULT_DETAIL_WINDOW
        return render_template("gpu.html", d=model, window=window,
                               windows={k: int(v) for k, v in DETAIL_WINDOWS.items()},
                               charts=DETAIL_CHARTS)
