"""``/api/v1/notes``, ``/api/v1/notice`` and ``/api/v1/reload``: what admins write."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from hmonitor.web.auth import client_label
from hmonitor.web.notes import NoteError
from hmonitor.web.settings import SettingsError
from hmonitor.web.state import get_state


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


def add_routes(bp: Blueprint) -> None:
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
