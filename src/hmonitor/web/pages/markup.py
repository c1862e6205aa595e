"""The HTML of the overview's parts: a host panel with its GPU rows, a cluster-map tile, the
summary bar and the alerts strip. Written in Python rather than in templates: they are the hot
loops of the page (8,000 GPUs at 1,000 hosts) and the fragments the live view swaps in, and they
are the one place each is written: the first page and every refresh use them.

Every text that comes from an agent or a person goes through ``escape``; the rest are numbers
and our own words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import quote

from markupsafe import Markup, escape

from hmonitor.web.pages.display import moment
from hmonitor.web.pages.views import GpuView, HostView, Summary, TileView
from hmonitor.web.reports import Alert

__all__ = [
    "MAX_ALERTS_SHOWN",
    "alerts_strip",
    "gpu_rows",
    "host_panel",
    "host_url",
    "map_tile",
    "summary_bar",
]

MAX_ALERTS_SHOWN = 4  # the rest behind "+N more": the strip stays one line
WARN = ' class="warn"'


def host_url(name: str) -> str:
    return "/host/" + quote(name, safe="")


def _chips(g: GpuView) -> str:
    chips = []
    for p in g.procs:
        exp = f'<em class="{p.exp_class}">{p.exp_text}</em>' if p.exp_class else p.exp_text
        classes = " ".join(c for c in ("hit" if p.hit else "", "hog" if p.idle else "") if c)
        cls = f' class="{classes}"' if classes else ""
        badge = f'<b class="hogb">{p.idle}</b>' if p.idle else ""
        # The overview has no title with the pids and commands (3,200 chips at 100 hosts); the
        # host page, the card and the GPU's page have them.
        title = f' title="{escape(p.title)}"' if p.title else ""
        chips.append(f"<span{cls}{title}>{badge}{escape(p.label)} ({p.mem}, {exp})</span>")
    if not chips:
        chips.append('<i class="idle">free</i>' if g.free else '<i class="noproc">no processes</i>')
    return "".join(chips)


def _mig_list(g: GpuView) -> str:
    """A MIG GPU's instances under its model: "3g.71gb 12/71 GiB", the UUID on hover."""
    if not g.mig:
        return ""
    items = "".join(f'<li title="GPU instance {m.gpu_instance}, compute instance '
                    f'{m.compute_instance} · {escape(m.uuid)}">{escape(m.profile)} '
                    f"{m.mem_text}</li>" for m in g.mig)
    return f'<ul class="mig">{items}</ul>'


def gpu_rows(gpus: Iterable[GpuView], base: str = "") -> Markup:
    """The ``<tr>`` of each GPU. Columns: index, model, utilization, memory, temperature, fan,
    processes, and a slot for a sparkline; a lost GPU's row has its index and the error. With
    ``base`` (the host page's URL) each model name links to the GPU's detail page.

    Markup is lean on purpose (columns styled by position in hmonitor.css, no class per cell):
    100 hosts x 8 GPUs x 4 processes must stay well under 500 KB.
    """
    out = []
    for g in gpus:
        if g.lost:
            out.append(f'<tr class="lost" data-gpu="{g.index}"><td>{g.index}</td>'
                       f'<td colspan="7">{escape(g.name)}</td></tr>')
            continue
        free = ' class="free"' if g.free else ""
        model = (f'<a href="{base}/gpu/{g.index}">{escape(g.model)}</a>' if base
                 else escape(g.model))
        util = (f'<meter max="100" value="{g.util}"></meter> {g.util}%' if not g.mig_enabled
                else '<span class="muted" title="NVML reports no utilization in MIG mode">'
                     "MIG</span>")
        out.append(
            f'<tr{free} data-gpu="{g.index}"><td>{g.index}</td>'
            f'<td title="{escape(g.name)}">{model}{_mig_list(g)}</td>'
            f"<td>{util}</td>"
            f'<td><meter max="{g.mem_total}" value="{g.mem_used}"></meter> {g.mem_text}</td>'
            f"<td>{g.temp}°C</td><td>{g.fan}</td><td>{_chips(g)}</td><td></td></tr>"
        )
    return Markup("\n".join(out))  # every part above is escaped or our own


def _gpu_table(h: HostView, base: str) -> str:
    return ('<table class="gpus"><thead><tr><th>#</th><th>Model</th><th>Util</th><th>Memory</th>'
            '<th>Temp</th><th>Fan</th><th>Processes</th><th></th></tr></thead>'
            f"<tbody>{gpu_rows(h.gpus, base)}</tbody></table>")


