"""History, users and alerts in the JSON API (`/api/v1/...`), from the store and the live poller."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import time
from collections.abc import Iterable
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from hmonitor.web import get_state
from hmonitor.web.history import GPU_METRICS, Agg, IdleHog
from hmonitor.web.history_feature import DISK_WARN, USAGE_WINDOWS, Alert, HistoryFeature
from hmonitor.web.hoststate import HostStateLike
from hmonitor.web.owner import owner_label
from hmonitor.web.params import BadParam, choice_param, float_param, int_param, text_param

WINDOWS = {"1h": 3600.0, "24h": 86400.0, "10d": 10 * 86400.0}
UNITS = {"util": "%", "mem": "bytes", "mem_total": "bytes", "temp": "°C", "fan": "%"}


def get_history(app: Flask | None = None) -> HistoryFeature:
    return cast(HistoryFeature, (app or current_app).extensions["hmonitor_history"])


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


def _live_hosts() -> list[HostStateLike]:
    return list(get_state().poller.hosts())


def users_report(now: float) -> list[dict[str, Any]]:
    """Per user: GPUs held now (live), expiry, usage over 1/7/30 days (history), idle hogs."""
    feature = get_history()
    users: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return users.setdefault(
            name,
            {
                "user": name,
                "expiration": 0,
                "gpus_now": [],
                "idle_hogs": [],
                "usage": {k: {"gpu_hours": 0.0, "gpu_mem_gib_hours": 0.0} for k in USAGE_WINDOWS},
            },
        )

    for host in _live_hosts():
        if not host.up or host.info is None:
            continue
        for gpu in host.info.gpus:
            for proc in gpu.procs:
                name = owner_label(proc.username, proc.uid)
                user = entry(name)
                user["gpus_now"].append(
                    {
                        "host": host.name,
                        "gpu": gpu.id,
                        "mem": proc.mem,
                        "pid": proc.pid,
                        "basename": proc.basename,
                    }
                )
                if proc.expiration:
                    user["expiration"] = proc.expiration
    windows = list(USAGE_WINDOWS.values())
    for name, per_window in feature.store.user_usage(now, windows).items():
        user = entry(name)
        for label, seconds in USAGE_WINDOWS.items():
            totals = per_window.get(seconds)
            if totals is not None:
                user["usage"][label] = {
                    "gpu_hours": round(totals.gpu_hours, 3),
                    "gpu_mem_gib_hours": round(totals.gpu_mem_gib_hours, 3),
                }
    for hog in feature.idle_hogs():
        entry(hog.user)["idle_hogs"].append(hog_dict(hog))
    return sorted(users.values(), key=lambda u: (-u["usage"]["7d"]["gpu_hours"], u["user"]))


def hog_dict(hog: IdleHog) -> dict[str, Any]:
    return {**dataclasses.asdict(hog), "idle_seconds": round(hog.idle_seconds)}


def alerts_report() -> list[Alert]:
    alerts: list[Alert] = []
    for host in _live_hosts():
        if not host.up:
            alerts.append(
                Alert(
                    "host_down",
                    host.name,
                    f"{host.name} is down: {host.error}",
                    host.last_seen,
                    {"error": host.error},
                )
            )
            continue
        if host.info is None:
            continue
        for disk in host.info.disks:
            if disk.total and disk.used / disk.total >= DISK_WARN:
                alerts.append(
                    Alert(
                        "disk_full",
                        host.name,
                        f"{host.name}:{disk.mount} is {100 * disk.used / disk.total:.0f}% full "
                        f"({(disk.total - disk.used) / 2**30:.1f} GiB left)",
                        detail={"mount": disk.mount, "used": disk.used, "total": disk.total},
                    )
                )
    for hog in get_history().idle_hogs():
        alerts.append(
            Alert(
                "idle_hog",
                hog.host,
                f"{hog.user} holds {hog.mem / 2**30:.1f} GiB on {hog.host} GPU {hog.gpu} "
                f"({hog.basename}, pid {hog.pid}) idle for {hog.idle_seconds / 3600:.1f} h",
                hog.since,
                hog_dict(hog),
            )
        )
    return alerts


def _make_blueprint() -> Blueprint:
    bp = Blueprint("history_api", __name__, url_prefix="/api/v1")

    @bp.errorhandler(BadParam)
    def bad_request(err: BadParam) -> ResponseReturnValue:
        return jsonify(error=str(err)), 400

    @bp.get("/history")
    def history() -> ResponseReturnValue:
        host, gpu = _gpu_arg()
        args = request.args
        metric = choice_param(args, "metric", "util", GPU_METRICS)
        agg = cast(Agg, choice_param(args, "agg", "avg", ("avg", "max")))
        fmt = choice_param(args, "format", "json", ("json", "csv"))
        since, until = _window()
        points = int_param(args, "points", 1000, 1, 1000)
        t, v = get_history().store.series(host, gpu, metric, since, until, points, agg)
        if fmt == "csv":
            return _csv(
                f"{host}_{gpu}_{metric}.csv",
                ["time", f"{metric} ({UNITS[metric]})"],
                ((f"{a:.0f}", _num(b)) for a, b in zip(t, v, strict=True)),
            )
        return jsonify(
            host=host,
            gpu=gpu,
            metric=metric,
            unit=UNITS[metric],
            agg=agg,
            since=since,
            until=until,
            t=t,
            v=_finite(v),
        )

    @bp.get("/history/processes")
    def process_history() -> ResponseReturnValue:
        host, gpu = _gpu_arg()
        fmt = choice_param(request.args, "format", "json", ("json", "csv"))
        since, until = _window()
        points = int_param(request.args, "points", 300, 1, 1000)
        t, users = get_history().store.process_series(host, gpu, since, until, points)
        if fmt == "csv":
            names = sorted(users)
            return _csv(
                f"{host}_{gpu}_memory_by_user.csv",
                ["time", *(f"{n} (bytes)" for n in names)],
                ([f"{x:.0f}", *(_num(users[n][i]) for n in names)] for i, x in enumerate(t)),
            )
        return jsonify(
            host=host, gpu=gpu, unit="bytes", t=t, users={u: _finite(v) for u, v in users.items()}
        )

    @bp.get("/sparklines")
    def sparklines() -> ResponseReturnValue:
        name = choice_param(request.args, "window", "24h", list(WINDOWS))
        points = int_param(request.args, "points", 60, 2, 200)
        lines = get_history().store.sparklines(WINDOWS[name], time.time(), points)
        return jsonify(
            window=name,
            points=points,
            gpus={
                f"{host}/{gpu}": {"util": _finite(v["util"], 0), "mem": _finite(v["mem"], 3)}
                for (host, gpu), v in lines.items()
            },
        )

    @bp.get("/users")
    def users() -> ResponseReturnValue:
        return jsonify(users=users_report(time.time()), windows=list(USAGE_WINDOWS))

    @bp.get("/alerts")
    def alerts() -> ResponseReturnValue:
        return jsonify(alerts=[a.as_dict() for a in alerts_report()])

    return bp


def init_app(app: Flask) -> None:
    app.register_blueprint(_make_blueprint())
