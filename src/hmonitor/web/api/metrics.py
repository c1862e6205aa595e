"""``GET /metrics``: the dashboard's Prometheus exposition (docs/prometheus.md).

Per host (``host`` = its name in settings.py): ``hmonitor_host_up``, the last good call's round
trip, when it was last seen, and for a host with an error ``hmonitor_host_error{kind}`` = 1; then,
for labs that scrape only the dashboard, every up host's GPU, user and disk families from the
poller's last snapshot (``hmonitor.metricfamilies``), each series with a ``host`` label. No DCGM
family: its ``hostname`` and the target's labels would clash, and Grafana 12239 expects one
target per host; scrape the agents for it.

The text is made once per polling round, however many Prometheus servers scrape in between (at
1,000 hosts x 8 GPUs x 4 processes it is ~12 MB and about half a second of work), and gzipped
once too when a scraper accepts it (Prometheus does: ~0.5 MB on the wire). The gate
(``web/auth.py``) requires a session or ``Authorization: Bearer`` as on every route: without
either, or with a wrong token, /metrics answers 401 as the API does, and 429 after too many
wrong tokens.
"""

from __future__ import annotations

import gzip
import threading
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

# The poller keeps a host's error in words only (web/channels.py describe_rpc_error); these are
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


def render(states: Sequence[HostStateLike]) -> bytes:
    """The exposition text (Prometheus text format 0.0.4) for ``states``."""
    return exposition(families(states)).encode()


class MetricsText:
    """The /metrics text, kept while the poller's states are the same objects (as HostsJson),
    and its gzip, made the first time a scraper asks for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: tuple[HostStateLike, ...] | None = None
        self._text = b""
        self._gzipped: bytes | None = None

    def of(self, states: Sequence[HostStateLike], gzipped: bool = False) -> bytes:
        with self._lock:
            if self._states is None or len(states) != len(self._states) or any(
                    a is not b for a, b in zip(states, self._states, strict=True)):
                self._text, self._gzipped = render(states), None
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

    @bp.get("/metrics")
    def metrics() -> ResponseReturnValue:
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        resp = Response(cache.of(get_state().poller.hosts(), gzipped), content_type=CONTENT_TYPE)
        if gzipped:
            resp.headers["Content-Encoding"] = "gzip"
        resp.vary.add("Accept-Encoding")
        return resp

    app.register_blueprint(bp)
