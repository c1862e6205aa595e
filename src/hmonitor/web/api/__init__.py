"""The JSON API under ``/api/v1`` (docs/api.md): one blueprint, its routes by subject; and the
Prometheus ``/metrics`` (``metrics.py``), on a blueprint of its own.

Authentication, CSRF and the failed-attempt limit are applied to every route by the gate
(``web/auth.py``); every answer here is JSON, errors included.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from hmonitor.web.api import history, hosts, metrics, notes, notify, reports
from hmonitor.web.params import BadParam

__all__ = ["register"]


def register(app: Flask) -> None:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")
    for module in (hosts, notes, history, reports, notify):
        module.add_routes(bp)

    @bp.errorhandler(BadParam)
    def bad_param(err: BadParam) -> ResponseReturnValue:
        return jsonify(error=str(err)), 400

    app.register_blueprint(bp)
    hosts.init_app(app)
    metrics.register(app)  # /metrics, outside /api/v1: where Prometheus looks

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> ResponseReturnValue:
        # Unknown URL, wrong method, bad JSON...: JSON under /api/ like every other answer
        # there. App-wide, as routing errors never reach a blueprint's handlers.
        if not request.path.startswith("/api/"):
            return err
        resp: Response = jsonify(error=err.description or err.name)
        resp.status_code = err.code or 500
        return resp
