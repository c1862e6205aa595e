"""``/api/v1/users`` and ``/api/v1/alerts``: the reports (``web/reports.py``) as JSON."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from hmonitor.web.history import IdleHog
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


def alert_dict(a: Alert) -> dict[str, Any]:
    return {"kind": a.kind, "host": a.host, "message": a.message, "since": a.since, **a.detail}


def add_routes(bp: Blueprint) -> None:
    @bp.get("/users")
    def users() -> ResponseReturnValue:
        report = get_state().users(time.time())
        return jsonify(users=[user_dict(u) for u in report], windows=list(USAGE_WINDOWS))

    @bp.get("/alerts")
    def alerts() -> ResponseReturnValue:
        return jsonify(alerts=[alert_dict(a) for a in get_state().alerts(time.time())])
