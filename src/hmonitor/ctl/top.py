"""``top``: a live full-screen view of every GPU, with curses.

What is on the screen is computed by ``frame`` from the data and the view (sort, filter), with
no curses in it, so it is tested without a terminal and printed as is by ``top --once``; the
curses loop only draws frames and reads keys. The data is fetched in a thread, so a slow
dashboard or agent never freezes the keys.
"""

from __future__ import annotations

import contextlib
import curses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from hmonitor.ctl.errors import CtlError
from hmonitor.ctl.model import Cluster, Gpu, Host, Source
from hmonitor.ctl.shapes import gpu_state
from hmonitor.ctl.units import GIB

__all__ = ["KEYS", "SORTS", "View", "frame", "run"]

SORTS = {"host": "host", "util": "utilization", "mem": "memory", "user": "user"}
# key -> sort; shown in the help line in this order
KEYS = {"h": "host", "u": "util", "m": "mem", "w": "user"}
HELP = "keys: u util  m memory  w user  h host  / filter  f free only  r refresh  q quit"

Line = tuple[str, str]  # (text, style: "", bold, green, red, yellow, dim, reverse)


@dataclass(frozen=True)
class View:
    sort: str = "host"
    filter: str = ""
    free_only: bool = False


@dataclass(frozen=True)
class _Row:
    order: int
    host: Host
    gpu: Gpu
    state: str
    users: str


def _rows(c: Cluster, view: View) -> list[_Row]:
    rows = [_Row(i, h, g, gpu_state(g), " ".join(g.owners))
            for i, h in enumerate(c.hosts) if h.up for g in h.gpus]
    if view.free_only:
        rows = [r for r in rows if r.state == "free"]
    if view.filter:
        needle = view.filter.lower()
        rows = [r for r in rows if needle in r.host.name.lower() or needle in r.gpu.name.lower()
                or needle in r.users.lower() or needle in r.state]
    keys: dict[str, Callable[[_Row], tuple[object, ...]]] = {
        "host": lambda r: (r.order, r.gpu.index),
        "util": lambda r: (-r.gpu.utilization, r.order, r.gpu.index),
        "mem": lambda r: (-r.gpu.mem_used, r.order, r.gpu.index),
        # Users in name order, unused GPUs last.
        "user": lambda r: (not r.users, r.users.lower(), r.order, r.gpu.index),
    }
    return sorted(rows, key=keys[view.sort])


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def frame(c: Cluster | None, view: View, width: int, *, error: str = "",
          now: float | None = None) -> list[Line]:
    """The screen, top to bottom, each line cut to ``width``."""
    now = time.time() if now is None else now
    out: list[Line] = []
    if c is None:
        out.append(("hmonitor-ctl top: " + (error or "loading..."), "red" if error else ""))
        return [(t[:width], s) for t, s in out]
    up = [h for h in c.hosts if h.up]
    down = [h for h in c.hosts if not h.up]
    states = [gpu_state(g) for h in up for g in h.gpus]
    hosts = f"{len(c.hosts)} host{'s' if len(c.hosts) != 1 else ''}"
    out.append((f"hmonitor-ctl top  {c.source}  {hosts}, {len(down)} down  "
                f"GPUs: {states.count('free')} free, {states.count('busy')} busy  "
                f"{time.strftime('%H:%M:%S', time.localtime(now))}", "bold"))
    shown = [f"sort: {SORTS[view.sort]}"]
    if view.filter:
        shown.append(f"filter: {view.filter}")
    if view.free_only:
        shown.append("free only")
    out.append(("  ".join(shown) + ("  (" + error + ")" if error else ""),
                "red" if error else ""))
    rows = _rows(c, view)
    host_w = max([4] + [len(r.host.name) for r in rows])
    model_w = max([5] + [len(r.gpu.name) for r in rows])
    out.append((f"{'HOST':<{host_w}}  GPU  {'MODEL':<{model_w}}  UTIL  {'MEM GiB':>13}  "
                f"TEMP  STATE  USERS", "reverse"))
    for r in rows:
        g = r.gpu
        mem = f"{_gib(g.mem_used)}/{_gib(g.mem_total)}"
        util = "MIG" if g.mig_enabled else f"{g.utilization}%"
        text = (f"{r.host.name:<{host_w}}  {g.index:>3}  {g.name:<{model_w}}  {util:>4}  "
                f"{mem:>13}  {g.temp:>3}C  {r.state:<5}  {r.users}")
        out.append((text, {"free": "green", "lost": "red", "mig": "dim"}.get(r.state, "")))
    if not rows:
        out.append(("(no GPU matches)" if view.filter or view.free_only else "(no GPUs)", "dim"))
    for h in down:
        out.append((f"{h.name}: DOWN, {h.error}", "red"))
    out.append((HELP, "dim"))
    return [(t[:width], s) for t, s in out]


