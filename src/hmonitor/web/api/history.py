"""``/api/v1/history``, ``/history/processes`` and ``/sparklines``: series from the history,
as JSON or CSV. Query parameters are checked by ``params.py``: a bad one is a 400 in words."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Iterable
from typing import cast

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from hmonitor.web.history import GPU_METRICS, Agg
from hmonitor.web.history.windows import SPARK_WINDOWS
from hmonitor.web.params import BadParam, choice_param, float_param, int_param, text_param
from hmonitor.web.state import get_state

WINDOWS = SPARK_WINDOWS  # the named windows: 1h, 24h, 10d
UNITS = {"util": "%", "mem": "bytes", "mem_total": "bytes", "temp": "°C", "fan": "%"}


def _finite(values: Iterable[float], digits: int = 4) -> list[float | None]:
    """JSON-ready: NaN (no data) as null, rounded (digits 0: whole numbers)."""
    if digits == 0:
        return [None if math.isnan(v) else round(v) for v in values]
    return [None if math.isnan(v) else round(v, digits) for v in values]


def _csv(filename: str, header: list[str], rows: Iterable[Iterable[object]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    resp = Response(out.getvalue(), mimetype="text/csv")
    # Host names come from settings.py and the URL: only plain characters reach the header, and
    # werkzeug quotes it, so no name can close the quotes and forge a second filename=.
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "history.csv"
    resp.headers.set("Content-Disposition", "attachment", filename=safe)
    return resp


def _num(value: float) -> str:
    """A CSV cell: empty for no data, otherwise exact to 3 decimals (bytes stay whole)."""
    if math.isnan(value):
        return ""
    return f"{value:.3f}".rstrip("0").rstrip(".")


# Times as Unix seconds up to the year 4000; a window up to 100 years.
MAX_TIME = 64_060_588_800.0
MAX_WINDOW = 100 * 365.25 * 86400
MAX_GPU = 2**31 - 1  # GPUInfo.id is an int32


def _window() -> tuple[float, float]:
    """`since`/`until` (Unix seconds) or `window` (1h, 24h, 10d or seconds); default 24 h."""
    args = request.args
    until = float_param(args, "until", time.time(), 0.0, MAX_TIME)
    if args.get("since"):
        since = float_param(args, "since", 0.0, 0.0, MAX_TIME)
    else:
        name = args.get("window") or "24h"
        seconds = WINDOWS.get(name)
        if seconds is None:
            try:
                seconds = float_param(args, "window", 0.0, 1.0, MAX_WINDOW)
            except BadParam:
                raise BadParam(f"window must be {', '.join(WINDOWS)} or a number of seconds "
                               f"from 1 to {MAX_WINDOW:.0f}") from None
        since = max(0.0, until - seconds)
    if since >= until:
        raise BadParam("since must be before until")
    return since, until


def _gpu_arg() -> tuple[str, int]:
    host = text_param(request.args, "host", required=True)
    if not request.args.get("gpu"):
        raise BadParam("gpu (an index) is required")
    return host, int_param(request.args, "gpu", 0, 0, MAX_GPU)



def add_routes(bp: Blueprint) -> None:
    @bp.get("/history")
    def history() -> ResponseReturnValue:
        host, gpu = _gpu_arg()
        args = request.args
        metric = choice_param(args, "metric", "util", GPU_METRICS)
        agg = cast(Agg, choice_param(args, "agg", "avg", ("avg", "max")))
        fmt = choice_param(args, "format", "json", ("json", "csv"))
        since, until = _window()
        points = int_param(args, "points", 1000, 1, 1000)
        t, v = get_state().backend.series(host, gpu, metric, since, until, points, agg)
        if fmt == "csv":
            return _csv(
                f"{host}_{gpu}_{metric}.csv",
                ["time", f"{metric} ({UNITS[metric]})"],
                ((f"{a:.0f}", _num(b)) for a, b in zip(t, v, strict=True)),
            )
        return jsonify(host=host, gpu=gpu, metric=metric, unit=UNITS[metric], agg=agg,
                       since=since, until=until, t=t, v=_finite(v))

    @bp.get("/history/processes")
    def process_history() -> ResponseReturnValue:
        host, gpu = _gpu_arg()
        fmt = choice_param(request.args, "format", "json", ("json", "csv"))
        since, until = _window()
        points = int_param(request.args, "points", 300, 1, 1000)
        t, users = get_state().backend.process_series(host, gpu, since, until, points)
        if fmt == "csv":
            names = sorted(users)
            return _csv(
                f"{host}_{gpu}_memory_by_user.csv",
                ["time", *(f"{n} (bytes)" for n in names)],
                ([f"{x:.0f}", *(_num(users[n][i]) for n in names)] for i, x in enumerate(t)),
            )
        return jsonify(host=host, gpu=gpu, unit="bytes", t=t,
                       users={u: _finite(v) for u, v in users.items()})

    @bp.get("/sparklines")
    def sparklines() -> ResponseReturnValue:
        name = choice_param(request.args, "window", "24h", list(WINDOWS))
        points = int_param(request.args, "points", 60, 2, 200)
        # Optional: only these hosts (the page asks for the panels on screen).
        hosts = [text_param({"host": h}, "host") for h in request.args.getlist("host")] or None
        lines = get_state().backend.sparklines(WINDOWS[name], time.time(), points, hosts)
        return jsonify(
            window=name,
            points=points,
            gpus={
                f"{host}/{gpu}": {"util": _finite(v["util"], 0), "mem": _finite(v["mem"], 3)}
                for (host, gpu), v in lines.items()
            },
        )
