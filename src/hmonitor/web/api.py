"""The JSON API under ``/api/v1`` (documented in docs/api.md).

Authentication, CSRF and the limit on failed attempts are applied to every route by ``auth``'s
gate; every answer here is JSON, errors included.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from hmonitor.web import get_state
from hmonitor.web.auth import client_label
from hmonitor.web.jsonview import host_state_to_dict
from hmonitor.web.notes import NoteError
from hmonitor.web.settings import SettingsError


def _error(status: int, message: str) -> ResponseReturnValue:
    return jsonify(error=message), status


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _field(body: dict[str, Any], name: str) -> str:
    value = body.get(name, request.args.get(name, ""))
    if not isinstance(value, str):
        raise NoteError(f"{name} must be a string")
    return value


def _make_blueprint() -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")

    @bp.get("/hosts")
    def hosts() -> ResponseReturnValue:
        states = get_state().poller.hosts()
        return jsonify(hosts=[host_state_to_dict(h) for h in states], generated_at=time.time())

    @bp.get("/hosts/<path:name>")
    def host(name: str) -> ResponseReturnValue:
        h = get_state().poller.host(name)
        if h is None:
            return _error(404, f"unknown host {name!r}")
        return jsonify(host_state_to_dict(h))

    @bp.get("/notes")
    def notes() -> ResponseReturnValue:
        host = request.args.get("host") or None
        return jsonify(notes=[n.as_dict() for n in get_state().notes.notes(host=host)])

    @bp.post("/notes")
    def put_note() -> ResponseReturnValue:
        body = _json_body()
        try:
            note = get_state().notes.put(
                _field(body, "user"), _field(body, "host"), _field(body, "note"),
                by=client_label(),
            )
        except NoteError as err:
            return _error(400, str(err))
        return jsonify(note.as_dict())

    @bp.delete("/notes")
    def delete_note() -> ResponseReturnValue:
        body = _json_body()
        try:
            user, host = _field(body, "user"), _field(body, "host")
        except NoteError as err:
            return _error(400, str(err))
        if not user.strip() or not host.strip():
            return _error(400, "user and host are required")
        if not get_state().notes.delete(user, host):
            return _error(404, f"no note for {user}@{host}")
        return jsonify(deleted={"user": user.strip(), "host": host.strip()})

    @bp.get("/notice")
    def notice() -> ResponseReturnValue:
        return jsonify(get_state().notes.notice().as_dict())

    @bp.put("/notice")
    def put_notice() -> ResponseReturnValue:
        body = _json_body()
        text = body.get("notice")
        if not isinstance(text, str):
            return _error(400, 'expected JSON {"notice": "..."}')
        try:
            saved = get_state().notes.set_notice(text, by=client_label())
        except NoteError as err:
            return _error(400, str(err))
        return jsonify(saved.as_dict())

    @bp.post("/reload")
    def reload() -> ResponseReturnValue:
        try:
            result = get_state().reload_servers()
        except SettingsError as err:
            return _error(400, str(err))
        return jsonify(result.as_dict())

    return bp


def init_app(app: Flask) -> None:
    app.register_blueprint(_make_blueprint())

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> ResponseReturnValue:
        # Unknown URL, wrong method, bad JSON...: JSON under /api/ like every other answer
        # there. App-wide, as routing errors never reach a blueprint's handlers.
        if not request.path.startswith("/api/"):
            return err
        resp: Response = jsonify(error=err.description or err.name)
        resp.status_code = err.code or 500
        return resp
