"""``/api/v1/users``, ``/api/v1/jobs`` and ``/api/v1/alerts``: the reports as JSON."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from hmonitor.web.history import IdleHog, JobUsage
from hmonitor.web.params import choice_param
from hmonitor.web.reports import USAGE_WINDOWS, Alert, UserReport
from hmonitor.web.state import get_state


def hog_dict(hog: IdleHog) -> dict[str, Any]:
    return {**dataclasses.asdict(hog), "idle_seconds": round(hog.idle_seconds)}


def user_dict(u: UserReport) -> dict[str, Any]:
    return {
        "user": u.user,
        "expiration": u.expiration,
        "gpus_now": [dataclasses.asdict(g) for g in u.gpus_now],
        "idle_hogs": [hog_dict(h) for h in u.idle_hogs],
        "usage": {w: {"gpu_hours": round(t.gpu_hours, 3),
                      "gpu_mem_gib_hours": round(t.gpu_mem_gib_hours, 3)}
                  for w, t in u.usage.items()},
    }


def job_dict(j: JobUsage) -> dict[str, Any]:
    return {"job": j.job, "user": j.user, "gpu_hours": round(j.gpu_hours, 3),
            "gpu_mem_gib_hours": round(j.gpu_mem_gib_hours, 3), "first_seen": j.first_seen,
            "last_seen": j.last_seen, "hosts": list(j.hosts)}


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"kind": a.kind, "host": a.host, "message": a.message, "since": a.since, **a.detail}


def add_routes(bp: Blueprint) -> None:
    @bp.get("/users")
    def users() -> ResponseReturnValue:
        report = get_state().users(time.time())
        return jsonify(users=[user_dict(u) for u in report], windows=list(USAGE_WINDOWS))

    @bp.get("/jobs")
    def jobs() -> ResponseReturnValue:
        window = choice_param(request.args, "window", "7d", list(USAGE_WINDOWS))
        report = get_state().backend.job_usage(time.time(), USAGE_WINDOWS[window])
        return jsonify(jobs=[job_dict(j) for j in report], window=window)

    @bp.get("/alerts")
    def alerts() -> ResponseReturnValue:
        return jsonify(alerts=[alert_dict(a) for a in get_state().alerts(time.time())])
