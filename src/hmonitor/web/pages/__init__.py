"""The HTML pages: one blueprint, its routes by page (overview, hosts, users, notes).

Pages read the domain (state, reports, history) and render with ``display.py`` (texts),
``views.py`` (view models) and ``markup.py`` (the overview's fragments); they never import the
API.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, jsonify, render_template
from flask.typing import ResponseReturnValue

from hmonitor.web.auth import is_api_request
from hmonitor.web.notes import WriteFailed
from hmonitor.web.pages import alerts, hosts, notes, overview, users
from hmonitor.web.pages.display import hours
from hmonitor.web.rules import DISK_WARN_PCT, FREE_MEM_PCT, FREE_UTIL_PCT
from hmonitor.web.state import get_state

__all__ = ["register"]


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _write_failed(err: WriteFailed) -> ResponseReturnValue:
    """A save the disk refused (full, read-only): 507 with the one-line reason, page or API."""
    if is_api_request():
        return jsonify(error=f"not saved: {err}"), 507
    return render_template("error.html", title="Not saved", message=f"Nothing was changed: "
                           f"{err}. Pages keep working; try again once this is fixed."), 507


def register(app: Flask) -> None:
    bp = Blueprint("pages", __name__)
    for module in (overview, hosts, users, notes, alerts):
        module.add_routes(bp)

    @bp.app_context_processor
    def common() -> dict[str, Any]:
        return {"notice": get_state().notes.notice(), "free_util": FREE_UTIL_PCT,
                "free_mem": FREE_MEM_PCT, "disk_warn": DISK_WARN_PCT}

    app.register_blueprint(bp)
    overview.init_app(app)
    app.register_error_handler(WriteFailed, _write_failed)
    app.add_template_filter(_when, "when")
    app.add_template_global(hours)
