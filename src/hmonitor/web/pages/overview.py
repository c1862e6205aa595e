"""The overview: every host at a glance, kept live.

``/`` renders the page with the units of the live view (``live.py``): host panels for a few
hosts, the cluster map for many. ``/live`` answers a refresh with the units changed since the
browser's last one, as JSON of server-rendered HTML; ``static/live.js`` swaps them in. The page
works without JavaScript (it is the same HTML, refreshed by reloading).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from hmonitor.web.history.windows import DEFAULT_SPARK_WINDOW, SPARK_WINDOWS
from hmonitor.web.notes import Note
from hmonitor.web.pages.display import clock
from hmonitor.web.pages.live import LiveAnswer, LiveView, Overview
from hmonitor.web.pages.views import Filters
from hmonitor.web.state import get_state

REFRESH_S = 5  # how often the page asks for changes


def live_view(app: Flask | None = None) -> LiveView:
    view: LiveView = (app or current_app).extensions["hmonitor_live"]
    return view


def _overview() -> Overview:
    state = get_state()
    now = time.time()
    notes: dict[str, list[Note]] = {}
    for n in state.notes.notes():
        notes.setdefault(n.host, []).append(n)
    return Overview(hosts=state.poller.hosts(), notes=notes, hogs=state.idle_hogs(now),
                    alerts=state.alerts(now), now=now)


def _answer(filters: Filters, since: str) -> LiveAnswer:
    return live_view().refresh(filters, since, _overview)


def add_routes(bp: Blueprint) -> None:
    @bp.get("/")
    def overview() -> ResponseReturnValue:
        filters = Filters.from_args(request.args)
        answer = _answer(filters, "")
        window = request.args.get("window", "")
        return render_template(
            "overview.html",
            filters=filters,
            answer=answer,
            units=[Markup(answer.units[k]) for k in answer.order or ()],
            summary=Markup(answer.summary or ""),
            alerts=Markup(answer.alerts or ""),
            as_of=clock(time.time()),
            refresh_s=REFRESH_S,
            panels_up_to=live_view().panels_up_to,
            spark_windows=SPARK_WINDOWS,
            spark_window=window if window in SPARK_WINDOWS else DEFAULT_SPARK_WINDOW,
        )

    @bp.get("/live")
    def live() -> ResponseReturnValue:
        filters = Filters.from_args(request.args)
        answer = _answer(filters, request.args.get("since", ""))
        body: dict[str, Any] = {"token": answer.token, "mode": answer.mode,
                                "units": answer.units, "total": answer.total,
                                "as_of": clock(time.time()),
                                "notice": get_state().notes.notice().text}
        if answer.order is not None:
            body["order"] = answer.order
        if answer.summary is not None:
            body["summary"] = answer.summary
        if answer.alerts is not None:
            body["alerts"] = answer.alerts
        return jsonify(body)


def init_app(app: Flask) -> None:
    app.extensions["hmonitor_live"] = LiveView()