def host_panel(h: HostView) -> Markup:
    """A host's panel: state, name, address, what it is running, its disks, notes."""
    state = "up" if h.up else "down"
    base = escape(host_url(h.name))
    name = escape(h.name)
    meta = escape(h.ip or h.address)
    if h.hostname and h.hostname != h.name:
        meta += " · " + escape(h.hostname)
    head = [f'<span class="state">{state}</span><h2><a href="{base}">{name}</a></h2>']
    if h.simulated:
        head.append('<span class="tag">simulated</span>')
    if h.truncated:
        head.append('<span class="tag cut">truncated</span>')
    head.append(f'<span class="meta">{meta}</span>')
    if h.up:
        some = " some" if h.n_free else ""
        head.append(f'<span class="freec{some}">{h.n_free}/{h.n_gpus} free</span>')
    body = []
    if h.error:
        seen = "" if h.up else f" · {escape(h.seen)}"
        body.append(f'<p class="err">{escape(h.error)}{seen}</p>')
    if h.truncated:
        body.append('<p class="cut">The agent sent more than the dashboard keeps: '
                    f"{escape('; '.join(h.truncated))}.</p>")
    if h.notes:
        items = "".join(f"<li><b>{escape(n.user)}</b> {escape(n.note)}</li>" for n in h.notes)
        body.append(f'<ul class="notes">{items}</ul>')
    if h.gpus:
        table = _gpu_table(h, base)
        body.append(f'<details class="stale"><summary>last known state</summary>{table}'
                    "</details>" if h.stale else table)
    if h.disks:
        disks = "".join(
            f'<li{WARN if d.warn else ""} title="{escape(d.device)}: {d.text}">'
            f'<span>{escape(d.mount)}</span><meter max="100" value="{d.pct}"></meter> '
            f"{d.pct}%</li>" for d in h.disks)
        body.append(f'<ul class="disks">{disks}</ul>')
    return Markup(f'<article class="host {state}" data-k="{name}">'
                  f'<header class="hh">{"".join(head)}</header>{"".join(body)}</article>')


def map_tile(t: TileView) -> Markup:
    """A host as one tile of the cluster map: its name and a cell per GPU coloured by use.
    The details (owners, expiry) are the host's panel, shown on hover and on its page."""
    name = escape(t.name)
    if t.up:
        state, count = "up", f"{t.n_free}/{t.n_gpus}"
        label = f"{name}: {t.n_free} of {t.n_gpus} GPUs free"
    else:
        state, count, label = "down", "down", f"{name}: down"
    cells = "".join(f'<i class="{c}"></i>' for c in t.cells)
    some = " some" if t.up and t.n_free else ""
    return Markup(f'<a class="tile {state}" href="{escape(host_url(t.name))}" data-k="{name}" '
                  f'aria-label="{label}"><b>{name}</b><span class="fc{some}">{count}</span>'
                  f'<span class="cells">{cells}</span></a>')


def summary_bar(s: Summary, shown: int, total: int) -> Markup:
    down = " bad" if s.hosts_down else ""
    lost = (f'<span class="stat bad"><b>{s.lost}</b> lost</span>' if s.lost else "")
    return Markup(
        f'<span class="stat"><b>{s.hosts_up}</b> hosts up</span>'
        f'<span class="stat{down}"><b>{s.hosts_down}</b> down</span><span class="sep"></span>'
        f'<span class="stat"><b>{s.gpus}</b> GPUs</span>'
        f'<span class="stat good"><b>{s.free}</b> free</span>'
        f'<span class="stat"><b>{s.busy}</b> busy</span>{lost}<span class="sep"></span>'
        f'<span class="stat"><b>{len(s.users)}</b> active users</span>'
        f'<span class="showing">{shown} of {total} hosts</span>')


_KIND_LABEL = {"host_down": "down", "disk_full": "disk", "idle_hog": "idle",
               "storage": "dashboard"}


def alerts_strip(alerts: Sequence[Alert], now: float) -> Markup:
    """Hosts down, full disks, idle processes: the first few, the rest behind "+N more"."""
    if not alerts:
        return Markup("")
    items = []
    for a in alerts:
        label = f"<b>{_KIND_LABEL[a.kind]}</b> {escape(a.message)}"
        if a.kind == "idle_hog":
            href = escape(f"{host_url(a.host)}/gpu/{a.detail['gpu']}")
            items.append(f'<a class="alert {a.kind}" href="{href}">{label}</a>')
        else:
            title = (f' title="last seen {moment(a.since, now)}"'
                     if a.kind == "host_down" and a.since else "")
            items.append(f'<span class="alert {a.kind}"{title}>{label}</span>')
    n = len(items)
    head = f'<span class="alerts-head">{n} alert{"s" if n != 1 else ""}</span>'
    if n <= MAX_ALERTS_SHOWN:
        return Markup(head + "".join(items))
    # The rest in a <details>: it opens without JavaScript and stays open across refreshes.
    return Markup(head + "".join(items[:MAX_ALERTS_SHOWN])
                  + f'<details class="more"><summary>+{n - MAX_ALERTS_SHOWN} more</summary>'
                  + "".join(items[MAX_ALERTS_SHOWN:]) + "</details>")