class _Feed:
    """Fetches in a thread every ``interval`` s (or at once when asked), keeps the latest."""

    def __init__(self, source: Source, interval: float) -> None:
        self.source = source
        self.interval = interval
        self.cluster: Cluster | None = None
        self.error = ""
        self.changed = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hmonitor-top", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cluster, self.error = self.source.cluster(), ""
            except CtlError as err:
                self.error = str(err)  # keep the last good data on screen, say why it is old
            self.changed.set()
            self._wake.wait(self.interval)
            self._wake.clear()

    def refresh(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


_STYLES = {"green": curses.COLOR_GREEN, "red": curses.COLOR_RED, "yellow": curses.COLOR_YELLOW}


def _attrs(color: bool) -> dict[str, int]:
    attrs = {"": curses.A_NORMAL, "bold": curses.A_BOLD, "dim": curses.A_DIM,
             "reverse": curses.A_REVERSE}
    for i, (name, fg) in enumerate(_STYLES.items(), start=1):
        if color:
            curses.init_pair(i, fg, -1)
            attrs[name] = curses.color_pair(i)
        else:  # no colour: still tell free and broken apart
            attrs[name] = curses.A_BOLD if name != "yellow" else curses.A_NORMAL
    return attrs


def _draw(scr: curses.window, lines: list[Line], attrs: dict[str, int], prompt: str | None
          ) -> None:
    height, width = scr.getmaxyx()
    scr.erase()
    body = lines if prompt is None else lines[:-1]
    # A terminal shrunk to a few cells refuses some writes: show what fits, never crash.
    with contextlib.suppress(curses.error):
        for y, (text, style) in enumerate(body[: height - 1]):
            scr.addnstr(y, 0, text, width - 1, attrs.get(style, 0))
        if prompt is not None:
            scr.addnstr(min(len(body), height - 1), 0, f"filter: {prompt}_", width - 1,
                        curses.A_BOLD)
    scr.refresh()


def _loop(scr: curses.window, feed: _Feed, view: View, color: bool) -> None:
    with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
        curses.curs_set(0)
    if color:
        curses.start_color()
        curses.use_default_colors()
    attrs = _attrs(color and curses.has_colors())
    scr.timeout(100)
    prompt: str | None = None  # the filter being typed, while typing
    while True:
        feed.changed.clear()
        _draw(scr, frame(feed.cluster, view, scr.getmaxyx()[1], error=feed.error), attrs,
              prompt)
        key = scr.getch()
        if key == -1:
            if not feed.changed.is_set():
                feed.changed.wait(0.9)  # redraw at least each second (the clock)
            continue
        if prompt is not None:
            if key in (10, 13, curses.KEY_ENTER):
                view, prompt = replace(view, filter=prompt.strip()), None
            elif key == 27:  # Esc: leave the filter as it was
                prompt = None
            elif key in (curses.KEY_BACKSPACE, 127, 8):
                prompt = prompt[:-1]
            elif 32 <= key < 127:
                prompt += chr(key)
            continue
        char = chr(key) if 0 <= key < 256 else ""
        if char in ("q", "Q"):
            return
        if char in KEYS:
            view = replace(view, sort=KEYS[char])
        elif char == "/":
            prompt = view.filter
        elif char == "f":
            view = replace(view, free_only=not view.free_only)
        elif char == "r":
            feed.refresh()
        elif key == 27:  # Esc clears the filter
            view = replace(view, filter="")


def run(source: Source, interval: float, color: bool, view: View = View()) -> None:
    """Until q. Ctrl-C ends it as well (KeyboardInterrupt, after curses restored the screen)."""
    os.environ.setdefault("ESCDELAY", "25")  # Esc answers at once, not after a second
    feed = _Feed(source, interval)
    try:
        curses.wrapper(_loop, feed, view, color)
    finally:
        feed.stop()
