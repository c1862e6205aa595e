"""``GET /metrics``: the dashboard's Prometheus exposition (docs/prometheus.md).

Per host (``host`` = its name in settings.py): ``hmonitor_host_up``, the last good call's round
trip, when it was last seen, and for a host with an error ``hmonitor_host_error{kind}`` = 1; then,
for labs that scrape only the dashboard, every up host's GPU, user and disk families from the
poller's last snapshot (``hmonitor.metricfamilies``), each series with a ``host`` label. No DCGM
family: its ``hostname`` and the target's labels would clash, and Grafana 12239 expects one
target per host; scrape the agents for it.

The text is made once per polling round, right after it while anyone scrapes, however many
Prometheus servers scrape in between (at 1,000 hosts x 8 GPUs x 6 processes it is ~11 MB and about
half a second of work), and gzipped once too when a scraper accepts it (Prometheus does: ~0.6 MB
on the wire). The gate
(``web/auth.py``) requires a session or ``Authorization: Bearer`` as on every route: without
either, or with a wrong token, /metrics answers 401 as the API does, and 429 after too many
wrong tokens.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Sequence

from flask import Blueprint, Flask, Response, request
from flask.typing import ResponseReturnValue

from hmonitor.metricfamilies import Family, HostFamilies, exposition
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.state import get_state

__all__ = ["CONTENT_TYPE", "ERROR_KINDS", "MetricsText", "error_kind", "families", "register",
           "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the classic text format, as written

ERROR_KINDS = ("refused", "timeout", "allow_list", "agent", "other")

# The poller keeps a host's error in words only (hmonitor/rpcwords.py describe_rpc_error); these are
# the beginnings of its sentences, in the order tried.
_KIND_BY_START = (
    ("connection refused", "refused"),
    ("no answer within", "timeout"),
    ("cannot connect (connection timed out)", "timeout"),
    ("refused by the agent's allow-list", "allow_list"),
    ("agent: ", "agent"),  # up, but the agent reported a problem of its own (no NVML...)
    ("agent token rejected", "agent"),
    ("the agent's answer is too large", "agent"),
)


def error_kind(error: str) -> str:
    """A host's error (as the poller words it) in one word of ``ERROR_KINDS``."""
    for start, kind in _KIND_BY_START:
        if error.startswith(start):
            return kind
    return "other"


def families(states: Sequence[HostStateLike]) -> list[Family]:
    """Every family of the dashboard's /metrics for the poller's ``states``."""
    up = Family("hmonitor_host_up",
                "1 when the dashboard's last call to the host's agent succeeded, else 0.",
                ["host"])
    rtt = Family("hmonitor_host_poll_duration_seconds",
                 "Round trip of the last good call to the host's agent.", ["host"])
    seen = Family("hmonitor_host_last_seen_timestamp_seconds",
                  "When the host's agent last answered.", ["host"])
    error = Family("hmonitor_host_error",
                   f"1 for a host with an error, by kind: {', '.join(ERROR_KINDS)}.",
                   ["host", "kind"])
    hosts = HostFamilies(dcgm=False, extra_labels=["host"], text=True)
    for h in states:
        up.add_metric([h.name], 1 if h.up else 0)
        if h.rtt_ms is not None:
            rtt.add_metric([h.name], h.rtt_ms / 1000)
        if h.last_seen is not None:
            seen.add_metric([h.name], h.last_seen)
        if h.error:
            error.add_metric([h.name, error_kind(h.error)], 1)
        if h.up and h.info is not None:  # a down host's last snapshot is stale: no series
            hosts.add(h.info, (h.name,))
    return [up, *(f for f in (rtt, seen, error) if f.rows), *hosts.filled()]


def render(states: Sequence[HostStateLike], made_in: float | None = None) -> bytes:
    """The exposition text (Prometheus text format 0.0.4) for ``states``; ``made_in``: how long
    the previous text took to make, in seconds, if known."""
    own = []
    if made_in is not None:
        took = Family("hmonitor_dashboard_metrics_render_seconds",
                      "How long the dashboard took to make the previous text of this page.", [])
        took.add_metric([], made_in)
        own.append(took)
    return exposition([*own, *families(states)]).encode()


class MetricsText:
    """The /metrics text, kept while the poller's states are the same objects (as HostsJson),
    and its gzip.

    Made after each polling round (``prepare``, a round listener) while scrapers come, so a
    scrape takes the finished text instead of waiting the half second 1,000 hosts take; a
    scrape that comes before it is ready waits for it (the lock), one that finds other states
    (none prepared yet, or a late answer since) makes it. Nobody scraping for ``WANTED_FOR``
    seconds: no work after rounds.
    """

    WANTED_FOR = 900.0  # seconds after a scrape: longer than any sensible scrape interval

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: tuple[HostStateLike, ...] | None = None
        self._text = b""
        self._gzipped: bytes | None = None
        self._scraped: float | None = None  # monotonic time of the last scrape
        self._scraped_gzip = False  # whether it took gzip (then make that too)
        self._made_in: float | None = None  # seconds the last text took

    def of(self, states: Sequence[HostStateLike], gzipped: bool = False) -> bytes:
        self._scraped, self._scraped_gzip = time.monotonic(), gzipped
        return self._made(states, gzipped)

    def prepare(self, states: Sequence[HostStateLike], started: float = 0.0) -> None:
        """After a round: make the text (and the gzip, if scrapers take it) if anyone wants it."""
        del started
        if self._scraped is not None and time.monotonic() - self._scraped < self.WANTED_FOR:
            self._made(states, self._scraped_gzip)

    def _made(self, states: Sequence[HostStateLike], gzipped: bool) -> bytes:
        with self._lock:
            if self._states is None or len(states) != len(self._states) or any(
                    a is not b for a, b in zip(states, self._states, strict=True)):
                clock = time.perf_counter()
                self._text, self._gzipped = render(states, self._made_in), None
                self._made_in = time.perf_counter() - clock
                self._states = tuple(states)
            if not gzipped:
                return self._text
            if self._gzipped is None:
                self._gzipped = gzip.compress(self._text, compresslevel=5)
            return self._gzipped


def register(app: Flask) -> None:
    bp = Blueprint("metrics", __name__)
    cache = MetricsText()
    app.extensions["hmonitor_metrics_text"] = cache
    get_state(app).round_listeners.append(cache.prepare)

    @bp.get("/metrics")
    def metrics() -> ResponseReturnValue:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        resp = Response(cache.of(get_state().poller.hosts(), gzipped), content_type=CONTENT_TYPE)
        if gzipped:
            resp.headers["Content-Encoding"] = "gzip"
        resp.vary.add("Accept-Encoding")
        return resp

    app.register_blueprint(bp)
