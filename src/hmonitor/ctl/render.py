"""What the commands print for people: tables, lines, sparklines; colour only where it helps
and only on a terminal (``NO_COLOR`` honoured, https://no-color.org)."""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from hmonitor.ctl.model import Cluster
from hmonitor.ctl.select import Pick, Placement
from hmonitor.ctl.shapes import cuda_visible_devices, gpu_state, status_json
from hmonitor.ctl.units import ago, size_text, when_text
from hmonitor.rules import expiry_state

__all__ = ["Style", "alerts_lines", "env_lines", "expiry_text", "free_lines", "notes_lines",
           "sparkline", "status_lines", "subscriptions_lines", "table", "use_color",
           "users_lines"]


def use_color(stream: TextIO, mode: str, env: Mapping[str, str]) -> bool:
    """``always``, ``never``, or ``auto``: a terminal, ``NO_COLOR`` unset or empty, not dumb."""
    if mode != "auto":
        return mode == "always"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not env.get("NO_COLOR") and env.get("TERM") != "dumb"


class Style:
    """ANSI colours, or plain text when ``enabled`` is false."""

    _CODES: Mapping[str, str] = {"red": "31", "green": "32", "yellow": "33", "bold": "1",
                                 "dim": "2"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, name: str, text: str) -> str:
        if not self.enabled or not name:
            return text
        return f"\x1b[{self._CODES[name]}m{text}\x1b[0m"


Cell = tuple[str, str]  # (text, style name or "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style,
          right: Sequence[int] = ()) -> list[str]:
    """Columns as wide as their widest text; the last column is not padded. Colour is applied
    after padding, so escape codes never skew the widths."""
    widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[Cell]) -> str:
        out = []
        for i, (text, name) in enumerate(cells):
            last = i == len(cells) - 1
            padded = text.rjust(widths[i]) if i in right else (
                text if last else text.ljust(widths[i]))
            out.append(style(name, padded))
        return "  ".join(out).rstrip()

    return [line([(h, "bold") for h in headers]), *(line(r) for r in rows)]


_STATE_STYLE = {"free": "green", "busy": "", "lost": "red", "mig": "dim"}


