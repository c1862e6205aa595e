"""The overview's live view: every part of the page rendered once on the server, and a refresh
that sends only the parts whose HTML changed.

The page is made of units, each an element with a ``data-k`` key: a host panel or a host's tile
of the cluster map, plus the summary bar and the alerts strip. Per view (the filters and the
mode), ``LiveView`` keeps each unit's HTML and the generation in which it last changed, and the
order of the units. A refresh names the generation the browser has (``since``); the answer holds
the units changed after it, and the order when that changed. A host is rendered again only when
the poller has a new state for it, or its notes or idle processes changed; an unchanged render is
not sent. So a refresh of 1,000 hosts where a tenth of the GPUs changed moves those tiles only.

No Flask here: the pages hand in the hosts, notes and idle processes.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup

from hmonitor.web.history import IdleHog
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.notes import Note
from hmonitor.web.pages.markup import alerts_strip, host_panel, map_tile, summary_bar
from hmonitor.web.pages.views import (
    Filters,
    HostCounts,
    apply_filters,
    hogs_by_gpu,
    host_counts,
    host_matches,
    host_view,
    summarize,
    tile_view,
)
from hmonitor.web.reports import Alert

__all__ = ["PANELS_UP_TO", "LiveAnswer", "LiveView", "Overview"]

PANELS_UP_TO = 40  # in the "auto" view, more hosts than this show as the cluster map
_VIEWS_KEPT = 16  # views (filter combinations) whose units are kept between refreshes


def _same(a: HostStateLike, b: HostStateLike) -> bool:
    """Whether a unit made from ``a`` needs no new render for ``b``. The poller makes a new
    state every round; on a quiet host its answer is the same (one C-level compare)."""
    if a is b:
        return True
    return (a.up == b.up and a.error == b.error and a.truncated == b.truncated
            and (a.up or a.last_seen == b.last_seen)
            and (a.info is b.info or a.info == b.info))


@dataclass
class _Unit:
    state: HostStateLike  # the host's state the HTML was made from
    inputs: tuple[object, ...]  # notes, idle processes, day: what else the HTML depends on
    html: Markup | None  # None: the host does not show under these filters
    gen: int
    counts: HostCounts  # what the host adds to the summary


@dataclass
class LiveAnswer:
    token: str  # what the browser sends back as `since`
    mode: str  # "panels" or "map"
    order: list[str] | None  # the unit keys in page order, when changed since `since`
    units: dict[str, str]  # key -> HTML, changed since `since`
    summary: str | None
    alerts: str | None
    shown: int
    total: int


@dataclass
class _View:
    filters: Filters
    mode: str = ""
    units: dict[str, _Unit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    order_gen: int = 0
    summary: str = ""
    summary_gen: int = 0
    alerts: str = ""
    alerts_gen: int = 0
    changed: bool = True  # a unit changed since the summary was made
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Overview:
    """What a refresh is made from: the poller's hosts, the notes, the idle processes, alerts."""

    hosts: Sequence[HostStateLike]
    notes: Mapping[str, Sequence[Note]]
    hogs: Sequence[IdleHog]
    alerts: Sequence[Alert]
    now: float


class LiveView:
    """Units per view, with the generation each last changed in; see the module docstring."""

    def __init__(self, panels_up_to: int = PANELS_UP_TO) -> None:
        self.panels_up_to = panels_up_to
        self._boot = os.urandom(4).hex()  # tokens of an earlier process mean "send everything"
        self._gen = itertools.count(1)
        self._lock = threading.Lock()
        self._views: OrderedDict[Filters, _View] = OrderedDict()

    def refresh(self, filters: Filters, since: str, make: Callable[[], Overview]) -> LiveAnswer:
        """The units of the view ``filters`` changed after ``since`` ("" for all)."""
        with self._lock:
            view = self._views.get(filters)
            if view is None:
                view = self._views[filters] = _View(filters)
                while len(self._views) > _VIEWS_KEPT:
                    self._views.popitem(last=False)
            self._views.move_to_end(filters)
        with view.lock:
            overview = make()
            gen = self._update(view, overview)
            after = self._since(since)
            return LiveAnswer(
                token=f"{self._boot}.{gen}",
                mode=view.mode,
                order=list(view.order) if view.order_gen > after else None,
                units={k: str(u.html) for k, u in view.units.items()
                       if u.gen > after and u.html is not None},
                summary=view.summary if view.summary_gen > after else None,
                alerts=view.alerts if view.alerts_gen > after else None,
                shown=len(view.order),
                total=len(overview.hosts),
            )

    def _since(self, token: str) -> int:
        boot, _, gen = token.partition(".")
        return int(gen) if boot == self._boot and gen.isdigit() else 0

    def _update(self, view: _View, o: Overview) -> int:
        """Renders what changed; returns this update's generation."""
        f = view.filters
        hosts = [h for h in o.hosts if host_matches(h, f)]
        mode = f.view if f.view != "auto" else (
            "panels" if len(hosts) <= self.panels_up_to else "map")
        with self._lock:
            gen = next(self._gen)
        if mode != view.mode:  # everything is rendered anew
            view.mode, view.units = mode, {}
        hogs = hogs_by_gpu(o.hogs)
        hogs_of: dict[str, list[object]] = {}
        for (host, gpu), pids in sorted(hogs.items()):
            hogs_of.setdefault(host, []).append((gpu, tuple(pids.items())))
        day = time.localtime(o.now)[:3]  # "last seen" texts name the day when it is not today
        expiries: dict[int, tuple[str, str]] = {}
        order = []
        units = {}
        for h in hosts:
            notes = tuple(o.notes.get(h.name, ()))
            inputs = (notes, tuple(hogs_of.get(h.name, ())), day)
            old = view.units.get(h.name)
            if old is not None and old.inputs == inputs and _same(old.state, h):
                unit = old
            else:
                html = self._render(h, f, mode, notes, o.now, expiries, hogs)
                unit = _Unit(h, inputs, html, gen if old is None or old.html != html else old.gen,
                             host_counts(h))
                view.changed = True
            units[h.name] = unit
            if unit.html is not None:
                order.append(h.name)
        # A unit that comes (back) into view had no HTML before, so it counts as changed.
        if len(units) != len(view.units):
            view.changed = True
        view.units = units
        if order != view.order:
            view.order, view.order_gen = order, gen
        if view.changed:  # the summary costs a pass over every host: only when needed
            counts = summarize(u.counts for u in units.values())
            summary = str(summary_bar(counts, len(order), len(o.hosts)))
            if summary != view.summary:
                view.summary, view.summary_gen = summary, gen
            view.changed = False
        alerts = str(alerts_strip(o.alerts, o.now))
        if alerts != view.alerts:
            view.alerts, view.alerts_gen = alerts, gen
        return gen

    @staticmethod
    def _render(
        h: HostStateLike, f: Filters, mode: str, notes: Sequence[Note], now: float,
        expiries: dict[int, tuple[str, str]], hogs: Mapping[tuple[str, int], Mapping[int, float]],
    ) -> Markup | None:
        """The host's unit in ``mode``, or None when the filters leave nothing of it."""
        if mode == "map":
            tile = tile_view(h, f, now)
            return None if tile is None else map_tile(tile)
        shown = apply_filters(host_view(h, notes, now, expiries, hogs), f)
        return None if shown is None else host_panel(shown)