def status_lines(c: Cluster, style: Style, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    summary = status_json(c)
    g = summary["gpus"]
    up, down = summary["hosts_up"], summary["hosts_down"]
    extra = "".join(f", {g[k]} {k if k != 'mig' else 'in MIG mode'}"
                    for k in ("lost", "mig") if g[k])
    head = [
        f"{c.source}: {len(c.hosts)} host{'s' if len(c.hosts) != 1 else ''}, {up} up, "
        + (style("red", f"{down} down") if down else "0 down")
        + f"; GPUs: {style('green', str(g['free']) + ' free')}, {g['busy']} busy{extra}",
    ]
    rows: list[list[Cell]] = []
    for h in c.hosts:
        if h.up:
            n = {s: sum(gpu_state(x) == s for x in h.gpus) for s in ("free", "busy", "lost", "mig")}
            note = ", ".join(f"{n[k]} {k if k != 'mig' else 'MIG'}" for k in ("lost", "mig")
                             if n[k])
            if h.error:
                note = "; ".join(filter(None, [note, h.error]))
            rows.append([(h.name, ""), ("up", "green"), (str(len(h.gpus)), ""),
                         (str(n["free"]), "green" if n["free"] else ""), (str(n["busy"]), ""),
                         (note, "yellow" if h.error or n["lost"] else "")])
        else:
            seen = f"last seen {ago(now - h.last_seen)}" if h.last_seen else "never seen"
            rows.append([(h.name, ""), ("DOWN", "red"), ("-", ""), ("-", ""), ("-", ""),
                         (f"{h.error} ({seen})", "red")])
    headers = ["HOST", "STATE", "GPUS", "FREE", "BUSY", "NOTE"]
    lines = [*head, "", *table(headers, rows, style, right=(2, 3, 4))]
    if c.alerts is None:
        return lines
    lines.append("")
    if not c.alerts:
        lines.append("no alerts")
    else:
        lines.append(style("bold", f"alerts ({len(c.alerts)}):"))
        lines += [f"  {style('yellow', a.kind)}  {a.message}" for a in c.alerts]
    return lines


def free_lines(picks: Sequence[Pick], long: bool, style: Style) -> list[str]:
    if not long:
        return [f"{p.host.name}:{p.gpu.index}" for p in picks]
    rows = [[(f"{p.host.name}:{p.gpu.index}", "green"), (p.gpu.name, ""),
             (size_text(p.gpu.mem_free), ""), (size_text(p.gpu.mem_total), ""),
             (f"{p.gpu.utilization} %", ""), (f"{p.gpu.temp} °C", "")] for p in picks]
    return table(["GPU", "MODEL", "FREE", "TOTAL", "UTIL", "TEMP"], rows, style,
                 right=(2, 3, 4, 5))


def env_lines(p: Placement) -> list[str]:
    """Lines for ``eval``: the host to run on and the devices to use there. CUDA numbers GPUs
    fastest first unless told otherwise; NVML (and so the dashboard, nvidia-smi and these
    indexes) by PCI bus, hence CUDA_DEVICE_ORDER."""
    return [f"export HMONITOR_HOST={shlex.quote(p.host.name)}",
            "export CUDA_DEVICE_ORDER=PCI_BUS_ID",
            f"export CUDA_VISIBLE_DEVICES={cuda_visible_devices(p.gpus)}"]


def expiry_text(exp: int, now: float) -> Cell:
    state = expiry_state(exp, now)
    if state in ("soon", "later"):
        return time.strftime("%Y-%m-%d", time.gmtime(exp)), "yellow" if state == "soon" else ""
    return state, "red" if state == "expired" else ("dim" if state == "unknown" else "")


def _hours(x: float) -> str:
    return str(math.floor(x + 0.5)) if x >= 100 else f"{math.floor(x * 10 + 0.5) / 10:.1f}"


def users_lines(users: Sequence[Mapping[str, Any]], style: Style,
                now: float | None = None) -> list[str]:
    """``users``: rows from ``shapes.user_json``."""
    now = time.time() if now is None else now
    if not users:
        return ["nobody holds a GPU, and no usage recorded"]
    history = any(u["gpu_hours"] is not None for u in users)
    rows: list[list[Cell]] = []
    for u in users:
        held = sorted({f"{g['host']}:{g['gpu']}" for g in u["gpus_now"]})
        row: list[Cell] = [(u["user"], ""), expiry_text(u["expiration"], now),
                           (str(len(held)), ""),
                           (size_text(sum(g["mem_bytes"] for g in u["gpus_now"])), "")]
        if history:
            hours = u["gpu_hours"] or {}
            row += [(_hours(hours.get(w, 0.0)), "") for w in ("1d", "7d", "30d")]
            hogs = u["idle_hogs"] or []
            row.append((str(len(hogs)) if hogs else "", "yellow" if hogs else ""))
        row.append((" ".join(held), ""))
        rows.append(row)
    headers = ["USER", "EXPIRES", "GPUS", "MEM NOW"]
    right = [2, 3]
    if history:
        headers += ["GPU-H 1D", "7D", "30D", "IDLE"]
        right += [4, 5, 6]
    return table([*headers, "HOLDS"], rows, style, right=right)


def notes_lines(notes: Sequence[Mapping[str, Any]], style: Style) -> list[str]:
    if not notes:
        return ["no notes"]
    rows = [[(f"{n.get('user', '')}@{n.get('host', '')}", "bold"), (str(n.get("note", "")), ""),
             (_when(n.get("updated_at"), n.get("updated_by")), "dim")] for n in notes]
    return table(["WHO", "NOTE", "BY"], rows, style)


def _when(at: Any, by: Any) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if isinstance(
        at, (int, float)) else ""
    return " ".join(x for x in (str(by or ""), when) if x)


def subscriptions_lines(subs: Sequence[Mapping[str, Any]], style: Style,
                        now: float | None = None) -> list[str]:
    """``subscriptions``: the dashboard's ``/api/v1/subscriptions`` entries."""
    now = time.time() if now is None else now
    if not subs:
        return ["no subscriptions"]
    rows: list[list[Cell]] = []
    for s in subs:
        min_free = int(s.get("min_free_bytes") or 0)
        created = s.get("created")
        rows.append([(str(s.get("id", "")), "bold"),
                     (str(s.get("gpus", "")), ""), (size_text(min_free) if min_free else "-", ""),
                     (str(s.get("host") or "any host"), ""), (str(s.get("email", "")), ""),
                     (str(s.get("by", "")), "dim"),
                     (ago(now - created) if isinstance(created, int | float) else "", "dim")])
    return table(["ID", "GPUS", "FREE EACH", "HOST", "E-MAIL", "BY", "SINCE"], rows, style,
                 right=(0, 1, 2))


_ALERT_STATE_STYLE = {"firing": "red", "acked": "yellow", "silenced": "dim", "ended": "green"}


def alert_state(a: Mapping[str, Any]) -> str:
    """``firing``, ``acked`` (firing, no more reminders), ``silenced`` or ``ended``."""
    if a.get("state") == "resolved":
        return "ended"
    if a.get("silenced_until"):
        return "silenced"
    return "acked" if a.get("acked_by") else "firing"


def alerts_lines(alerts: Sequence[Mapping[str, Any]], style: Style, *, all_: bool = False,
                 now: float | None = None) -> list[str]:
    """``alerts``: the notifier's alerts as ``/api/v1/notifications`` gives them, each with the
    id that ``silence`` and ``ack`` take."""
    now = time.time() if now is None else now
    if not alerts:
        return ["no alerts this week" if all_ else "no alerts firing"]
    rows: list[list[Cell]] = []
    for a in alerts:
        state = alert_state(a)
        notes = []
        if a.get("acked_by"):
            notes.append(f"acknowledged by {a['acked_by']}")
        until = a.get("silenced_until")
        if isinstance(until, int | float):
            notes.append(f"silenced until {when_text(until, now)} by {a.get('silenced_by')}")
        ended = a.get("ended")
        if state == "ended" and isinstance(ended, int | float):
            notes.append(f"ended {ago(now - ended)}")
        started = a.get("started")
        text = str(a.get("text", "")) + (f" ({'; '.join(notes)})" if notes else "")
        rows.append([(str(a.get("id", "")), "bold"), (state, _ALERT_STATE_STYLE[state]),
                     (ago(now - started) if isinstance(started, int | float) else "", ""),
                     (text, "")])
    return table(["ID", "STATE", "SINCE", "ALERT"], rows, style)


_BLOCKS = "▁▂▃▄▅▆▇█"
_ASCII = "_.-:=+*#"


def sparkline(values: Sequence[float | None], lo: float | None = None, hi: float | None = None,
              ascii_only: bool = False) -> str:
    """One character per value, scaled from ``lo`` to ``hi`` (default: the data's range); a
    blank where there is no data."""
    blocks = _ASCII if ascii_only else _BLOCKS
    known = [v for v in values if v is not None and math.isfinite(v)]
    if not known:
        return " " * len(values)
    lo = min(known) if lo is None else lo
    hi = max(known) if hi is None else hi
    span = hi - lo
    top = len(blocks) - 1

    def char(v: float | None) -> str:
        if v is None or not math.isfinite(v):
            return " "
        if span <= 0:
            return blocks[0]
        return blocks[max(0, min(top, round((v - lo) / span * top)))]

    return "".join(char(v) for v in values)

